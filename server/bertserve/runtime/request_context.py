"""What the server knows about the request being handled, for logs, metrics, response timings and traces."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from bertserve.runtime.timing import RequestTimings


@dataclass
class RequestContext:
    """One RPC: its id (from ``x-request-id`` metadata, or made) and the heads it ran.

    The request interceptor creates it; the runtime adds each head it
    resolves and records where its time went (`timings`); `trace_id` is set
    when tracing is on.
    """

    request_id: str
    method: str
    heads: list[str] = field(default_factory=list)
    timings: RequestTimings = field(default_factory=RequestTimings)
    trace_id: str = ""

    def add_head(self, name: str) -> None:
        if name not in self.heads:
            self.heads.append(name)

    @property
    def head_label(self) -> str:
        """The heads for a metric label: one name, or several joined by ``+`` (Analyze)."""
        return "+".join(sorted(self.heads))


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("bertserve_request", default=None)


def current_request() -> RequestContext | None:
    """The request being handled on this task, or None outside an RPC."""
    return _current.get()


def set_current_request(context: RequestContext | None) -> contextvars.Token[RequestContext | None]:
    return _current.set(context)


def reset_current_request(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)
