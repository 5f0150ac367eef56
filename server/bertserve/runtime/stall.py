"""A stuck forward: what the batcher knows about a forward that ran past its time limit.

Python cannot stop a thread, so a forward that never returns (a head that
deadlocks, a kernel that hangs) holds the single inference thread and every
head with it. The batcher (`Batcher`) notices a forward running past
``server.forward_timeout_seconds``, fails the rows waiting for it and
refuses new ones with `StuckForward.refusal` (UNAVAILABLE with a retry
delay, so clients go to another replica), and tells its listener, which
turns health NOT_SERVING. When the forward returns, it serves again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from bertserve.plugin.errors import NotServing

REASON = "FORWARD_STUCK"


@dataclass(frozen=True)
class StuckForward:
    """A forward past its limit: where it is (``"the encoder"`` or a head's origin) and since when."""

    stage: str
    head: str | None
    rows: int
    limit: float
    started: float

    @property
    def label(self) -> str:
        """The metrics label: the head's name, or ``encoder``."""
        return self.head or "encoder"

    def refusal(self, now: float) -> NotServing:
        """The UNAVAILABLE answer for a request that would wait for this forward; retry in about a second."""
        return NotServing(
            f"a forward has been running for {now - self.started:.1f} s in {self.stage}, past the "
            f"{self.limit:g} s limit (server.forward_timeout_seconds); retry on another replica",
            reason=REASON,
            metadata={"stage": self.label, "forward_timeout_seconds": f"{self.limit:g}"},
            retry_delay=random.uniform(0.75, 1.25),
        )


class StallListener(Protocol):
    """What the server does when a forward gets stuck and when it returns."""

    async def forward_stuck(self, forward: StuckForward) -> None:
        """A forward just passed its limit."""

    async def forward_recovered(self, forward: StuckForward, seconds: float) -> None:
        """The stuck forward returned after `seconds` in all."""
