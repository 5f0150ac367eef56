"""The one mapping from bertserve errors to gRPC statuses with `google.rpc` details.

Every interceptor, authentication and the Analyze servicer turn errors into
statuses here and nowhere else: the code each error class has, the rich
`google.rpc.Status` (ErrorInfo, BadRequest, RetryInfo) and the plain trailers.

A status is sent as trailers, which gRPC clients refuse past 8 KiB (by
default; 16 KiB at most) with RESOURCE_EXHAUSTED in place of the real status.
Errors quote requests (a head's name, each bad input), so the message, the
metadata values and the field violations are cut to fit (`MAX_MESSAGE_BYTES`,
...): the message goes out twice, percent-encoded and inside the details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from bertserve.plugin.errors import (
    BertServeError,
    DeadlineExceeded,
    HeadFailed,
    HeadNotFound,
    HeadNotLoaded,
    InvalidArgument,
    NotServing,
    PermissionDenied,
    QueueFull,
    Unauthenticated,
)

ERROR_DOMAIN = "bertserve"
MAX_MESSAGE_BYTES = 512
MAX_VALUE_BYTES = 128  # an ErrorInfo metadata value, a violation's field path
MAX_DESCRIPTION_BYTES = 160  # a violation's description
MAX_VIOLATIONS = 5

STATUS_CODES: dict[type[BertServeError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    HeadNotFound: grpc.StatusCode.NOT_FOUND,
    HeadNotLoaded: grpc.StatusCode.FAILED_PRECONDITION,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotServing: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    HeadFailed: grpc.StatusCode.INTERNAL,
    BertServeError: grpc.StatusCode.INTERNAL,
}

_CODE_NUMBERS = {code: getattr(code_pb2, code.name) for code in grpc.StatusCode}


def status_code(error: BertServeError) -> grpc.StatusCode:
    """The gRPC code of `error`: that of its nearest class in `STATUS_CODES`."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def code_number(error: BertServeError) -> int:
    """The google.rpc.Code number of `error`'s status (e.g. 3 for INVALID_ARGUMENT)."""
    return int(_CODE_NUMBERS[status_code(error)])


def retry_trailers(error: BertServeError) -> tuple[tuple[str, str], ...]:
    """Plain trailers sent besides the status details.

    A retry delay also goes out as ``grpc-retry-pushback-ms``, the trailer
    gRPC's own retry policy (service config) honours.
    """
    if error.retry_delay is None:
        return ()
    return (("grpc-retry-pushback-ms", str(max(0, round(error.retry_delay * 1000)))),)


def to_status(error: BertServeError, extra_trailers: Sequence[tuple[str, str]] = ()) -> grpc.Status:
    """The rich `grpc.Status` (with `google.rpc` details) for `error`, plus `extra_trailers`; cut to fit."""
    metadata = {key: cut(value, MAX_VALUE_BYTES) for key, value in error.metadata.items()}
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    message = cut(error.message, MAX_MESSAGE_BYTES)
    if error.field_violations:
        violations = error.field_violations[:MAX_VIOLATIONS]
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=cut(v.field, MAX_VALUE_BYTES), description=cut(v.description, MAX_DESCRIPTION_BYTES)
                )
                for v in violations
            ]
        )
        details.append(_pack(bad_request))
        if len(error.field_violations) > len(violations):
            message += (
                f" ({len(error.field_violations)} field violations; the details hold the first {len(violations)})"
            )
    if error.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_delay * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code_number(error), message=message, details=details)
    rich = rpc_status.to_status(status)
    return _Status(rich.code, rich.details, (*rich.trailing_metadata, *retry_trailers(error), *extra_trailers))


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def cut(text: str, limit: int) -> str:
    """`text` cut to at most about `limit` UTF-8 bytes, saying how much was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return f"{data[:limit].decode('utf-8', errors='ignore')}... ({len(data) - limit} more bytes)"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
