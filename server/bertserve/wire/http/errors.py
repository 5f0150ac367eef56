"""gRPC statuses as HTTP replies: the google.rpc.Code to HTTP table and the `google.rpc.Status` JSON body.

A failed call's rich status comes from its ``grpc-status-details-bin``
trailer (or just its code and message when it has none) and goes out as the
JSON of `google.rpc.Status`, details included (``ErrorInfo``, ``BadRequest``,
``RetryInfo``), with ``Retry-After`` when the status carries a retry delay.
Errors of the HTTP layer itself (bad JSON, unknown route, body too large) use
the same body, with domain ``bertserve`` and their own reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import grpc
from aiohttp import web
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from bertserve.wire.status import ERROR_DOMAIN

# The mapping of google/rpc/code.proto (and grpc-gateway): every gRPC code's HTTP status.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

DETAILS_KEY = "grpc-status-details-bin"
_BY_NUMBER = {int(getattr(code_pb2, code.name)): code for code in grpc.StatusCode}


def code_number(code: grpc.StatusCode) -> int:
    return int(getattr(code_pb2, code.name))


def status_from_call(
    code: grpc.StatusCode | None, message: str | None, trailers: Sequence[tuple[str, str | bytes]] | None
) -> status_pb2.Status:
    """The `google.rpc.Status` of a failed call: its details trailer, else its code and message."""
    for key, value in trailers or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # noqa: BLE001 - a broken trailer still leaves the code and message
                break
            return status
    return status_pb2.Status(code=code_number(code or grpc.StatusCode.UNKNOWN), message=message or "")


def local_status(
    code: grpc.StatusCode, message: str, reason: str, metadata: Mapping[str, str] | None = None
) -> status_pb2.Status:
    """A status made by the HTTP layer itself, with an ``ErrorInfo`` of domain ``bertserve``."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=dict(metadata or {})))
    return status_pb2.Status(code=code_number(code), message=message, details=[info])


def retry_after(status: status_pb2.Status) -> int | None:
    """Whole seconds of the status's ``RetryInfo`` delay, rounded up (at least 1), or None."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(1, math.ceil(info.retry_delay.ToNanoseconds() / 1e9))
    return None


def error_response(
    status: status_pb2.Status, request_id: str, *, http_status: int | None = None, oip: bool = False
) -> web.Response:
    """The HTTP reply for `status`: its mapped HTTP status, the Status JSON, Retry-After, x-request-id.

    `oip`: an Open Inference Protocol route, whose errors also carry the protocol's ``"error"`` string.
    """
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    headers = {"x-request-id": request_id} if request_id else {}
    delay = retry_after(status)
    if delay is not None:
        headers["Retry-After"] = str(delay)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    content = json_format.MessageToDict(status, always_print_fields_with_no_presence=True)
    if oip:
        content["error"] = status.message
    body = json.dumps(content)
    return web.Response(
        status=http_status or HTTP_STATUS.get(code, 500),
        text=body,
        content_type="application/json",
        headers=headers,
    )
