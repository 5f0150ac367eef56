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
import time
from collections.abc import Iterable
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bertserve.config import ServerConfig, StartupError
from bertserve.model.default_model import default_model_path
from bertserve.model.encoder import SharedEncoder
from bertserve.model.hub import HubError
from bertserve.model.plugins import discover_plugins, load_heads, register_plugins
from bertserve.model.registry import HeadRecord, HeadRegistry, HeadState, Plugin
from bertserve.plugin.errors import NotServing
from bertserve.ports import bind_error, bind_grpc
from bertserve.runtime import threads
from bertserve.runtime.admission import Admission, ServingState
from bertserve.runtime.batcher import Batcher
from bertserve.runtime.memory import cap_mmap_threshold, release_free_memory
from bertserve.runtime.metrics import MetricsEndpoint, ServerMetrics
from bertserve.runtime.runner import Runtime
from bertserve.runtime.stall import StuckForward
from bertserve.version import __version__
from bertserve.wire.http import HttpGatewayServer
from bertserve.wire.interceptor import RequestInterceptor
from bertserve.wire.security import AuthInterceptor, TokenStore, current_principal, server_credentials
from bertserve.wire.services import builtin
from bertserve.wire.tracing import setup_tracing

log = logging.getLogger(__name__)

_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

LIVENESS_SERVICE = "liveness"
"""A health service name that is SERVING from start until exit: for liveness probes."""


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC server options: port sharing, message size limits, keepalive (clients ping every 10 s), connection age."""
    age = []
    if config.max_connection_age_seconds is not None:
        age = [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.shutdown_grace_seconds * 1000)),
        ]
    return [
        *age,
        ("grpc.so_reuseport", int(config.reuse_port)),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def server_plugins(
    config: ServerConfig, plugins: Iterable[Plugin | tuple[str, object]] | None = None
) -> list[Plugin | tuple[str, object]]:
    """The built-in services plugin, then `plugins` (default: entry-point discovery)."""
    core = Plugin(builtin.PLUGIN_NAME, builtin, "bertserve", __version__)
    found = discover_plugins(config.plugin_entry_point_group) if plugins is None else plugins
    return [core, *found]


def load_encoder(config: ServerConfig) -> SharedEncoder:
    """The configured encoder (default: the offline all-MiniLM-L6-v2).

    A hub id is read at `config.revision` from the hub cache
    `config.cache_dir`, fetched when missing with download bars on stderr
    (`LoggingConfig.progress_bars`). A
    model neither in the cache nor on the hub raises `StartupError`.
    """
    try:
        return SharedEncoder.load(
            config.model or str(default_model_path()),
            device=config.device,
            dtype=config.dtype,
            max_sequence_length=config.max_sequence_length,
            revision=config.revision,
            cache_dir=config.cache_dir,
            progress=config.logging.progress_bars,
        )
    except HubError as error:
        raise StartupError(f"model.name: {error}") from None


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
    the built-in services are always registered. Tracing is on when the
    OTEL_* variables ask for it, or with a `tracer_provider` of one's own
    (`bertserve.wire.tracing`).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        plugins: Iterable[Plugin | tuple[str, object]] | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.config = config
        self._plugins = list(plugins) if plugins is not None else None
        self._runtime = _LazyRuntime()
        self._health = health.aio.HealthServicer()
        # Bad TLS files or tokens fail here, before anything binds.
        self._credentials = server_credentials(config.security)
        self.tokens = TokenStore.from_config(config.security)
        self.metrics = ServerMetrics()
        self.admission = Admission(config.max_concurrent_requests, self._retry_delay, self.metrics)
        self._tracing = setup_tracing(tracer_provider=tracer_provider)
        interceptors: list[grpc.aio.ServerInterceptor] = [] if self._tracing is None else [self._tracing.interceptor]
        interceptors.append(
            RequestInterceptor(self.admission, self.metrics, principal=current_principal.get, tracing=self._tracing)
        )
        if self.tokens is not None:
            interceptors.append(AuthInterceptor(self.tokens, public_reflection=config.security.public_reflection))
        self._server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._health_server: grpc.aio.Server | None = None
        self._http = HttpGatewayServer(config, self.tokens) if config.http.port is not None else None
        self.health_port: int | None = None
        self.stuck_forward = asyncio.Event()  # set while a forward runs past forward_timeout_seconds
        self._registry: HeadRegistry | None = None
        self.port: int | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime.value is None:
            raise RuntimeError("the server has not loaded yet")
        return self._runtime.value

    async def start(self) -> int:
        """Register plugins and services, bind, and serve health and reflection; returns the port.

        A port that cannot be bound raises `StartupError` naming its setting,
        after closing the ports already open.
        """
        try:
            return await self._start()
        except BaseException:
            await self.stop(grace=None)
            raise

    async def _start(self) -> int:
        self._registry = registry = register_plugins(self.config, server_plugins(self.config, self._plugins))
        for service in list(registry.services):
            try:
                service.add_to_server(self._server, self._runtime)  # type: ignore[arg-type]
            except Exception as error:
                log.exception("service %s could not be added", service.name)
                registry.drop_service(service, f"add_to_server of {service.name} raised: {error!r}")
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [service.name for service in registry.services]
        reflection.enable_server_reflection([*names, _HEALTH_SERVICE, reflection.SERVICE_NAME], self._server)
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._start_metrics_endpoint()
        await self._start_health_port()
        self.port = bind_grpc(self._add_port, "server.port", self.config.host, self.config.port)
        if self._http is not None:
            self._http.attach(self._server)
        await self._server.start()
        security = self.config.security
        transport = "mutual TLS" if security.tls_client_ca else "TLS" if security.tls else "plaintext"
        access = f"{len(self.tokens)} bearer tokens" if self.tokens is not None else "no authentication"
        log.info("listening on %s:%d (loading; %s, %s)", self.config.host, self.port, transport, access)
        if self._http is not None:
            try:
                await self._http.start(names, self.port)
            except OSError as error:
                raise bind_error("http.port", self.config.http.host, self.config.http.port, error) from None
        return self.port

    def _add_port(self, address: str) -> int:
        if self._credentials is not None:
            return self._server.add_secure_port(address, self._credentials)
        return self._server.add_insecure_port(address)

    async def load(self) -> Runtime:
        """Load the encoder and heads, start the batcher, and report SERVING."""
        config, registry = self.config, self._registry
        assert registry is not None, "start() first"
        budget = threads.decide(config.torch_threads, config.worker_threads)
        threads.apply(budget)
        cap_mmap_threshold()  # large buffers mapped on their own: no heap fragmentation (runtime.memory)
        encoder = await asyncio.to_thread(load_encoder, config)
        await asyncio.to_thread(load_heads, registry, encoder, config)
        batcher = Batcher(
            encoder,
            config.batching,
            self.metrics,
            origin=registry.origin,
            forward_timeout=config.forward_timeout_seconds,
            listener=self,
        )
        batcher.start()
        runtime = Runtime(
            config=config,
            encoder=encoder,
            registry=registry,
            batcher=batcher,
            worker_threads=budget.worker_threads,
            serving=lambda: self.admission.state is ServingState.SERVING and batcher.stuck is None,
        )
        if config.warmup:
            started = time.perf_counter()
            warmed = await runtime.warm_up()
            log.info("warmed up %s in %.0f ms", ", ".join(warmed) or "no head", 1000 * (time.perf_counter() - started))
        await asyncio.to_thread(release_free_memory)  # loading's temporary copies
        self._runtime.value = runtime
        self._register_gauges(encoder, registry)
        self.admission.state = ServingState.SERVING
        if batcher.stuck is None:  # else forward_recovered reports SERVING
            self.metrics.ready.set(1)
            await self._report_health(registry)
        return runtime

    async def forward_stuck(self, forward: StuckForward) -> None:
        """A forward is stuck (`runtime.stall`): health and liveness NOT_SERVING until it returns."""
        self.metrics.ready.set(0)
        services = self._registry.services if self._registry is not None else []
        for name in ["", LIVENESS_SERVICE, *(service.name for service in services)]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.stuck_forward.set()

    async def forward_recovered(self, forward: StuckForward, seconds: float) -> None:
        """The stuck forward returned: liveness SERVING, and health too unless the server is draining."""
        self.stuck_forward.clear()
        await self._health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.admission.state is ServingState.SERVING and self._registry is not None:
            self.metrics.ready.set(1)
            await self._report_health(self._registry)

    def _retry_delay(self) -> float:
        runtime = self._runtime.value
        return runtime.batcher.retry_delay() if runtime is not None else 1.0

    def _start_metrics_endpoint(self) -> None:
        settings = self.config.metrics
        if settings.port is None:
            return
        tokens = self.tokens
        authorize = tokens.check_authorization_header if tokens and self.config.security.metrics_require_token else None
        try:
            self._metrics_endpoint = MetricsEndpoint(self.metrics, settings.host, settings.port, authorize=authorize)
        except OSError as error:
            raise bind_error("metrics.port", settings.host, settings.port, error) from None
        self._metrics_endpoint.start()
        log.info("metrics on http://%s:%d/metrics", settings.host, self._metrics_endpoint.port)

    async def _start_health_port(self) -> None:
        if self.config.health_port is None:
            return
        self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", int(self.config.reuse_port))])
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
        add_port = self._health_server.add_insecure_port
        self.health_port = bind_grpc(add_port, "server.health_port", self.config.host, self.config.health_port)
        await self._health_server.start()
        log.info("plaintext health on %s:%d", self.config.host, self.health_port)

    @property
    def http_port(self) -> int | None:
        """The bound port of the HTTP/JSON gateway, or None when it is off."""
        return self._http.port if self._http is not None else None

    @property
    def metrics_port(self) -> int | None:
        """The bound port of the metrics endpoint, or None when it is off."""
        return self._metrics_endpoint.port if self._metrics_endpoint is not None else None

    def _register_gauges(self, encoder: SharedEncoder, registry: HeadRegistry) -> None:
        metrics = self.metrics
        metrics.info.labels(__version__, encoder.model_name).set(1)
        runtime = self._runtime.value
        if runtime is not None:
            metrics.queue_rows.set_function(lambda: runtime.batcher.queued_rows)
        metrics.in_flight.set_function(lambda: self.admission.in_flight)
        device = str(encoder.device)
        modules = [encoder.bert] + [module for record in registry.records() for module in _head_modules(record)]
        weights = {id(p): p.numel() * p.element_size() for module in modules for p in module.parameters()}
        metrics.device_memory.labels(device, "weights").set(sum(weights.values()))
        if encoder.device.type == "cuda":
            index = encoder.device
            metrics.device_memory.labels(device, "allocated").set_function(lambda: torch.cuda.memory_allocated(index))
            metrics.device_memory.labels(device, "reserved").set_function(lambda: torch.cuda.memory_reserved(index))

    async def _report_health(self, registry: HeadRegistry) -> None:
        loaded = {r.head.name for r in registry.records() if r.state is HeadState.LOADED}
        for service in registry.services:
            serving = set(service.heads) <= loaded
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            await self._health.set(service.name, status)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %s; heads loaded: %s", self.port, ", ".join(sorted(loaded)) or "none")

    async def drain(self, grace: float) -> bool:
        """Stop taking work: health NOT_SERVING, new calls UNAVAILABLE, and wait for the accepted ones.

        Returns True when every accepted request was answered within `grace`
        seconds. The liveness health service stays SERVING: the process is
        healthy, it is just leaving.
        """
        self.metrics.ready.set(0)
        services = self._registry.services if self._registry is not None else []
        for name in ["", *(service.name for service in services)]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        in_flight = self.admission.in_flight
        log.info("draining: %d requests in progress, up to %.1f s to finish", in_flight, grace)
        finished = await self.admission.drain(grace)
        if finished:
            log.info("drained: all accepted requests answered")
        else:
            log.warning("grace period over with %d requests still in progress", self.admission.in_flight)
        return finished

    async def stop(self, grace: float | None = 5.0) -> None:
        """Drain for up to `grace` seconds, then close the port and release the encoder."""
        if grace:
            await self.drain(grace)
        await self._health.enter_graceful_shutdown()
        if self._http is not None:
            await self._http.stop()
        await self._server.stop(1.0 if grace else None)
        if self._runtime.value is not None:
            await self._runtime.value.close()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.stop()
        if self._health_server is not None:
            await self._health_server.stop(None)
        if self._tracing is not None:
            await asyncio.to_thread(self._tracing.shutdown)  # sends the buffered spans

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def _head_modules(record: HeadRecord) -> list[torch.nn.Module]:
    """A loaded head's weight modules; a head whose `modules()` fails counts for none (and is logged)."""
    if record.state is not HeadState.LOADED:
        return []
    try:
        return [module for module in record.head.modules() if isinstance(module, torch.nn.Module)]
    except Exception:
        log.warning("%s: modules() raised; its weights are left out of the memory metric", record.origin, exc_info=True)
        return []


async def create_server(
    config: ServerConfig, *, plugins: Iterable[Plugin | tuple[str, object]] | None = None, tracer_provider: Any = None
) -> tuple[BertServeServer, int]:
    """Start a server and load it; returns it with its bound port (use port 0 in tests)."""
    server = BertServeServer(config, plugins=plugins, tracer_provider=tracer_provider)
    port = await server.start()
    try:
        await server.load()
    except BaseException:
        await server.stop(grace=None)
        raise
    return server, port
