"""Inline or worker thread: the cost model and where work really runs."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bertserve.plugin.tasks import NextSentenceInput, QuestionAnsweringInput
from bertserve.runtime.offload import CostModel, Offloader
from bertserve.runtime.runner import text_size


def test_cost_model_predicts_per_unit_and_smooths() -> None:
    model = CostModel(smoothing=0.5)
    assert model.predict("pre", 10) is None  # never measured
    model.observe("pre", 100, 0.001)  # 10 us per unit
    assert model.predict("pre", 50) == 0.0005
    model.observe("pre", 100, 0.003)  # 30 us per unit: halfway there
    assert abs(model.predict("pre", 10) - 0.0002) < 1e-12  # type: ignore[operator]
    assert model.predict("other", 10) is None  # kinds are separate


def where_it_ran(offloader: Offloader, kind: str, size: int, seconds: float) -> str:
    """Name of the thread `offloader` ran a `seconds`-long call on, from inside an event loop."""

    def work() -> str:
        time.sleep(seconds)
        return threading.current_thread().name

    async def main() -> str:
        return await offloader.run(kind, size, work)

    return asyncio.run(main())


def test_cheap_work_moves_inline_after_it_was_measured_and_costly_work_stays_on_a_worker() -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        offloader = Offloader(pool, inline_budget_seconds=0.005)
        assert where_it_ran(offloader, "cheap", 10, 0.0).startswith("worker")  # unknown: measured on a worker
        assert where_it_ran(offloader, "cheap", 10, 0.0) == "MainThread"  # now known to be cheap
        assert where_it_ran(offloader, "cheap", 10**9, 0.0).startswith("worker")  # but a huge input is not
        where_it_ran(offloader, "slow", 10, 0.02)
        assert where_it_ran(offloader, "slow", 10, 0.0).startswith("worker")  # 20 ms > 5 ms budget


def test_text_size_counts_the_characters_of_every_text_field() -> None:
    assert text_size([NextSentenceInput(first="abc", second="de")]) == 5
    items = [QuestionAnsweringInput(question="who?", context="john went home"), NextSentenceInput("a", "b")]
    assert text_size(items) == 4 + 14 + 2
