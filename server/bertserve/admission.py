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

from .errors import NotServing, QueueFull


class Admission:
    """Counts requests in progress on one event loop; refuses what must not start."""

    def __init__(self, max_concurrent: int, retry_delay: Callable[[], float]) -> None:
        self.max_concurrent = max_concurrent
        self._retry_delay = retry_delay
        self.in_flight = 0
        self.state = "loading"  # loading, serving, draining
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block, or raise the refusal."""
        if self.state == "draining":
            raise NotServing("the server is shutting down; retry on another replica", reason="DRAINING")
        if self.state == "loading":
            raise NotServing("the server is still loading the encoder and heads; retry shortly", reason="LOADING")
        if self.in_flight >= self.max_concurrent:
            raise QueueFull(
                f"{self.in_flight} requests are in progress, the limit is {self.max_concurrent}; retry after the delay",
                reason="TOO_MANY_REQUESTS",
                metadata={"max_concurrent_requests": str(self.max_concurrent)},
                retry_delay=self._retry_delay(),
            )
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Refuse new requests and wait up to `grace` seconds for the admitted ones; True if all finished."""
        self.state = "draining"
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            return False
        return True
