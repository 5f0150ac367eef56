"""The short versions of the reliability scripts (scripts/reliability/), on the offline default model.

`soak.py`: a minute of mixed traffic leaves resident memory within 10% of
its level after warm-up. `overload.py`: 30 s at twice the measured capacity,
every request answered once with OK, RESOURCE_EXHAUSTED (with a retry
delay) or DEADLINE_EXCEEDED, then the retrying client at the same rate with
every request succeeding. The long versions are the same scripts with longer
durations (docs/reliability.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bertserve.model.default_model import default_model_path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "reliability"


def _run(script: str, *args: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=timeout, cwd=SCRIPTS
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module", autouse=True)
def _default_model() -> None:
    try:
        default_model_path()
    except Exception as error:  # noqa: BLE001 - the reason is the skip message
        pytest.skip(f"the offline default model is not installed: {error}")


def test_soak_keeps_resident_memory_within_ten_percent() -> None:
    out = _run("soak.py", "--seconds", "60", "--warmup-seconds", "20", "--window-seconds", "10", timeout=400)
    assert "rss MiB: start" in out and "FAILED" not in out


def test_overload_at_twice_capacity_answers_every_request_once() -> None:
    out = _run("overload.py", "--seconds", "30", "--retry-seconds", "10", "--measure-seconds", "6", timeout=400)
    assert "sent " in out and "FAILED" not in out
