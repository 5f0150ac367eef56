"""Run small CPU work inline on the event loop and large work on worker threads.

Handing work to a worker thread and back costs two thread wake-ups (a few
hundred microseconds on a busy 2-core machine); tokenizing one sentence or
turning two logits into a label costs less than that. `CostModel` learns, per
kind of work (a head's preprocess or postprocess), the seconds it takes per
unit of size (characters of input, tokens of output) and `Offloader` runs a
call inline when its predicted time fits `inline_budget_seconds`, else on the
worker pool. Unknown work goes to the pool first, where it is measured; a
large input never blocks the event loop, whatever its kind's history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# About the cost of a round trip to a worker thread and back on a loaded 2-core machine.
DEFAULT_INLINE_BUDGET_SECONDS = 0.0003


@dataclass
class CostModel:
    """Seconds per unit of size for each kind of work, smoothed over recent calls."""

    smoothing: float = 0.2
    _per_unit: dict[Hashable, float] = field(default_factory=dict)

    def predict(self, kind: Hashable, size: int) -> float | None:
        """Expected seconds for work of `kind` and `size`; None until the kind was measured."""
        per_unit = self._per_unit.get(kind)
        return None if per_unit is None else per_unit * max(size, 1)

    def observe(self, kind: Hashable, size: int, seconds: float) -> None:
        per_unit = seconds / max(size, 1)
        previous = self._per_unit.get(kind)
        self._per_unit[kind] = per_unit if previous is None else previous + self.smoothing * (per_unit - previous)


class Offloader:
    """Runs a function inline or on `executor`, whichever `CostModel` says is cheaper."""

    def __init__(self, executor: Executor, inline_budget_seconds: float = DEFAULT_INLINE_BUDGET_SECONDS) -> None:
        self._executor = executor
        self.inline_budget_seconds = inline_budget_seconds
        self.costs = CostModel()

    def runs_inline(self, kind: Hashable, size: int) -> bool:
        predicted = self.costs.predict(kind, size)
        return predicted is not None and predicted <= self.inline_budget_seconds

    async def run(self, kind: Hashable, size: int, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)`, timed; inline when predicted to fit the budget, else on a worker thread."""
        if self.runs_inline(kind, size):
            return self._timed(kind, size, function, *args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, kind, size, function, *args)

    def _timed(self, kind: Hashable, size: int, function: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.costs.observe(kind, size, time.perf_counter() - started)
