"""Dynamic batching across heads: one queue, one encoder forward per batch.

One owner task takes rows from the shared queue whenever the encoder is idle,
so a row that finds the encoder free starts at once and rows that arrive
during a forward form the next batch. A batch takes the waiting rows in
arrival order (no starvation) until it holds `max_batch_size` rows or
`max_batch_tokens` tokens; the encoder runs on the batch's real tokens only
(`packed`), so rows of any lengths share a forward at no padding cost. The
forward and the heads run on one inference thread, off the event loop. Rows
whose request was cancelled or whose deadline passed are dropped before the
forward.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from bertserve.config import BatchingConfig
from bertserve.model.encoder import PackedBatch, SharedEncoder
from bertserve.plugin.errors import DeadlineExceeded, HeadFailed, NotServing, QueueFull
from bertserve.plugin.head import EncodedRow, Head
from bertserve.runtime.memory import IDLE_TRIM_SECONDS, release_free_memory
from bertserve.runtime.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Consumer:
    """One head reading one encoder row, and where its result goes."""

    head: Head[Any, Any]
    row: EncodedRow
    future: asyncio.Future[Any]


@dataclass(eq=False)
class _QueuedRow:
    """One encoder input row and the heads that read its output."""

    consumers: list[_Consumer]
    deadline: float | None
    order: int
    enqueued: float

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


@dataclass
class BatcherStats:
    """Counters for tests, benchmarks and metrics."""

    forwards: int = 0
    rows: int = 0
    tokens: int = 0
    dropped_cancelled: int = 0
    dropped_expired: int = 0


class Batcher:
    """Owns the queue and the encoder; `submit` is the only way to run it."""

    def __init__(
        self,
        encoder: SharedEncoder,
        config: BatchingConfig,
        metrics: ServerMetrics | None = None,
        origin: Callable[[Head[Any, Any]], str] = lambda head: f"head {head.name!r}",
    ) -> None:
        self._encoder = encoder
        self._origin = origin
        self._metrics = metrics
        self._rows_per_second: float | None = None
        self._config = config
        self._queue: list[_QueuedRow] = []
        self._wakeup = asyncio.Event()
        self._order = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertserve-inference")
        self._owner: asyncio.Task[None] | None = None
        self._closing = False
        self._rows_in_forward = 0
        self._forwards_since_trim = 0
        self.stats = BatcherStats()

    def start(self) -> None:
        """Start the owner task on the running event loop."""
        self._owner = asyncio.get_running_loop().create_task(self._run(), name="bertserve-batcher")

    async def stop(self) -> None:
        """Stop taking rows, fail queued ones as UNAVAILABLE, end the owner task."""
        self._closing = True
        for queued in self._queue:
            queued.fail(NotServing("the server is shutting down; retry on another replica"))
        self._queue.clear()
        if self._owner is not None:
            self._owner.cancel()
            try:
                await self._owner
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a forward."""
        return len(self._queue)

    @property
    def pending_rows(self) -> int:
        """Rows waiting or being computed."""
        return len(self._queue) + self._rows_in_forward

    def retry_delay(self) -> float:
        """Seconds until the rows now pending are likely done: the delay a refused client should wait.

        From the recent encoder throughput (rows per second, smoothed), with
        ±25% jitter so that clients refused together do not all come back
        together; between 50 ms and 10 s.
        """
        estimate = self.pending_rows / self._rows_per_second if self._rows_per_second else 0.1
        return min(10.0, max(0.05, estimate * random.uniform(0.75, 1.25)))

    async def submit(
        self, head: Head[Any, Any], rows: Sequence[EncodedRow], *, timeout: float | None = None
    ) -> list[Any]:
        """Queue `rows` for `head` and wait for their per-row results.

        `timeout` is the seconds left until the request's deadline. Cancelling
        the caller cancels its rows; queued rows are then never computed. The
        first failed row raises its error.
        """
        futures = self._enqueue([[(head, row)] for row in rows], timeout)
        return list(await asyncio.gather(*(group[0] for group in futures)))

    async def submit_shared(
        self, groups: Sequence[Sequence[tuple[Head[Any, Any], EncodedRow]]], *, timeout: float | None = None
    ) -> list[list[Any]]:
        """Queue rows that several heads read from ONE encoder pass.

        Each group is one encoder row (every row in it has the same tokens)
        and the heads that read it. Returns, per group, each head's result or
        the exception it raised, so one failing head does not fail the others.
        """
        for group in groups:
            first = group[0][1]
            if any(row.input_ids != first.input_ids or row.token_type_ids != first.token_type_ids for _, row in group):
                raise ValueError("every row of a shared group must hold the same tokens")
        futures = self._enqueue(groups, timeout)
        flat = await asyncio.gather(*(f for group in futures for f in group), return_exceptions=True)
        results: list[list[Any]] = []
        offset = 0
        for group_futures in futures:
            results.append(list(flat[offset : offset + len(group_futures)]))
            offset += len(group_futures)
        return results

    def _enqueue(
        self, groups: Sequence[Sequence[tuple[Head[Any, Any], EncodedRow]]], timeout: float | None
    ) -> list[list[asyncio.Future[Any]]]:
        if self._closing:
            raise NotServing("the server is shutting down; retry on another replica")
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("the deadline passed before the request reached the batch queue")
        if len(self._queue) + len(groups) > self._config.max_queue_rows:
            if self._metrics is not None:
                self._metrics.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"the batch queue is full ({len(self._queue)} of {self._config.max_queue_rows} rows waiting, "
                f"this request needs {len(groups)}); retry after the delay",
                metadata={"max_queue_rows": str(self._config.max_queue_rows)},
                retry_delay=self.retry_delay(),
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout if timeout is not None else None
        futures = []
        for group in groups:
            consumers = [_Consumer(head, row, loop.create_future()) for head, row in group]
            self._queue.append(_QueuedRow(consumers, deadline, next(self._order), now))
            futures.append([consumer.future for consumer in consumers])
        self._wakeup.set()
        return futures

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_rows(loop)
            self._wakeup.clear()
            try:
                if self._config.max_delay_ms > 0:
                    await self._wait_for_fill(loop)
                while batch := self._take_batch(loop.time()):
                    await self._execute(loop, batch)
            except Exception as error:  # a bug: fail what is queued rather than leave it hanging
                log.exception("batcher loop error; failing %d queued rows", len(self._queue))
                for queued in self._queue:
                    queued.fail(HeadFailed(f"the batcher failed: {error!r}"))
                self._queue.clear()

    async def _wait_for_rows(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for queued rows; once idle for IDLE_TRIM_SECONDS after a forward, release freed memory."""
        if self._forwards_since_trim:
            try:
                await asyncio.wait_for(self._wakeup.wait(), IDLE_TRIM_SECONDS)
                return
            except asyncio.TimeoutError:
                self._forwards_since_trim = 0
                await loop.run_in_executor(self._executor, release_free_memory)
        await self._wakeup.wait()

    async def _wait_for_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a batch fill for up to max_delay_ms after its oldest row arrived."""
        close_at = loop.time() + self._config.max_delay_ms / 1000
        while len(self._queue) < self._config.max_batch_size and (left := close_at - loop.time()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                break

    def _take_batch(self, now: float) -> list[_QueuedRow]:
        live = []
        for queued in self._queue:
            if queued.abandoned:
                self.stats.dropped_cancelled += 1
                if self._metrics is not None:
                    self._metrics.dropped_rows.labels("cancelled").inc()
            elif queued.deadline is not None and queued.deadline <= now:
                self.stats.dropped_expired += 1
                if self._metrics is not None:
                    self._metrics.dropped_rows.labels("deadline").inc()
                queued.fail(DeadlineExceeded("the deadline passed while the request was queued"))
            else:
                live.append(queued)
        if not live:
            self._queue = []
            return []
        batch = select_batch(live, self._config.max_batch_size, self._config.max_batch_tokens)
        chosen = set(map(id, batch))
        self._queue = [queued for queued in live if id(queued) not in chosen]
        if self._metrics is not None:
            for queued in batch:
                self._metrics.queue_wait_seconds.observe(now - queued.enqueued)
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_QueuedRow]) -> None:
        self._rows_in_forward = len(batch)
        self._forwards_since_trim += 1
        started = loop.time()
        try:
            results = await loop.run_in_executor(self._executor, self._forward, batch)
            rate = len(batch) / max(loop.time() - started, 1e-6)
            previous = self._rows_per_second
            self._rows_per_second = rate if previous is None else 0.8 * previous + 0.2 * rate
        except Exception as error:  # the encoder itself failed: every row fails
            log.exception("encoder forward failed for a batch of %d rows", len(batch))
            results = [[HeadFailed(f"the encoder failed: {error}")] * len(q.consumers) for q in batch]
        finally:
            self._rows_in_forward = 0
        for queued, row_results in zip(batch, results):
            for consumer, result in zip(queued.consumers, row_results):
                if consumer.future.done():
                    continue
                if isinstance(result, BaseException):
                    consumer.future.set_exception(result)
                else:
                    consumer.future.set_result(result)

    def _forward(self, batch: list[_QueuedRow]) -> list[list[Any]]:
        """Run the encoder once on the batch's real tokens, then each head on the rows it reads.

        Runs on the inference thread; returns, per row, each consumer's result.
        """
        started = time.perf_counter()
        out = self._encoder.forward_packed([queued.tokens for queued in batch])
        tokens = out.layout.tokens
        self.stats.forwards += 1
        self.stats.rows += len(batch)
        self.stats.tokens += tokens

        # Each head reads its rows of the batch: (batch index, consumer index) pairs.
        by_head: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for i, queued in enumerate(batch):
            for j, consumer in enumerate(queued.consumers):
                by_head[id(consumer.head)].append((i, j))
        results: list[list[Any]] = [[None] * len(queued.consumers) for queued in batch]
        for places in by_head.values():
            consumers = [batch[i].consumers[j] for i, j in places]
            head_results = self._run_head(consumers[0].head, out, [i for i, _ in places], consumers)
            for (i, j), result in zip(places, head_results):
                results[i][j] = result
        seconds = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.record_batch(rows=len(batch), tokens=tokens, seconds=seconds)
        log.debug("forward of %d rows, %d tokens in %.1f ms", len(batch), tokens, 1000 * seconds)
        return results

    def _run_head(
        self, head: Head[Any, Any], out: PackedBatch, rows: list[int], consumers: list[_Consumer]
    ) -> list[Any]:
        """`head.forward` on its rows of the batch, right-padded.

        When it raises, the rows are re-run in halves until the failing ones
        are found: only they fail, and the other callers' rows are answered.
        """
        try:
            return self._head_forward(head, out, rows, consumers)
        except Exception as error:
            if len(rows) > 1:
                half = len(rows) // 2
                return [
                    *self._run_head(head, out, rows[:half], consumers[:half]),
                    *self._run_head(head, out, rows[half:], consumers[half:]),
                ]
            origin = self._origin(head)
            log.error("%s failed in forward on one row", origin, exc_info=True)
            message = f"{origin} failed in forward: {error!r}; see the server log"
            return [HeadFailed(message, metadata={"head": head.name, "stage": "forward"})]

    @staticmethod
    def _head_forward(head: Head[Any, Any], out: PackedBatch, rows: list[int], consumers: list[_Consumer]) -> list[Any]:
        view = out.view(rows, hidden_states=head.needs_hidden_states)
        with torch.inference_mode():
            results = head.forward(view, [consumer.row for consumer in consumers])
        if not hasattr(results, "__len__") or len(results) != len(rows):
            count = len(results) if hasattr(results, "__len__") else type(results).__name__
            raise TypeError(f"forward returned {count} results for {len(rows)} rows; return one per row")
        return list(results)


def select_batch(rows: Sequence[_QueuedRow], max_batch_size: int, max_batch_tokens: int) -> list[_QueuedRow]:
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
