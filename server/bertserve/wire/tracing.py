"""Whether to trace, and what a request tracer does: OpenTelemetry is not even imported unless asked for.

Tracing is on when the standard variables ask for it: ``OTEL_TRACES_EXPORTER``
names an exporter other than ``none``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; ``OTEL_SDK_DISABLED=true``
turns it off whatever else is set. An embedding application (or a test) can
pass its own tracer provider instead. When off, the server has no tracing
interceptor and no OpenTelemetry module is loaded. When on but the packages
are missing (the ``tracing`` extra), start-up stops with one line saying so.
The OpenTelemetry side itself is `bertserve.wire.otel`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any, Protocol

import grpc

from bertserve.config import StartupError
from bertserve.runtime.request_context import RequestContext

MISSING_PACKAGES = (
    "tracing is on (OTEL_* variables) but the OpenTelemetry packages are not installed ({name} is missing): "
    "pip install 'bertserve[tracing]', or unset the OTEL_* variables"
)


class RequestTracer(Protocol):
    """What the request interceptor asks of tracing."""

    @property
    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The gRPC server interceptor that makes each call's server span (it runs outside bertserve's)."""
        ...

    def begin(self, request: RequestContext) -> None:
        """A call starts under its server span: note its trace id on `request` (for the log line)."""
        ...

    def finish(self, request: RequestContext, code: grpc.StatusCode) -> None:
        """A call ends with `code`: give its server span the code, and make its spans from `request.timings`."""
        ...

    def shutdown(self) -> None:
        """Send what is buffered; the server is stopping."""
        ...


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables in `environ` ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = exporter_names(environ.get("OTEL_TRACES_EXPORTER", ""))
    if environ.get("OTEL_TRACES_EXPORTER", "").strip():
        return bool(exporters)
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def exporter_names(value: str) -> list[str]:
    """The exporters an ``OTEL_TRACES_EXPORTER`` value names (comma-separated), ``none`` left out."""
    return [name.strip().lower() for name in value.split(",") if name.strip() and name.strip().lower() != "none"]


def setup_tracing(environ: Mapping[str, str] | None = None, *, tracer_provider: Any = None) -> RequestTracer | None:
    """The server's tracer, or None when tracing is off.

    `tracer_provider` (an OpenTelemetry ``TracerProvider``) turns tracing on
    with that provider; otherwise the provider is built from the standard
    variables (`otel.provider_from_environment`).
    """
    environ = os.environ if environ is None else environ
    if tracer_provider is None and not tracing_requested(environ):
        return None
    try:
        otel = importlib.import_module("bertserve.wire.otel")
    except ImportError as error:
        raise StartupError(MISSING_PACKAGES.format(name=error.name or "opentelemetry")) from None
    if tracer_provider is not None:
        tracer: RequestTracer = otel.OtelTracer(tracer_provider)
    else:
        tracer = otel.OtelTracer(otel.provider_from_environment(environ), owned=True)
    return tracer
