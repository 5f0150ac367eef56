"""Where a request's time went: the timestamps the runtime records once, for response timings and traces.

All times are `time.perf_counter()` seconds. The executor records one
`BatchTiming` per encoder batch (on the inference thread: the encoder, then
each head on its rows) and gives every request whose rows the batch carried a
`BatchShare` of it; the runner adds each request's preprocessing time. The
wire layer turns `RequestTimings` into response metadata (`wire.timings`) and
trace spans (`wire.otel`); the runtime never names either.

A request whose rows went through several batches reports:

- queue: from its first row entering the queue until the forward carrying its
  last row started, less the forwards of its earlier batches in between, so
  that queue + inference is the time from queueing to its last result;
- inference: the sum of the whole batches that carried its rows (encoder and
  every head in them: its results wait for the whole batch). Batches run one
  after another on one thread, so the sum is also the time they span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class HeadTiming:
    """One head's module on its rows of one batch."""

    head: str
    start: float
    end: float
    rows: int
    tokens: int


@dataclass
class BatchTiming:
    """One encoder batch: the encoder from `start` to `encoder_end`, then the heads, done at `end`."""

    start: float
    encoder_end: float
    end: float = 0.0
    rows: int = 0
    tokens: int = 0
    heads: list[HeadTiming] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class BatchShare:
    """A request's part of one batch: its rows and their tokens, the heads reading them, when they were queued."""

    batch: BatchTiming
    rows: int
    tokens: int
    heads: frozenset[str]
    queued: float


@dataclass
class RequestTimings:
    """One request's timestamps: when it started, its preprocessing, and the batches that carried its rows."""

    started: float = field(default_factory=time.perf_counter)
    preprocess: float = 0.0
    queued: float | None = None  # when its first row entered the batch queue
    batches: list[BatchShare] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        """Whether any of its rows went through the encoder."""
        return bool(self.batches)

    def queue_seconds(self) -> float:
        """Queueing until the forward of its last row started, less its own earlier forwards (module docstring)."""
        if not self.batches or self.queued is None:
            return 0.0
        last_start = max(share.batch.start for share in self.batches)
        earlier = sum(share.batch.seconds for share in self.batches if share.batch.start < last_start)
        return max(0.0, last_start - self.queued - earlier)

    def inference_seconds(self) -> float:
        """The whole batches (encoder and heads) that carried its rows, each counted once."""
        return sum(share.batch.seconds for share in self.batches)
