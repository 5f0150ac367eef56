"""Per-response timings: a request's `RequestTimings` as trailing metadata (gRPC) and response headers (HTTP).

The names and meaning are text-embeddings-inference's response headers, in
milliseconds (here with three decimals, so microseconds):

- ``x-total-time``: from the moment the server took the call (before
  admission) until the response was ready to send;
- ``x-tokenization-time``: the heads' preprocessing (validation and
  tokenization) of every input;
- ``x-queue-time``: from the request's first row entering the batch queue
  until the forward carrying its last row started, less its own earlier
  forwards (`bertserve.runtime.timing`);
- ``x-inference-time``: the batches that carried its rows, each whole (the
  shared encoder and every head in it), summed.

So ``x-queue-time + x-inference-time <= x-total-time``. Every successful
unary call whose rows went through the encoder carries them (the typed
services, Predict, Analyze, Open Inference Protocol ModelInfer); streams do
not (their results share one call).
"""

from __future__ import annotations

from collections.abc import Iterable

from bertserve.runtime.timing import RequestTimings

TOTAL_TIME_KEY = "x-total-time"
TOKENIZATION_TIME_KEY = "x-tokenization-time"
QUEUE_TIME_KEY = "x-queue-time"
INFERENCE_TIME_KEY = "x-inference-time"
TIMING_KEYS = (TOTAL_TIME_KEY, TOKENIZATION_TIME_KEY, QUEUE_TIME_KEY, INFERENCE_TIME_KEY)


def timing_metadata(timings: RequestTimings, now: float) -> tuple[tuple[str, str], ...]:
    """The timing pairs of a request answered at `now` (`perf_counter`); none when no row reached the encoder."""
    if not timings.ran:
        return ()
    return (
        (TOTAL_TIME_KEY, _ms(now - timings.started)),
        (TOKENIZATION_TIME_KEY, _ms(timings.preprocess)),
        (QUEUE_TIME_KEY, _ms(timings.queue_seconds())),
        (INFERENCE_TIME_KEY, _ms(timings.inference_seconds())),
    )


def timing_pairs(metadata: Iterable[tuple[str, str | bytes]]) -> tuple[tuple[str, str], ...]:
    """The timing pairs among a call's trailing metadata (what the HTTP gateway passes on as headers)."""
    return tuple((key, value) for key, value in metadata if key in TIMING_KEYS and isinstance(value, str))


def _ms(seconds: float) -> str:
    return f"{max(0.0, seconds) * 1000:.3f}"
