"""Traces with OpenTelemetry: the gRPC server span, and the queue, encoder and head spans under it.

Imported only when tracing is on (`bertserve.wire.tracing`). The server span
is opentelemetry-instrumentation-grpc's grpc.aio server interceptor (it
continues an incoming ``traceparent``; health and reflection are left out);
it gets the call's gRPC status code here (``rpc.grpc.status_code``, and an
error status for the server's own failures).
A batch serves many requests on the inference thread, so a request's other
spans are made after the fact, when its call ends, with the start and end
times the runtime recorded (`bertserve.runtime.timing`). Per batch that
carried its rows, as children of the server span:

- ``bertserve.queue_wait``: from its rows entering the queue until that batch started;
- ``bertserve.encoder_forward``: the shared encoder on the whole batch;
- ``bertserve.head_forward``: each head that read its rows, on its rows of the batch.

Attributes: ``bertserve.head`` / ``bertserve.heads``, ``bertserve.rows`` and
``bertserve.tokens`` (the request's rows in the batch; on a head span, the
head's), ``bertserve.batch.rows`` and ``bertserve.batch.tokens``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import grpc
from opentelemetry import context as otel_context, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from bertserve.config import StartupError
from bertserve.runtime.request_context import RequestContext
from bertserve.runtime.timing import BatchShare
from bertserve.version import __version__
from bertserve.wire.tracing import exporter_names

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "bertserve"
_EXPORTER_GROUP = "opentelemetry_traces_exporter"
_OTLP = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
# The codes that make a server span an error (OpenTelemetry's gRPC conventions); the others are the caller's.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# perf_counter seconds -> epoch nanoseconds, measured once.
_EPOCH_NS = time.time_ns() - int(time.perf_counter() * 1e9)


def _ns(perf: float) -> int:
    return _EPOCH_NS + int(perf * 1e9)


class OtelTracer:
    """The `RequestTracer` of OpenTelemetry, on `provider` (shut down with the server when `owned`)."""

    def __init__(self, provider: trace.TracerProvider, *, owned: bool = False) -> None:
        self._provider = provider
        self._owned = owned
        self._tracer = provider.get_tracer("bertserve", __version__)
        self.interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(
            tracer_provider=provider, filter_=filters.negate(filters.service_prefix("grpc."))
        )

    def begin(self, request: RequestContext) -> None:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            request.trace_id = trace.format_trace_id(span_context.trace_id)

    def finish(self, request: RequestContext, code: grpc.StatusCode) -> None:
        span = trace.get_current_span()
        if not span.is_recording():  # no server span, or not sampled
            return
        # bertserve answers errors with abort_with_status, which the instrumentation does not see.
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
        parent = trace.set_span_in_context(span)
        try:
            for share in list(request.timings.batches):
                self._batch_spans(share, parent)
        except Exception:  # tracing must never fail a request
            log.warning("could not record the spans of request %s", request.request_id, exc_info=True)

    def _batch_spans(self, share: BatchShare, parent: otel_context.Context) -> None:
        batch = share.batch
        whole = {"bertserve.batch.rows": batch.rows, "bertserve.batch.tokens": batch.tokens}
        mine = {"bertserve.rows": share.rows, "bertserve.tokens": share.tokens, **whole}
        heads = {"bertserve.heads": sorted(share.heads)}
        self._span("bertserve.queue_wait", parent, share.queued, batch.start, {**mine, **heads})
        self._span("bertserve.encoder_forward", parent, batch.start, batch.encoder_end, {**mine, **heads})
        for head in batch.heads:
            if head.head in share.heads:
                attributes = {"bertserve.head": head.head, "bertserve.rows": head.rows, "bertserve.tokens": head.tokens}
                self._span("bertserve.head_forward", parent, head.start, head.end, {**attributes, **whole})

    def _span(
        self, name: str, parent: otel_context.Context, start: float, end: float, attributes: dict[str, Any]
    ) -> None:
        span = self._tracer.start_span(name, context=parent, start_time=_ns(start), attributes=attributes)
        span.end(end_time=_ns(max(start, end)))

    def shutdown(self) -> None:
        if self._owned and isinstance(self._provider, TracerProvider):
            self._provider.shutdown()


def provider_from_environment(environ: Mapping[str, str]) -> TracerProvider:
    """A tracer provider configured by the standard variables, with a batch processor per exporter.

    The SDK reads the resource (``OTEL_SERVICE_NAME``, default ``bertserve``;
    ``OTEL_RESOURCE_ATTRIBUTES``), the sampler (``OTEL_TRACES_SAMPLER``) and
    the batching (``OTEL_BSP_*``); each exporter reads its own
    (``OTEL_EXPORTER_OTLP_*``). ``otlp`` (the default) is OTLP over gRPC, or
    over HTTP with ``OTEL_EXPORTER_OTLP(_TRACES)_PROTOCOL=http/protobuf``.
    """
    named = "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "") or environ.get("OTEL_SERVICE_NAME")
    provider = TracerProvider(resource=Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    for name in exporter_names(environ.get("OTEL_TRACES_EXPORTER", "")) or ["otlp"]:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    """The installed exporter `name` (``otlp``, ``console``, or any package's), built from its entry point."""
    if name == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        name = _OTLP.get((protocol or "grpc").strip().lower(), "otlp_proto_grpc")
    found = {point.name: point for point in entry_points(group=_EXPORTER_GROUP)}
    if name not in found:
        raise StartupError(
            f"OTEL_TRACES_EXPORTER asks for the trace exporter {name!r}, which no installed package provides "
            f"(installed: {', '.join(sorted(found)) or 'none'}); pip install 'bertserve[tracing]'"
        )
    try:
        exporter: SpanExporter = found[name].load()()
    except ImportError as error:
        raise StartupError(f"the trace exporter {name!r} cannot be loaded: {error}") from None
    return exporter
