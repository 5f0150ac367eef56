"""The one mapping from bertserve errors to gRPC statuses with `google.rpc` details.

Every interceptor, authentication and the Analyze servicer turn errors into
statuses here and nowhere else: the code each error class has, the rich
`google.rpc.Status` (ErrorInfo, BadRequest, RetryInfo) and the plain trailers.
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
    """The rich `grpc.Status` (with `google.rpc` details) for `error`, plus `extra_trailers`."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))]
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.field_violations
            ]
        )
        details.append(_pack(bad_request))
    if error.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_delay * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code_number(error), message=error.message, details=details)
    rich = rpc_status.to_status(status)
    return _Status(rich.code, rich.details, (*rich.trailing_metadata, *retry_trailers(error), *extra_trailers))


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
