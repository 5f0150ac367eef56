"""The exceptions a plugin may raise, and the server's errors that clients see.

Every error a client can see is a `BertServeError`: an actionable message, an
UPPER_SNAKE `reason` for `google.rpc.ErrorInfo` and, for bad input,
`BadRequest` field violations (Google AIP-193). Which gRPC status each class
becomes is decided in one place, `bertserve.wire.status`. A head raises
`InputError` from `preprocess` and `HeadUnavailable` from `load`; a plugin's
servicer may raise any `BertServeError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``texts[2]``) and what is wrong."""

    field: str
    description: str


class BertServeError(Exception):
    """Base of all errors sent to clients; each subclass has its own status (`bertserve.wire.status`)."""

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


class InvalidArgument(BertServeError):
    """The request is malformed: empty text, missing mask, value out of range."""

    default_reason = "INVALID_ARGUMENT"


class HeadNotFound(BertServeError):
    """No head of that name is registered."""

    default_reason = "HEAD_NOT_FOUND"


class HeadNotLoaded(BertServeError):
    """The head is registered but not serving (no weights, or loading failed)."""

    default_reason = "HEAD_NOT_LOADED"


class QueueFull(BertServeError):
    """The batch queue is at capacity; retry with backoff."""

    default_reason = "QUEUE_FULL"


class Unauthenticated(BertServeError):
    """The call carries no valid bearer token (or none at all)."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(BertServeError):
    """The caller is authenticated but may not call this method."""

    default_reason = "PERMISSION_DENIED"


class NotServing(BertServeError):
    """The server is still loading or is shutting down."""

    default_reason = "NOT_SERVING"


class DeadlineExceeded(BertServeError):
    """The request's deadline passed before the encoder reached it."""

    default_reason = "DEADLINE_EXCEEDED"


class HeadFailed(BertServeError):
    """A head raised while computing; a bug in that head, reported as INTERNAL."""

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
