"""Admission control: how many requests are in progress, the limit, and draining.

Every bertserve RPC (not health) passes `Admission.admit()` before any work.
Over `max_concurrent_requests` a request is refused at once with
RESOURCE_EXHAUSTED and a retry delay; while the server loads or drains it is
refused with UNAVAILABLE, so clients retry on another replica. Leaving the
`admit()` block (answered, failed or cancelled by the client) frees the slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import Enum

from bertserve.plugin.errors import BertServeError, NotServing, QueueFull
from bertserve.runtime.metrics import ServerMetrics
from bertserve.runtime.waiting import wait_event


class ServingState(str, Enum):
    """Where the server is in its life: loading, serving, or draining before it stops."""

    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"


class Admission:
    """Counts requests in progress on one event loop; refuses what must not start."""

    def __init__(
        self, max_concurrent: int, retry_delay: Callable[[], float], metrics: ServerMetrics | None = None
    ) -> None:
        self.max_concurrent = max_concurrent
        self._retry_delay = retry_delay
        self._metrics = metrics
        self.in_flight = 0
        self.state = ServingState.LOADING
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block, or raise the refusal."""
        refusal = self._refusal()
        if refusal is not None:
            if self._metrics is not None:
                self._metrics.rejected.labels(refusal.reason.lower()).inc()
            raise refusal
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    def _refusal(self) -> BertServeError | None:
        if self.state is ServingState.DRAINING:
            return NotServing("the server is shutting down; retry on another replica", reason="DRAINING")
        if self.state is ServingState.LOADING:
            return NotServing("the server is still loading the encoder and heads; retry shortly", reason="LOADING")
        if self.in_flight >= self.max_concurrent:
            return QueueFull(
                f"{self.in_flight} requests are in progress, the limit is {self.max_concurrent}; retry after the delay",
                reason="TOO_MANY_REQUESTS",
                metadata={"max_concurrent_requests": str(self.max_concurrent)},
                retry_delay=self._retry_delay(),
            )
        return None

    async def drain(self, grace: float) -> bool:
        """Refuse new requests and wait up to `grace` seconds for the admitted ones; True if all finished."""
        self.state = ServingState.DRAINING
        return await wait_event(self._idle, grace)
