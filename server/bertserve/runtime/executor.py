"""The executor: one encoder forward per batch, then each head on the rows it reads.

Runs on the single inference thread. The encoder computes the batch's real
tokens only (`SharedEncoder.forward_packed`); each head then gets its rows
right-padded (`PackedBatch.view`). A head that raises fails only the rows
that make it raise: its rows are re-run in halves until the bad ones are found.

Each batch's timestamps (encoder, then each head) are taken once here, a few
`perf_counter` calls per batch: they feed the per-head metrics and every
request's timings (`timing.BatchShare`), from which the wire layer makes
response timings and trace spans.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bertserve.model.encoder import PackedBatch, SharedEncoder
from bertserve.plugin.errors import HeadFailed
from bertserve.plugin.head import Head
from bertserve.runtime.metrics import ServerMetrics
from bertserve.runtime.queue import Consumer, QueuedRow
from bertserve.runtime.request_context import RequestContext
from bertserve.runtime.timing import BatchShare, BatchTiming, HeadTiming

log = logging.getLogger(__name__)


def default_origin(head: Head[Any, Any]) -> str:
    return f"head {head.name!r}"


class Executor:
    """Computes batches: `run(batch)` returns, per row, each consumer's result or error."""

    def __init__(
        self,
        encoder: SharedEncoder,
        metrics: ServerMetrics,
        origin: Callable[[Head[Any, Any]], str] = default_origin,
    ) -> None:
        self._encoder = encoder
        self._metrics = metrics
        self._origin = origin
        # Where the running forward is: (description, head name or None for the encoder); read by the batcher.
        self.stage: tuple[str, str | None] = ("the encoder", None)

    def run(self, batch: list[QueuedRow]) -> list[list[Any]]:
        """Run the encoder once on the batch's real tokens, then each head on the rows it reads."""
        started = time.perf_counter()
        self.stage = ("the encoder", None)
        out = self._encoder.forward_packed([queued.tokens for queued in batch])
        timing = BatchTiming(started, time.perf_counter(), rows=len(batch), tokens=out.layout.tokens)
        # Each head reads its rows of the batch: (batch index, consumer index) pairs.
        by_head: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for i, queued in enumerate(batch):
            for j, consumer in enumerate(queued.consumers):
                by_head[id(consumer.head)].append((i, j))
        results: list[list[Any]] = [[None] * len(queued.consumers) for queued in batch]
        for places in by_head.values():
            consumers = [batch[i].consumers[j] for i, j in places]
            head, rows = consumers[0].head, [i for i, _ in places]
            tokens = sum(batch[i].length for i in rows)
            head_started = time.perf_counter()
            head_results = self._run_head(head, out, rows, consumers)
            timing.heads.append(HeadTiming(head.name, head_started, time.perf_counter(), len(rows), tokens))
            for (i, j), result in zip(places, head_results):
                results[i][j] = result
        timing.end = time.perf_counter()
        self._metrics.record_batch(
            rows=len(batch), tokens=out.layout.tokens, seconds=timing.seconds, heads=timing.heads
        )
        share_batch(batch, timing)
        log.debug("forward of %d rows, %d tokens in %.1f ms", len(batch), out.layout.tokens, 1000 * timing.seconds)
        return results

    def _run_head(
        self, head: Head[Any, Any], out: PackedBatch, rows: list[int], consumers: list[Consumer]
    ) -> list[Any]:
        """`head.forward` on its rows of the batch; when it raises, the rows are re-run in halves."""
        self.stage = (self._origin(head), head.name)
        try:
            return _head_forward(head, out, rows, consumers)
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


def share_batch(batch: Sequence[QueuedRow], timing: BatchTiming) -> None:
    """Give each request whose rows `batch` carried its share of the batch (`RequestTimings.batches`)."""
    shares: dict[int, tuple[RequestContext, list[QueuedRow]]] = {}
    for queued in batch:
        if queued.request is not None:
            shares.setdefault(id(queued.request), (queued.request, []))[1].append(queued)
    for request, rows in shares.values():
        heads = frozenset(consumer.head.name for queued in rows for consumer in queued.consumers)
        tokens = sum(queued.length for queued in rows)
        queued_at = min(queued.queued_at for queued in rows)
        request.timings.batches.append(BatchShare(timing, len(rows), tokens, heads, queued_at))


def _head_forward(head: Head[Any, Any], out: PackedBatch, rows: list[int], consumers: list[Consumer]) -> list[Any]:
    view = out.view(rows, hidden_states=head.needs_hidden_states)
    with torch.inference_mode():
        results = head.forward(view, [consumer.row for consumer in consumers])
    if not hasattr(results, "__len__") or len(results) != len(rows):
        count = len(results) if hasattr(results, "__len__") else type(results).__name__
        raise TypeError(f"forward returned {count} results for {len(rows)} rows; return one per row")
    return list(results)
