"""The server's exception hierarchy and its mapping to gRPC statuses.

Every error a client can see is a `BertServeError`: it carries the gRPC code,
an actionable message, an UPPER_SNAKE `reason` for `google.rpc.ErrorInfo` and,
for bad input, `BadRequest` field violations (Google AIP-193).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "bertserve"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``texts[2]``) and what is wrong."""

    field: str
    description: str


class BertServeError(Exception):
    """Base of all errors sent to clients; subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_delay = retry_delay

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Plain trailers sent besides the status details.

        A retry delay also goes out as ``grpc-retry-pushback-ms``, the trailer
        gRPC's own retry policy (service config) honours.
        """
        if self.retry_delay is None:
            return ()
        return (("grpc-retry-pushback-ms", str(max(0, round(self.retry_delay * 1000)))),)

    def to_status(self, extra_trailers: Sequence[tuple[str, str]] = ()) -> grpc.Status:
        """The rich `grpc.Status` (with `google.rpc` details) for this error, plus `extra_trailers`."""
        details = [_pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata))]
        if self.field_violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.field_violations
                ]
            )
            details.append(_pack(bad_request))
        if self.retry_delay is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_delay * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=_CODE_NUMBERS[self.code], message=self.message, details=details)
        rich = rpc_status.to_status(status)
        return _Status(rich.code, rich.details, (*rich.trailing_metadata, *self.trailing_metadata(), *extra_trailers))


class InvalidArgument(BertServeError):
    """The request is malformed: empty text, missing mask, value out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class HeadNotFound(BertServeError):
    """No head of that name is registered."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "HEAD_NOT_FOUND"


class HeadNotLoaded(BertServeError):
    """The head is registered but not serving (no weights, or loading failed)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "HEAD_NOT_LOADED"


class QueueFull(BertServeError):
    """The batch queue is at capacity; retry with backoff."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "QUEUE_FULL"


class Unauthenticated(BertServeError):
    """The call carries no valid bearer token (or none at all)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(BertServeError):
    """The caller is authenticated but may not call this method."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotServing(BertServeError):
    """The server is still loading or is shutting down."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "NOT_SERVING"


class DeadlineExceeded(BertServeError):
    """The request's deadline passed before the encoder reached it."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class HeadFailed(BertServeError):
    """A head raised while computing; a bug in that head, reported as INTERNAL."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "HEAD_FAILED"


class InputError(ValueError):
    """Raised by a head's `preprocess` for one bad input.

    `field` names the offending sub-field of the input (e.g. ``"question"``) or
    is None when the input as a whole is bad; the server turns it into an
    INVALID_ARGUMENT with a field path such as ``inputs[3].question``.
    """

    def __init__(self, description: str, *, field: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.field = field


class HeadUnavailable(Exception):
    """Raised by `Head.load` when the head cannot serve, with the reason why.

    The head is listed as UNAVAILABLE with this message; other heads load on.
    """


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODE_NUMBERS = {code: getattr(code_pb2, code.name) for code in grpc.StatusCode}


def code_number(error: BertServeError) -> int:
    """The google.rpc.Code number of `error`'s status (e.g. 3 for INVALID_ARGUMENT)."""
    return int(_CODE_NUMBERS[error.code])
