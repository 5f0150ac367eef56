"""Run a server on its own event-loop thread: for tests and synchronous programs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from bertserve.app import BertServeServer, create_server
from bertserve.config import ServerConfig
from bertserve.runtime.runner import Runtime


class BackgroundServer:
    """A loaded server on a daemon thread; use as a context manager.

    >>> with BackgroundServer(ServerConfig(model=path, port=0)) as server:
    ...     client = BertServeClient(server.address)
    """

    def __init__(
        self, config: ServerConfig, *, plugins: Iterable[tuple[str, object]] | None = None, tracer_provider: Any = None
    ) -> None:
        self._config = config
        self._plugins = plugins
        self._tracer_provider = tracer_provider  # an OpenTelemetry TracerProvider: tracing on (tests)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bertserve-server", daemon=True)
        self._server: BertServeServer | None = None
        self.port: int = 0

    @property
    def address(self) -> str:
        return f"{self._config.host}:{self.port}"

    @property
    def runtime(self) -> Runtime:
        assert self._server is not None
        return self._server.runtime

    @property
    def http_address(self) -> str | None:
        """``host:port`` of the HTTP/JSON door, or None when it is off."""
        assert self._server is not None
        port = self._server.http_port
        return f"{self._config.http.host}:{port}" if port is not None else None

    def call(self, coroutine: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        try:
            self._server, self.port = self.call(
                create_server(self._config, plugins=self._plugins, tracer_provider=self._tracer_provider)
            )
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self.call(self._server.stop(grace=1.0), timeout=30)
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
