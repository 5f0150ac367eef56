"""Exceptions raised by the bertserve clients.

Every failed RPC surfaces as a :class:`BertServeError` subclass chosen by the
gRPC status code. The server attaches a ``google.rpc.Status`` (AIP-193) in the
``grpc-status-details-bin`` trailer; its ``ErrorInfo``, ``BadRequest`` and
``RetryInfo`` details are decoded onto the exception, so callers can branch
on ``reason``, show ``field_violations`` and wait ``retry_delay`` without
touching protobuf. :class:`HeadOutputError` is the one error that is not
raised: Analyze returns it in place of the output of a head that failed on
one input.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]

from .v1 import inference_pb2

__all__ = [
    "BertServeError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "HeadOutputError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_rpc",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field, from a ``google.rpc.BadRequest`` detail.

    Attributes:
        field: Path of the offending field (e.g. ``"texts[2]"``).
        description: Why it was rejected.
    """

    field: str
    description: str


class BertServeError(Exception):
    """Base class of every error raised by the bertserve clients.

    Attributes:
        code: The gRPC status code.
        message: The server's human-readable message.
        reason: ``google.rpc.ErrorInfo.reason`` (UPPER_SNAKE), when sent.
        domain: ``google.rpc.ErrorInfo.domain`` (``"bertserve"``), when sent.
        metadata: ``google.rpc.ErrorInfo.metadata``; empty when not sent.
        field_violations: ``google.rpc.BadRequest`` field violations, if any.
        retry_delay: ``google.rpc.RetryInfo.retry_delay`` in seconds: how long
            the server asks to wait before retrying (e.g. with
            RESOURCE_EXHAUSTED); None when not sent.
        unanswered: For a failed ``predict_stream``: the ids of the inputs
            sent that got no result, in the order sent (an id twice when two
            such inputs share it); empty otherwise.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.retry_delay: float | None = retry_delay
        self.unanswered: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        for violation in self.field_violations:
            text += f"\n  {violation.field}: {violation.description}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, reason={self.reason!r})"


class InvalidArgumentError(BertServeError):
    """The request was rejected as bad input (INVALID_ARGUMENT or OUT_OF_RANGE)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(BertServeError):
    """Something named in the request does not exist, e.g. an unknown head (NOT_FOUND)."""

    default_code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(BertServeError):
    """The server is not in a state to run the request (FAILED_PRECONDITION)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(BertServeError):
    """The server's queue or a size limit is full (RESOURCE_EXHAUSTED); retry later."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(BertServeError):
    """The server cannot be reached, or is loading or draining (UNAVAILABLE)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(BertServeError):
    """The request's deadline passed before it completed (DEADLINE_EXCEEDED)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class RequestCancelledError(BertServeError):
    """The request was cancelled (CANCELLED)."""

    default_code = grpc.StatusCode.CANCELLED


class UnauthenticatedError(BertServeError):
    """The call carried no valid bearer token (UNAUTHENTICATED); pass ``token=`` to the client."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(BertServeError):
    """The token is valid but may not call this method (PERMISSION_DENIED)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(BertServeError):
    """A server bug or an unexpected failure (INTERNAL, UNKNOWN, DATA_LOSS and other codes)."""

    default_code = grpc.StatusCode.INTERNAL


class HeadOutputError(BertServeError):
    """Why one head gave no output for one input of Analyze, in place of that output.

    :meth:`~bertserve_client.BertServeClient.analyze` does not raise it: it
    puts it in the input's ``{head: output}`` dict where the head's output
    would be, and the other heads and inputs are answered as usual. Tell the
    two apart with ``isinstance(output, HeadOutputError)``; ``raise`` it to
    fail the way the whole call would have.

    Attributes:
        head: The head that failed.
        code: The status code this failure would have as a call's status:
            INVALID_ARGUMENT for input this head refuses, INTERNAL for a
            failure inside the head.
        message: What went wrong, naming the head.
        reason: UPPER_SNAKE reason (e.g. ``"HEAD_FAILED"``), when sent.
        field: The request field at fault (e.g. ``"inputs[2]"``), when one is.
    """

    def __init__(
        self,
        message: str,
        *,
        head: str,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        self.head = head
        self.field = field

    @classmethod
    def from_proto(cls, head: str, error: inference_pb2.HeadError) -> HeadOutputError:
        """Build from the ``bertserve.v1.HeadError`` of head ``head``'s ``HeadOutput``."""
        code = _CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
        message = error.message or f"head {head!r} failed with {code.name}"
        return cls(message, head=head, code=code, reason=error.reason or None, field=error.field or None)

    def __str__(self) -> str:
        return super().__str__() + (f" (field {self.field})" if self.field else "")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(head={self.head!r}, code={self.code.name}, message={self.message!r}, "
            f"reason={self.reason!r}, field={self.field!r})"
        )

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Results travel between processes: keep every attribute when pickled.
        rebuild = functools.partial(type(self), head=self.head, code=self.code, reason=self.reason, field=self.field)
        return rebuild, (self.message,)


# google.rpc.Code numbers (HeadError.code) are the numbers of grpc's status codes;
# OK (0) is no failure's code, so it reads as UNKNOWN.
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {
    code.value[0]: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK
}

_CLASS_BY_CODE: dict[grpc.StatusCode, type[BertServeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: RequestCancelledError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def error_from_rpc(err: grpc.RpcError) -> BertServeError:
    """Convert a failed RPC into the matching :class:`BertServeError`.

    Works for sync ``grpc.RpcError`` calls and ``grpc.aio.AioRpcError``. The
    rich ``google.rpc.Status`` in the trailing metadata, when present and
    well formed, supplies ``reason``, ``domain``, ``metadata``,
    ``field_violations`` and ``retry_delay``. ``err`` becomes the returned
    exception's ``__cause__``.
    """
    code = _call(err, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = _call(err, "details") or ""
    status = _rich_status(_call(err, "trailing_metadata"))

    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    if status is not None:
        message = message or status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain = info.reason or None, info.domain or None
                metadata.update(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry_info = error_details_pb2.RetryInfo()
                detail.Unpack(retry_info)
                retry_delay = retry_info.retry_delay.ToNanoseconds() / 1e9
    if not message:
        message = f"RPC failed with {code.name}"

    error = _CLASS_BY_CODE.get(code, InternalError)(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
    )
    error.__cause__ = err
    return error


def _call(err: grpc.RpcError, method: str) -> Any:
    # A bare grpc.RpcError (e.g. raised by an interceptor) need not be a grpc.Call.
    getter = getattr(err, method, None)
    return getter() if callable(getter) else None


def _rich_status(trailing_metadata: Any) -> status_pb2.Status | None:
    # Sync calls give a tuple of (key, value) pairs, aio calls a grpc.aio.Metadata;
    # both iterate as pairs.
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None
