"""A gate that holds a live server's encoder forward shut, and a polling wait: for tests of queues and limits."""

from __future__ import annotations

import threading
import time
from typing import Any

from bertserve.background import BackgroundServer


class EncoderGate:
    """Makes the server's encoder forward wait until `open()`; counts the rows it really ran."""

    def __init__(self, server: BackgroundServer) -> None:
        self.encoder = server.runtime.encoder
        self.batcher = server.runtime.batcher
        self._original = self.encoder.forward_packed
        self._open = threading.Event()
        self.entered = threading.Event()
        self.rows_run = 0

        def gated(rows: Any) -> Any:
            self.entered.set()
            self._open.wait(30)
            self.rows_run += len(rows)
            return self._original(rows)

        self.encoder.forward_packed = gated  # type: ignore[method-assign]

    def open(self) -> None:
        self._open.set()

    def restore(self) -> None:
        self._open.set()
        self.encoder.forward_packed = self._original  # type: ignore[method-assign]


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
