"""OpenTelemetry tracing: the gRPC server span with its queue, encoder and head spans, trace ids in the log line,
an incoming traceparent continued, the standard OTEL_* variables, and no OpenTelemetry at all when they are unset."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, ServerConfig, StartupError
from bertserve.wire.logs import REQUEST_LOGGER, JsonFormatter
from bertserve.wire.tracing import setup_tracing, tracing_requested
from bertserve_client.v1 import sentiment_pb2 as st, sentiment_pb2_grpc as st_grpc
from gates import EncoderGate, wait_until

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.instrumentation.grpc")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id  # noqa: E402

CHILDREN = ("bertserve.queue_wait", "bertserve.encoder_forward", "bertserve.head_forward")
SENTIMENT = "/bertserve.v1.SentimentService/ClassifySentiment"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def traced(tiny_config: ServerConfig, exporter: InMemorySpanExporter) -> Iterator[BackgroundServer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with BackgroundServer(tiny_config, tracer_provider=provider) as running:
        yield running
    provider.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def server_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished server spans, once `count` of them are there (a span ends as its call's response is sent)."""
    found: list[ReadableSpan] = []

    def enough() -> bool:
        found[:] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
        return len(found) >= count

    wait_until(enough)
    return found


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> dict[str, ReadableSpan]:
    assert parent.context is not None
    mine = [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None
        and s.parent.span_id == parent.context.span_id
        and s.context is not None
        and s.context.trace_id == parent.context.trace_id
    ]
    assert sorted(s.name for s in mine) == sorted(CHILDREN), [s.name for s in mine]
    return {s.name: s for s in mine}


def classify(address: str, text: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    with grpc.insecure_channel(address) as channel:
        st_grpc.SentimentServiceStub(channel).ClassifySentiment(
            st.ClassifySentimentRequest(texts=[text]), metadata=metadata, timeout=30
        )


def test_one_request_gives_a_server_span_with_queue_encoder_and_head_children(
    traced: BackgroundServer, spans: InMemorySpanExporter
) -> None:
    text = "a fine film"
    classify(traced.address, text)
    (server,) = server_spans(spans, 1)
    assert server.name == SENTIMENT and server.parent is None
    found = children(spans, server)
    queue, encoder, head = (found[name] for name in CHILDREN)
    times = [
        server.start_time,
        queue.start_time,
        queue.end_time,
        encoder.start_time,
        encoder.end_time,
        head.start_time,
        head.end_time,
        server.end_time,
    ]
    assert times == sorted(times), times
    tokens = len(traced.runtime.encoder.tokenizer(text)["input_ids"])
    assert head.attributes is not None and encoder.attributes is not None
    assert head.attributes["bertserve.head"] == "sentiment"
    assert (head.attributes["bertserve.rows"], head.attributes["bertserve.tokens"]) == (1, tokens)
    assert (encoder.attributes["bertserve.rows"], encoder.attributes["bertserve.tokens"]) == (1, tokens)
    assert encoder.attributes["bertserve.batch.rows"] == 1 and encoder.attributes["bertserve.batch.tokens"] == tokens
    assert tuple(encoder.attributes["bertserve.heads"]) == ("sentiment",)


def test_two_requests_in_one_batch_each_get_their_own_children(
    traced: BackgroundServer, spans: InMemorySpanExporter
) -> None:
    gate = EncoderGate(traced)
    try:
        blocker = threading.Thread(target=classify, args=(traced.address, "the forward held shut"))
        blocker.start()
        assert gate.entered.wait(10)
        callers = [threading.Thread(target=classify, args=(traced.address, text)) for text in ("one", "two words")]
        for caller in callers:
            caller.start()
        wait_until(lambda: traced.runtime.batcher.queued_rows == 2)
        gate.open()
        for thread in [blocker, *callers]:
            thread.join(30)
    finally:
        gate.restore()
    servers = server_spans(spans, 3)
    kids = [children(spans, server) for server in servers]
    batched = [k for k in kids if k["bertserve.encoder_forward"].attributes["bertserve.batch.rows"] == 2]  # type: ignore[index]
    assert len(batched) == 2
    first, second = batched
    ids = {id(k[name]) for k in batched for name in CHILDREN}
    assert len(ids) == 6  # each request its own three spans
    encoder_times = {
        (k["bertserve.encoder_forward"].start_time, k["bertserve.encoder_forward"].end_time) for k in batched
    }
    assert len(encoder_times) == 1  # the same forward, seen from each request
    for k in batched:
        assert k["bertserve.encoder_forward"].attributes["bertserve.rows"] == 1  # type: ignore[index]
        assert k["bertserve.head_forward"].attributes["bertserve.rows"] == 2  # type: ignore[index]
    assert first["bertserve.queue_wait"].context.trace_id != second["bertserve.queue_wait"].context.trace_id  # type: ignore[union-attr]


def test_a_failed_call_has_its_status_code_on_the_server_span(
    traced: BackgroundServer, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        classify(traced.address, "")
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (server,) = server_spans(spans, 1)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server.status.status_code is StatusCode.UNSET  # a caller's error is not the server's


def test_an_incoming_traceparent_is_continued(traced: BackgroundServer, spans: InMemorySpanExporter) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    classify(traced.address, "continued", (("traceparent", f"00-{trace_id}-{parent_id}-01"),))
    (server,) = server_spans(spans, 1)
    assert server.context is not None and server.parent is not None
    assert format_trace_id(server.context.trace_id) == trace_id
    assert f"{server.parent.span_id:016x}" == parent_id and server.parent.is_remote
    assert all(format_trace_id(s.context.trace_id) == trace_id for s in children(spans, server).values())  # type: ignore[union-attr]


def test_an_http_request_continues_its_callers_trace(tiny_config: ServerConfig) -> None:
    exporter = InMemorySpanExporter()  # its own: shutting the provider down stops its exporter
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = dataclasses.replace(tiny_config, http=HttpConfig(port=0))
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with BackgroundServer(config, tracer_provider=provider) as running:
        assert running._server is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{running._server.http_port}{SENTIMENT}",
            data=json.dumps({"texts": ["over http"]}).encode(),
            headers={"Content-Type": "application/json", "traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        (server,) = server_spans(exporter, 1)
        assert server.context is not None and server.parent is not None
        assert format_trace_id(server.context.trace_id) == trace_id and f"{server.parent.span_id:016x}" == parent_id
        assert len(children(exporter, server)) == len(CHILDREN)
    provider.shutdown()


def test_the_request_log_line_carries_the_trace_id(traced: BackgroundServer, spans: InMemorySpanExporter) -> None:
    logger = logging.getLogger(REQUEST_LOGGER)
    plain, structured = logging.Handler(), logging.Handler()
    records: list[str] = []
    lines: list[str] = []
    plain.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    formatter = JsonFormatter()
    structured.emit = lambda record: lines.append(formatter.format(record))  # type: ignore[method-assign]
    previous = logger.level
    logger.addHandler(plain)
    logger.addHandler(structured)
    logger.setLevel(logging.DEBUG)
    try:
        classify(traced.address, "logged")
        wait_until(lambda: bool(lines))
    finally:
        logger.removeHandler(plain)
        logger.removeHandler(structured)
        logger.setLevel(previous)
    (server,) = server_spans(spans, 1)
    assert server.context is not None
    trace_id = format_trace_id(server.context.trace_id)
    assert json.loads(lines[0])["trace_id"] == trace_id
    assert f"trace_id={trace_id}" in records[0]


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, False),
    ],
)
def test_the_standard_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing_requested(environ) is on
    if not on:
        assert setup_tracing(environ) is None


def test_missing_packages_stop_start_up_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed: importing it raises ImportError
    monkeypatch.delitem(sys.modules, "bertserve.wire.otel", raising=False)
    with pytest.raises(StartupError, match=r"^tracing is on .*pip install 'bertserve\[tracing\]'") as raised:
        setup_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert "\n" not in str(raised.value) and "(opentelemetry is missing)" in str(raised.value)


def _run(script: str, tiny_config: ServerConfig, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BERTSERVE_"))}
    heads = json.dumps({name: str(path) for name, path in tiny_config.head_files.items()})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tiny_config.model), heads],
        env={**environment, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).parent,
    )


_SERVE_ONCE = """
    import json, sys
    from bertserve.background import BackgroundServer
    from bertserve.config import ServerConfig
    from bertserve_client import BertServeClient
    config = ServerConfig(model=sys.argv[1], head_files=json.loads(sys.argv[2]), device="cpu", port=0)
    with BackgroundServer(config) as server:
        with BertServeClient(server.address) as client:
            client.sentiment("traced or not")
        tracing = server._server._tracing
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
    print(json.dumps({"tracing": tracing is not None, "opentelemetry": loaded}))
"""


def test_without_otel_variables_nothing_of_opentelemetry_is_imported(tiny_config: ServerConfig) -> None:
    result = _run(_SERVE_ONCE, tiny_config, {})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"tracing": False, "opentelemetry": []}


def test_the_console_exporter_from_the_variables(tiny_config: ServerConfig) -> None:
    """OTEL_TRACES_EXPORTER=console: the SDK's own configuration, service name `bertserve`, spans on stdout."""
    result = _run(_SERVE_ONCE, tiny_config, {"OTEL_TRACES_EXPORTER": "console"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["tracing"] is True
    for name in (*CHILDREN, SENTIMENT):
        assert f'"name": "{name}"' in result.stdout, name
    assert '"service.name": "bertserve"' in result.stdout


def test_the_provider_follows_the_sdk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Service name `bertserve` unless OTEL_SERVICE_NAME says otherwise; `otlp` is gRPC, or HTTP by its protocol."""
    from bertserve.wire import otel
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as OverGrpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as OverHttp
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    for key in [key for key in os.environ if key.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    environ = {"OTEL_TRACES_EXPORTER": "console"}
    provider = otel.provider_from_environment(environ)
    assert provider.resource.attributes["service.name"] == "bertserve"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "search-encoder")
    provider = otel.provider_from_environment({**environ, "OTEL_SERVICE_NAME": "search-encoder"})
    assert provider.resource.attributes["service.name"] == "search-encoder"
    provider.shutdown()
    assert isinstance(otel._exporter("console", {}), ConsoleSpanExporter)
    assert isinstance(otel._exporter("otlp", {}), OverGrpc)
    assert isinstance(otel._exporter("otlp", {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}), OverHttp)
    with pytest.raises(StartupError, match="'zipkin', which no installed package provides"):
        otel._exporter("zipkin", {})
