"""The thread budget, decided once at start-up from the CPUs this process may use.

- torch intra-op threads: one per usable CPU. The encoder's forward is the
  work; a pool bigger than the CPUs (torch sizes it by the node's cores,
  not by a container's CPU limit) makes its threads wait on each other.
- pre/post worker threads: one per usable CPU. Most pre- and postprocessing
  (one sentence) runs inline on the event loop (`offload`); the pool takes
  the large inputs, which then tokenize in parallel with the forward.
- gRPC: one asyncio event loop thread (grpc.aio) for every connection and
  request; gRPC core adds its own polling thread. Neither is configurable.

Usable CPUs are the process's CPU affinity, capped by a cgroup v2 CPU quota
(``cpu.max``, a Kubernetes CPU limit) rounded up. ``OMP_NUM_THREADS``, when
set, still wins for torch (as it does for torch itself); the settings
``server.torch_threads`` and ``server.worker_threads`` win over both.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class ThreadBudget:
    """How many threads each part of the server gets."""

    cpus: int
    torch_threads: int
    worker_threads: int


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_quota(cpu_max)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else max(1, cpus)


def cgroup_quota(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """The CPU quota in CPUs from a cgroup v2 ``cpu.max`` (``"200000 100000"`` is 2.0); None when unlimited."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or float(period) <= 0:
        return None
    return float(quota) / float(period)


def plan(
    cpus: int, *, torch_threads: int | None, worker_threads: int | None, omp_num_threads: str | None
) -> ThreadBudget:
    """The budget for `cpus` CPUs; explicit settings win, then ``OMP_NUM_THREADS`` for torch."""
    torch_count = torch_threads
    if torch_count is None and omp_num_threads and omp_num_threads.strip().isdigit():
        torch_count = int(omp_num_threads)
    return ThreadBudget(
        cpus=cpus, torch_threads=max(1, torch_count or cpus), worker_threads=max(1, worker_threads or cpus)
    )


def decide(torch_threads: int | None, worker_threads: int | None) -> ThreadBudget:
    """The budget for this process, from its CPUs, the environment and the settings."""
    return plan(
        usable_cpus(),
        torch_threads=torch_threads,
        worker_threads=worker_threads,
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
    )


def apply(budget: ThreadBudget) -> None:
    """Size torch's intra-op pool (process-wide) and log the budget."""
    if torch.get_num_threads() != budget.torch_threads:
        torch.set_num_threads(budget.torch_threads)
    log.info(
        "threads: %d usable CPUs; torch %d, pre/post workers %d, gRPC 1 event loop",
        budget.cpus,
        budget.torch_threads,
        budget.worker_threads,
    )
