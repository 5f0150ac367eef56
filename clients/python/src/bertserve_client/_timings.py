"""Where the server spent a call's time, as it reports it in trailing metadata.

Every successful call that ran rows through the encoder carries four
entries, named as text-embeddings-inference's response headers, in
milliseconds: ``x-total-time``, ``x-tokenization-time``, ``x-queue-time`` and
``x-inference-time`` (the README's Metrics section says what each counts).
:func:`parse_timings` reads them; a client built with ``on_timings=`` passes
them to its callback after each such call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("bertserve_client")

# The trailing-metadata keys of the wire contract, and the field each fills.
TIMING_KEYS = {
    "x-total-time": "total_ms",
    "x-tokenization-time": "tokenization_ms",
    "x-queue-time": "queue_ms",
    "x-inference-time": "inference_ms",
}


@dataclass(frozen=True)
class ServerTimings:
    """One call's time in the server, in milliseconds.

    ``queue_ms + inference_ms <= total_ms``: total runs from the server taking
    the call to the answer being ready; tokenization is the heads'
    preprocessing; queue the wait for the encoder; inference the batches that
    carried the call's rows.
    """

    total_ms: float
    tokenization_ms: float
    queue_ms: float
    inference_ms: float


TimingsCallback = Callable[[ServerTimings], Any]


def parse_timings(metadata: Sequence[tuple[str, Any]] | None) -> ServerTimings | None:
    """The timings in a call's trailing metadata; None unless all four are there as numbers."""
    values: dict[str, float] = {}
    for key, value in metadata or ():
        field = TIMING_KEYS.get(key)
        if field is not None and isinstance(value, str):
            try:
                values[field] = float(value)
            except ValueError:
                return None
    if len(values) != len(TIMING_KEYS):
        return None
    return ServerTimings(**values)


def report_timings(callback: TimingsCallback, metadata: Sequence[tuple[str, Any]] | None) -> None:
    """Pass the call's timings to ``callback``; a callback that raises is logged, never fails the call."""
    timings = parse_timings(metadata)
    if timings is None:
        return
    try:
        callback(timings)
    except Exception:  # the answer arrived: a broken metrics hook must not turn it into an error
        log.warning("on_timings callback raised", exc_info=True)
