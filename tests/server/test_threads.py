"""The thread budget: CPUs from affinity and cgroup quota, and who wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from bertserve.runtime.threads import cgroup_quota, plan, usable_cpus


@pytest.mark.parametrize(
    ("content", "quota"),
    [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("max 100000", None), ("garbage", None)],
)
def test_cgroup_quota_reads_cpu_max(tmp_path: Path, content: str, quota: float | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_quota(cpu_max) == quota


def test_a_quota_caps_the_cpus_rounded_up(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(tmp_path / "missing") >= 1
    cpu_max.write_text("50000 100000")  # half a CPU still gets one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{1000 * 100000} 100000")  # a quota above the affinity does not add CPUs
    assert usable_cpus(cpu_max) == usable_cpus(tmp_path / "missing")


def test_settings_win_then_omp_num_threads_then_cpus() -> None:
    assert plan(4, torch_threads=None, worker_threads=None, omp_num_threads=None) == plan(
        4, torch_threads=4, worker_threads=4, omp_num_threads=None
    )
    budget = plan(4, torch_threads=None, worker_threads=None, omp_num_threads="2")
    assert (budget.torch_threads, budget.worker_threads) == (2, 4)
    budget = plan(4, torch_threads=3, worker_threads=1, omp_num_threads="2")
    assert (budget.torch_threads, budget.worker_threads) == (3, 1)
    assert plan(4, torch_threads=None, worker_threads=None, omp_num_threads="junk").torch_threads == 4
