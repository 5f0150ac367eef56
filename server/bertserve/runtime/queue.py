"""The batch queue: which encoder rows wait, which are dropped, and which form the next batch.

One queue holds every head's rows. A row enters with the futures of the heads
that read it (`Consumer`); a full queue refuses a request at once. When the
encoder is free, `take_batch` drops rows nobody waits for any more (cancelled
or past their deadline) and picks the batch with `select_batch`: the oldest
rows in arrival order, within the batch's row and token limits.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bertserve.config import BatchingConfig
from bertserve.plugin.errors import BertServeError, DeadlineExceeded, QueueFull
from bertserve.plugin.head import EncodedRow, Head
from bertserve.runtime.metrics import ServerMetrics
from bertserve.runtime.request_context import RequestContext, current_request

# The share of a request's time to its deadline that its rows may spend waiting for the encoder.
DEADLINE_SHARE = 0.5

# One encoder row and the heads reading it: what a caller queues.
RowGroup = Sequence[tuple[Head[Any, Any], EncodedRow]]


@dataclass(eq=False)
class Consumer:
    """One head reading one encoder row, and where its result goes."""

    head: Head[Any, Any]
    row: EncodedRow
    future: asyncio.Future[Any]


@dataclass(eq=False)
class QueuedRow:
    """One encoder input row and the heads that read its output.

    `request` is the RPC that queued it (None outside one: warm-up), and
    `queued_at` its `perf_counter` time, for the request's timings.
    """

    consumers: list[Consumer]
    deadline: float | None
    order: int
    enqueued: float
    request: RequestContext | None = None
    queued_at: float = 0.0

    @property
    def tokens(self) -> EncodedRow:
        return self.consumers[0].row

    @property
    def length(self) -> int:
        return len(self.consumers[0].row)

    @property
    def abandoned(self) -> bool:
        """True when every consumer's request was cancelled or already answered."""
        return all(consumer.future.done() for consumer in self.consumers)

    def fail(self, error: BaseException) -> None:
        for consumer in self.consumers:
            if not consumer.future.done():
                consumer.future.set_exception(error)


class RowQueue:
    """Rows waiting for the encoder, in arrival order; `wakeup` is set whenever rows arrive."""

    def __init__(
        self,
        config: BatchingConfig,
        metrics: ServerMetrics,
        retry_delay: Callable[[], float],
        expected_wait: Callable[[int], float | None] = lambda rows: None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._retry_delay = retry_delay
        self._expected_wait = expected_wait
        self._rows: list[QueuedRow] = []
        self._order = itertools.count()
        self.wakeup = asyncio.Event()
        # While set, `add` raises what it returns: shutting down, or a stuck forward.
        self.refusal: Callable[[], BertServeError] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, groups: Sequence[RowGroup], timeout: float | None) -> list[list[asyncio.Future[Any]]]:
        """Queue one row per group; returns each group's consumer futures, or raises the refusal."""
        if self.refusal is not None:
            raise self.refusal()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("the deadline passed before the request reached the batch queue")
        limit = self._config.max_queue_rows
        if len(self._rows) + len(groups) > limit:
            self._metrics.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"the batch queue is full ({len(self._rows)} of {limit} rows waiting, "
                f"this request needs {len(groups)}); retry after the delay",
                metadata={"max_queue_rows": str(limit)},
                retry_delay=self._retry_delay(),
            )
        self._check_deadline_reachable(len(groups), timeout)
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout if timeout is not None else None
        request, queued_at = current_request(), time.perf_counter()
        if request is not None and request.timings.queued is None:
            request.timings.queued = queued_at
        futures = []
        for group in groups:
            consumers = [Consumer(head, row, loop.create_future()) for head, row in group]
            self._rows.append(QueuedRow(consumers, deadline, next(self._order), now, request, queued_at))
            futures.append([consumer.future for consumer in consumers])
        self.wakeup.set()
        return futures

    def _check_deadline_reachable(self, rows: int, timeout: float | None) -> None:
        """Refuse rows that would, by the recent encoder rate, use more than half the time to their deadline.

        Under overload a queue that takes everything makes every row wait
        until its deadline has nearly passed, and most answers come too late
        (measured at twice the capacity: 6% answered). Refusing at once
        (RESOURCE_EXHAUSTED, retry delay) keeps the admitted rows within their
        deadlines and lets the others go elsewhere; the other half of the
        time is for the estimate's error and pre- and postprocessing.
        """
        wait = self._expected_wait(rows) if timeout is not None else None
        if wait is None or timeout is None or wait <= DEADLINE_SHARE * timeout:
            return
        self._metrics.rejected.labels("deadline_unreachable").inc()
        raise QueueFull(
            f"the rows queued ahead need about {wait:.2f} s of encoder time and the deadline is {timeout:.2f} s "
            "away; retry after the delay",
            reason="DEADLINE_UNREACHABLE",
            metadata={"expected_wait_seconds": f"{wait:.3f}", "deadline_seconds": f"{timeout:.3f}"},
            retry_delay=self._retry_delay(),
        )

    def take_batch(self, now: float) -> list[QueuedRow]:
        """Drop abandoned and expired rows, then remove and return the next batch (empty: none left)."""
        live = [queued for queued in self._rows if self._keep(queued, now)]
        if not live:
            self._rows = []
            return []
        batch = select_batch(live, self._config.max_batch_size, self._config.max_batch_tokens)
        chosen = set(map(id, batch))
        self._rows = [queued for queued in live if id(queued) not in chosen]
        for queued in batch:
            self._metrics.queue_wait_seconds.observe(now - queued.enqueued)
        return batch

    def _keep(self, queued: QueuedRow, now: float) -> bool:
        if queued.abandoned:
            self._metrics.dropped_rows.labels("cancelled").inc()
            return False
        if queued.deadline is not None and queued.deadline <= now:
            self._metrics.dropped_rows.labels("deadline").inc()
            queued.fail(DeadlineExceeded("the deadline passed while the request was queued"))
            return False
        return True

    def fail_all(self, error: BaseException) -> None:
        """Fail every queued row with `error` and empty the queue."""
        for queued in self._rows:
            queued.fail(error)
        self._rows = []


def select_batch(rows: Sequence[QueuedRow], max_batch_size: int, max_batch_tokens: int) -> list[QueuedRow]:
    """The oldest rows, in arrival order, within `max_batch_size` rows and `max_batch_tokens` tokens.

    The oldest row is always taken, so every row is eventually served, and a
    later row joins only if it fits: rows are never reordered past one
    another, so no row waits behind ones that came after it. Tokens are real
    tokens: the packed forward computes no padding.
    """
    by_age = sorted(rows, key=lambda queued: queued.order)
    batch = [by_age[0]]
    tokens = by_age[0].length
    for queued in by_age[1:]:
        if len(batch) == max_batch_size:
            break
        if tokens + queued.length > max_batch_tokens:
            break
        batch.append(queued)
        tokens += queued.length
    return batch
