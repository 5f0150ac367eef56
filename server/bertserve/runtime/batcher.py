"""Dynamic batching across heads: the owner loop between the queue and the executor.

One owner task takes rows from the shared queue (`queue.RowQueue`) whenever
the encoder is idle, so a row that finds the encoder free starts at once and
rows that arrive during a forward form the next batch. The executor
(`executor.Executor`) computes each batch on one inference thread, off the
event loop; the owner hands each consumer its result. A forward running past
`forward_timeout` seconds is stuck (`stall`): its rows and the queued ones
fail UNAVAILABLE, new rows are refused and the `listener` is told, until it
returns. The counters live in the server's metrics (`stats` reads them).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bertserve.config import BatchingConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.errors import HeadFailed, NotServing
from bertserve.plugin.head import EncodedRow, Head
from bertserve.runtime.executor import Executor, default_origin
from bertserve.runtime.memory import IDLE_TRIM_SECONDS, release_free_memory
from bertserve.runtime.metrics import BatchCounts, ServerMetrics
from bertserve.runtime.queue import QueuedRow, RowGroup, RowQueue
from bertserve.runtime.stall import StallListener, StuckForward
from bertserve.runtime.waiting import wait_event

log = logging.getLogger(__name__)


class Batcher:
    """Owns the queue and the encoder; `submit` and `submit_shared` are the only ways to run it."""

    def __init__(
        self,
        encoder: SharedEncoder,
        config: BatchingConfig,
        metrics: ServerMetrics | None = None,
        origin: Callable[[Head[Any, Any]], str] = default_origin,
        forward_timeout: float | None = None,
        listener: StallListener | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self._config = config
        self._forward_timeout = forward_timeout
        self.listener = listener
        self.stuck: StuckForward | None = None
        self._closing = False
        self._queue = RowQueue(config, self.metrics, self.retry_delay, self.expected_wait)
        self._executor = Executor(encoder, self.metrics, origin)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertserve-inference")
        self._owner: asyncio.Task[None] | None = None
        self._rows_per_second: float | None = None
        self._rows_in_forward = 0
        self._forwards_since_trim = 0

    @property
    def stats(self) -> BatchCounts:
        """The batching counters, read live from the metrics."""
        return self.metrics.batch_counts()

    def start(self) -> None:
        """Start the owner task on the running event loop."""
        self._owner = asyncio.get_running_loop().create_task(self._run(), name="bertserve-batcher")

    async def stop(self) -> None:
        """Stop taking rows, fail queued ones as UNAVAILABLE, end the owner task."""
        self._closing = True
        self._queue.refusal = lambda: NotServing("the server is shutting down; retry on another replica")
        self._queue.fail_all(self._queue.refusal())
        if self._owner is not None:
            self._owner.cancel()
            try:
                await self._owner
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=self.stuck is None)  # a stuck forward's thread cannot be joined

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a forward."""
        return len(self._queue)

    @property
    def pending_rows(self) -> int:
        """Rows waiting or being computed."""
        return len(self._queue) + self._rows_in_forward

    def expected_wait(self, rows: int) -> float | None:
        """Seconds until `rows` more rows would be computed at the recent rate; None before the first forward."""
        return (self.pending_rows + rows) / self._rows_per_second if self._rows_per_second else None

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
        futures = self._queue.add([[(head, row)] for row in rows], timeout)
        return list(await asyncio.gather(*(group[0] for group in futures)))

    async def submit_shared(self, groups: Sequence[RowGroup], *, timeout: float | None = None) -> list[list[Any]]:
        """Queue rows that several heads read from ONE encoder pass.

        Each group is one encoder row (every row in it has the same tokens)
        and the heads that read it. Returns, per group, each head's result or
        the exception it raised, so one failing head does not fail the others.
        """
        for group in groups:
            first = group[0][1]
            if any(row.input_ids != first.input_ids or row.token_type_ids != first.token_type_ids for _, row in group):
                raise ValueError("every row of a shared group must hold the same tokens")
        futures = self._queue.add(groups, timeout)
        flat = await asyncio.gather(*(f for group in futures for f in group), return_exceptions=True)
        results: list[list[Any]] = []
        offset = 0
        for group_futures in futures:
            results.append(list(flat[offset : offset + len(group_futures)]))
            offset += len(group_futures)
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_rows(loop)
            self._queue.wakeup.clear()
            try:
                if self._config.max_delay_ms > 0:
                    await self._wait_for_fill(loop)
                while batch := self._queue.take_batch(loop.time()):
                    await self._execute(loop, batch)
            except Exception as error:  # a bug: fail what is queued rather than leave it hanging
                log.exception("batcher loop error; failing %d queued rows", len(self._queue))
                self._queue.fail_all(HeadFailed(f"the batcher failed: {error!r}"))

    async def _wait_for_rows(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for queued rows; once idle for IDLE_TRIM_SECONDS after a forward, release freed memory."""
        if self._forwards_since_trim:
            if await wait_event(self._queue.wakeup, IDLE_TRIM_SECONDS):
                return
            self._forwards_since_trim = 0
            await loop.run_in_executor(self._thread, release_free_memory)
        await self._queue.wakeup.wait()

    async def _wait_for_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a batch fill for up to max_delay_ms after its oldest row arrived."""
        close_at = loop.time() + self._config.max_delay_ms / 1000
        while len(self._queue) < self._config.max_batch_size and (left := close_at - loop.time()) > 0:
            self._queue.wakeup.clear()
            if not await wait_event(self._queue.wakeup, left):
                break

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[QueuedRow]) -> None:
        self._rows_in_forward = len(batch)
        self._forwards_since_trim += 1
        started = loop.time()
        try:
            results = await self._watched(loop, loop.run_in_executor(self._thread, self._executor.run, batch), batch)
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

    async def _watched(
        self, loop: asyncio.AbstractEventLoop, forward: asyncio.Future[Any], batch: list[QueuedRow]
    ) -> Any:
        """The forward's results; past `forward_timeout` it is stuck until it returns (see `stall`)."""
        if self._forward_timeout is None:
            return await forward
        done, _ = await asyncio.wait({forward}, timeout=self._forward_timeout)
        if done:
            return forward.result()
        started = loop.time() - self._forward_timeout
        await self._stall(StuckForward(*self._executor.stage, len(batch), self._forward_timeout, started), batch, loop)
        try:
            results = await forward
        except asyncio.CancelledError:
            raise  # stopping: the forward is abandoned, not recovered
        except Exception:
            await self._recover(loop)
            raise
        await self._recover(loop)
        return results

    async def _stall(self, stuck: StuckForward, batch: list[QueuedRow], loop: asyncio.AbstractEventLoop) -> None:
        """Fail the batch's and the queue's rows, refuse new ones, count it, tell the listener."""
        self.stuck = stuck
        log.error(
            "a forward of %d rows has run for more than %g s in %s; failing the waiting requests as UNAVAILABLE "
            "until it returns",
            stuck.rows,
            stuck.limit,
            stuck.stage,
        )
        self.metrics.stuck_forwards.labels(stuck.label).inc()
        self.metrics.forward_stuck.set(1)
        if not self._closing:
            self._queue.refusal = lambda: stuck.refusal(loop.time())
        for queued in batch:
            queued.fail(stuck.refusal(loop.time()))
        self._queue.fail_all(stuck.refusal(loop.time()))
        if self.listener is not None:
            await self.listener.forward_stuck(stuck)

    async def _recover(self, loop: asyncio.AbstractEventLoop) -> None:
        stuck, self.stuck = self.stuck, None
        if stuck is None:
            return
        seconds = loop.time() - stuck.started
        self.metrics.forward_stuck.set(0)
        if not self._closing:
            self._queue.refusal = None
        log.warning("the stuck forward in %s returned after %.1f s; serving again", stuck.stage, seconds)
        if self.listener is not None:
            await self.listener.forward_recovered(stuck, seconds)
