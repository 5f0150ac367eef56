"""Server assembly: gRPC services, health, reflection, and the load sequence.

The gRPC server starts first (health NOT_SERVING, task RPCs UNAVAILABLE),
then the encoder and heads load, then health turns SERVING. Tests and
embedding applications bind port 0 and read the port back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from bertserve_client.v1 import (
    fill_mask_pb2,
    fill_mask_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    next_sentence_pb2,
    next_sentence_pb2_grpc,
    question_answering_pb2,
    question_answering_pb2_grpc,
    sentiment_pb2,
    sentiment_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import __version__
from .batcher import Batcher
from .config import ServerConfig
from .default_model import default_model_path
from .encoder import SharedEncoder
from .errors import NotServing
from .interceptor import ErrorMappingInterceptor
from .plugin_manager import HeadRegistry, HeadState, discover_plugins, load_heads, register_heads
from .runtime import Runtime
from .services.model import ModelService
from .services.tasks import FillMaskService, NextSentenceService, QuestionAnsweringService, SentimentService

log = logging.getLogger(__name__)

# Each task service and the task whose default head it needs.
_TASK_SERVICES = {
    fill_mask_pb2.DESCRIPTOR.services_by_name["FillMaskService"].full_name: "fill-mask",
    next_sentence_pb2.DESCRIPTOR.services_by_name["NextSentenceService"].full_name: "next-sentence",
    sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].full_name: "sentiment",
    question_answering_pb2.DESCRIPTOR.services_by_name["QuestionAnsweringService"].full_name: "question-answering",
}
_MODEL_SERVICE = model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


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
    """A bertserve gRPC server: `start()`, then `load()`, then `stop()`."""

    def __init__(self, config: ServerConfig, *, plugins: Iterable[tuple[str, object]] | None = None) -> None:
        self.config = config
        self._plugins = list(plugins) if plugins is not None else None
        self._runtime = _LazyRuntime()
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        self.port: int | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime.value is None:
            raise RuntimeError("the server has not loaded yet")
        return self._runtime.value

    async def start(self) -> int:
        """Bind and start serving health and reflection; returns the bound port."""
        runtime = self._runtime  # servicers resolve it per call
        fill_mask_pb2_grpc.add_FillMaskServiceServicer_to_server(FillMaskService(runtime), self._server)  # type: ignore[arg-type]
        next_sentence_pb2_grpc.add_NextSentenceServiceServicer_to_server(NextSentenceService(runtime), self._server)  # type: ignore[arg-type]
        sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(SentimentService(runtime), self._server)  # type: ignore[arg-type]
        question_answering_pb2_grpc.add_QuestionAnsweringServiceServicer_to_server(
            QuestionAnsweringService(runtime),
            self._server,  # type: ignore[arg-type]
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(runtime, __version__), self._server)  # type: ignore[arg-type]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        service_names = [*_TASK_SERVICES, _MODEL_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable_server_reflection([*service_names, reflection.SERVICE_NAME], self._server)
        for name in ["", *_TASK_SERVICES, _MODEL_SERVICE]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        await self._server.start()
        log.info("listening on %s:%d (loading)", self.config.host, self.port)
        return self.port

    async def load(self) -> Runtime:
        """Load the encoder and heads, start the batcher, and report SERVING."""
        config = self.config
        model = config.model or str(default_model_path())
        encoder = await asyncio.to_thread(
            SharedEncoder.load,
            model,
            device=config.device,
            dtype=config.dtype,
            max_sequence_length=config.max_sequence_length,
        )
        plugins = self._plugins if self._plugins is not None else discover_plugins(config.plugin_entry_point_group)
        registry = register_heads(config, plugins)
        for problem in registry.problems:
            log.error("plugin %s not loaded: %s", problem.plugin, problem.error)
        await asyncio.to_thread(load_heads, registry, encoder, config)
        batcher = Batcher(encoder, config.batching)
        batcher.start()
        runtime = Runtime(config=config, encoder=encoder, registry=registry, batcher=batcher)
        self._runtime.value = runtime
        await self._report_health(registry)
        return runtime

    async def _report_health(self, registry: HeadRegistry) -> None:
        loaded_tasks = {r.head.name for r in registry.records() if r.state is HeadState.LOADED}
        for service, task in _TASK_SERVICES.items():
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if task in loaded_tasks
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await self._health.set(service, status)
        await self._health.set(_MODEL_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %s; heads loaded: %s", self.port, ", ".join(sorted(loaded_tasks)) or "none")

    async def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, finish in-flight RPCs within `grace` seconds, stop."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._runtime.value is not None:
            await self._runtime.value.batcher.stop()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def create_server(
    config: ServerConfig, *, plugins: Iterable[tuple[str, object]] | None = None
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


__all__ = ["BertServeServer", "create_server"]
