"""Freed memory goes back to the OS once the server is idle."""

from __future__ import annotations

import ctypes
import time

from bertserve.background import BackgroundServer
from bertserve.runtime import memory
from bertserve_client import BertServeClient


def test_release_free_memory_runs_where_glibc_is() -> None:
    released = memory.release_free_memory()
    assert isinstance(released, bool)


def test_the_batcher_releases_memory_once_idle_after_forwards(server: BackgroundServer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[float] = []
    monkeypatch.setattr("bertserve.runtime.batcher.IDLE_TRIM_SECONDS", 0.2)
    monkeypatch.setattr("bertserve.runtime.batcher.release_free_memory", lambda: calls.append(time.monotonic()) or True)
    with BertServeClient(server.address) as client:
        client.sentiment("a good film")  # the batcher's next wait starts with the new idle time
        client.sentiment("a good film")
        sent = time.monotonic()
        deadline = sent + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls and calls[0] - sent >= 0.15, "released once idle, not while requests came in"
        time.sleep(0.6)
        assert len(calls) == 1, "released once per idle spell, not again without new forwards"


def test_the_mmap_threshold_is_fixed_unless_glibcs_own_variable_sets_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[tuple[int, int]] = []

    def mallopt(parameter: int, value: int) -> int:
        calls.append((parameter, value))
        return 1

    monkeypatch.setattr(memory, "_glibc", lambda name, *argtypes: mallopt if name == "mallopt" else None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert memory.cap_mmap_threshold() is True
    assert calls == [(-3, memory.MMAP_THRESHOLD_BYTES)]  # M_MMAP_THRESHOLD in glibc's malloc.h
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.cap_mmap_threshold() is False
    assert len(calls) == 1


def test_cap_mmap_threshold_is_accepted_where_glibc_is(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    glibc = memory._glibc("mallopt", ctypes.c_int, ctypes.c_int) is not None
    assert memory.cap_mmap_threshold() is glibc  # mallopt returns 1 when it took the value
