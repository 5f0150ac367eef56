"""Server assembly: plugins, gRPC services, health, reflection, and the load sequence.

`start()` discovers the plugins, adds every registered service (the built-in
ones come through the same hook), and starts serving with health
NOT_SERVING and task RPCs UNAVAILABLE. `load()` then loads the encoder and
the heads and turns health SERVING per service. Tests and embedding
applications bind port 0 and read the port back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import __version__
from .batcher import Batcher
from .config import ServerConfig
from .default_model import default_model_path
from .encoder import SharedEncoder
from .errors import NotServing
from .interceptor import ErrorMappingInterceptor
from .plugin_manager import HeadRegistry, HeadState, Plugin, discover_plugins, load_heads, register_plugins
from .runtime import Runtime
from .services import builtin

log = logging.getLogger(__name__)

_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def server_plugins(
    config: ServerConfig, plugins: Iterable[Plugin | tuple[str, object]] | None = None
) -> list[Plugin | tuple[str, object]]:
    """The built-in services plugin, then `plugins` (default: entry-point discovery)."""
    core = Plugin(builtin.PLUGIN_NAME, builtin, "bertserve", __version__)
    found = discover_plugins(config.plugin_entry_point_group) if plugins is None else plugins
    return [core, *found]


def load_encoder(config: ServerConfig) -> SharedEncoder:
    """The configured encoder (default: the offline all-MiniLM-L6-v2)."""
    return SharedEncoder.load(
        config.model or str(default_model_path()),
        device=config.device,
        dtype=config.dtype,
        max_sequence_length=config.max_sequence_length,
    )


class _LazyRuntime:
    """Hands the runtime to servicers once loaded; UNAVAILABLE before that."""

    def __init__(self) -> None:
        self.value: Runtime | None = None

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        runtime = self.__dict__.get("value")
        if runtime is None:
            raise NotServing("the server is still loading the encoder and heads; retry shortly")
        return getattr(runtime, name)


class BertServeServer:
    """A bertserve gRPC server: `start()`, then `load()`, then `stop()`.

    `plugins` replaces entry-point discovery (tests, embedding applications);
    the built-in services are always registered.
    """

    def __init__(self, config: ServerConfig, *, plugins: Iterable[Plugin | tuple[str, object]] | None = None) -> None:
        self.config = config
        self._plugins = list(plugins) if plugins is not None else None
        self._runtime = _LazyRuntime()
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        self._registry: HeadRegistry | None = None
        self.port: int | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime.value is None:
            raise RuntimeError("the server has not loaded yet")
        return self._runtime.value

    async def start(self) -> int:
        """Register plugins and services, bind, and serve health and reflection; returns the port."""
        self._registry = registry = register_plugins(self.config, server_plugins(self.config, self._plugins))
        for problem in registry.problems:
            log.error("plugin %s not loaded: %s", problem.plugin, problem.error)
        for service in registry.services:
            service.add_to_server(self._server, self._runtime)  # type: ignore[arg-type]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [service.name for service in registry.services]
        reflection.enable_server_reflection([*names, _HEALTH_SERVICE, reflection.SERVICE_NAME], self._server)
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        await self._server.start()
        log.info("listening on %s:%d (loading)", self.config.host, self.port)
        return self.port

    async def load(self) -> Runtime:
        """Load the encoder and heads, start the batcher, and report SERVING."""
        config, registry = self.config, self._registry
        assert registry is not None, "start() first"
        encoder = await asyncio.to_thread(load_encoder, config)
        await asyncio.to_thread(load_heads, registry, encoder, config)
        batcher = Batcher(encoder, config.batching)
        await asyncio.to_thread(batcher.calibrate)
        batcher.start()
        runtime = Runtime(config=config, encoder=encoder, registry=registry, batcher=batcher)
        self._runtime.value = runtime
        await self._report_health(registry)
        return runtime

    async def _report_health(self, registry: HeadRegistry) -> None:
        loaded = {r.head.name for r in registry.records() if r.state is HeadState.LOADED}
        for service in registry.services:
            serving = set(service.heads) <= loaded
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            await self._health.set(service.name, status)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %s; heads loaded: %s", self.port, ", ".join(sorted(loaded)) or "none")

    async def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, finish in-flight RPCs within `grace` seconds, stop."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._runtime.value is not None:
            await self._runtime.value.close()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def create_server(
    config: ServerConfig, *, plugins: Iterable[Plugin | tuple[str, object]] | None = None
) -> tuple[BertServeServer, int]:
    """Start a server and load it; returns it with its bound port (use port 0 in tests)."""
    server = BertServeServer(config, plugins=plugins)
    port = await server.start()
    try:
        await server.load()
    except BaseException:
        await server.stop(grace=None)
        raise
    return server, port
