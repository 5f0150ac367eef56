"""Freed memory goes back to the OS once the server is idle."""

from __future__ import annotations

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
