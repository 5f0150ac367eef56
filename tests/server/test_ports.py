"""Start-up refuses a port it cannot own, with one clear line naming the setting.

gRPC binds with SO_REUSEPORT by default, so a second server on a port in use
would start and silently share its traffic. bertserve binds without it unless
``server.reuse_port`` is on, and a port in use (gRPC, health, metrics, HTTP)
stops start-up with a `StartupError` naming the setting; the ports already
opened are closed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from bertserve.app import BertServeServer
from bertserve.config import MetricsConfig, ServerConfig, StartupError


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port held by a plain listening socket."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


async def _start(config: ServerConfig) -> BertServeServer:
    server = BertServeServer(config)
    await server.start()
    return server


def test_a_grpc_port_held_by_another_grpc_server_is_refused_unless_sharing_is_asked_for(
    tiny_config: ServerConfig,
) -> None:
    async def scenario() -> None:
        other = grpc.aio.server()  # gRPC's defaults: SO_REUSEPORT on, as a stale instance would have
        port = other.add_insecure_port("127.0.0.1:0")
        await other.start()
        try:
            config = dataclasses.replace(tiny_config, host="127.0.0.1", port=port)
            with pytest.raises(StartupError, match=rf"^server.port: cannot listen on 127.0.0.1:{port}: .*in use"):
                await _start(config)
            shared = await _start(dataclasses.replace(config, reuse_port=True))
            assert shared.port == port
            await shared.stop(grace=None)
        finally:
            await other.stop(None)

    asyncio.run(scenario())


def test_a_metrics_port_in_use_is_one_clear_error(tiny_config: ServerConfig, occupied: int) -> None:
    config = dataclasses.replace(tiny_config, metrics=MetricsConfig(host="127.0.0.1", port=occupied))
    with pytest.raises(StartupError, match=rf"^metrics.port: cannot listen on 127.0.0.1:{occupied}: Address already"):
        asyncio.run(_start(config))


def test_ports_opened_before_a_failing_bind_are_closed_again(tiny_config: ServerConfig, occupied: int) -> None:
    config = dataclasses.replace(
        tiny_config, port=occupied, metrics=MetricsConfig(host="127.0.0.1", port=0), health_port=0
    )

    async def scenario() -> BertServeServer:
        server = BertServeServer(config)
        with pytest.raises(StartupError, match="server.port"):
            await server.start()
        return server

    server = asyncio.run(scenario())
    for port in (server.metrics_port, server.health_port):
        assert port
        with socket.create_server(("127.0.0.1", port)):  # free again: the failed start closed it
            pass


def test_serve_on_a_port_in_use_exits_with_one_line_and_no_traceback(occupied: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bertserve", "serve", "--port", str(occupied), "--host", "127.0.0.1", "--no-metrics"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"start-up error: server.port: cannot listen on 127.0.0.1:{occupied}: "), result.stderr
    assert "server.reuse_port" in last
