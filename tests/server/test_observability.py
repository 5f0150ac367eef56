"""Prometheus metrics (scraped and parsed after real traffic), per-response timings and the per-request log lines."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, LoggingConfig, MetricsConfig, SecurityConfig, ServerConfig
from bertserve.runtime.timing import BatchShare, BatchTiming, RequestTimings
from bertserve.wire.logs import REQUEST_LOGGER, JsonFormatter, configure_logging
from bertserve.wire.timings import TIMING_KEYS
from bertserve_client import BertServeClient, InvalidArgumentError
from bertserve_client.oip import grpc_service_pb2 as oip, grpc_service_pb2_grpc as oip_grpc
from bertserve_client.v1 import (
    inference_pb2 as inf,
    inference_pb2_grpc as inf_grpc,
    sentiment_pb2 as st,
    sentiment_pb2_grpc as st_grpc,
)
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def observed(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    config = dataclasses.replace(tiny_config, metrics=MetricsConfig(port=0), http=HttpConfig(port=0))
    with BackgroundServer(config) as running:
        yield running


def scrape(server: BackgroundServer, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of the metrics endpoint as {(name, sorted labels): value}."""
    url = f"http://127.0.0.1:{server._server.metrics_port}/metrics"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


SENTIMENT = "bertserve.v1.SentimentService/ClassifySentiment"
FILL_MASK = "bertserve.v1.FillMaskService/FillMask"


def test_metrics_move_with_traffic(observed: BackgroundServer) -> None:
    before = scrape(observed)
    with BertServeClient(observed.address) as client:
        client.sentiment(["a fine film", "a dull and very long film that never ends"])
        client.sentiment("again")
        client.fill_mask("paris is the [MASK] of france")
        with pytest.raises(InvalidArgumentError):
            client.sentiment("")
        client.predict("sentiment", {"text": "through predict"})
    after = scrape(observed)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("bertserve_requests_total", method=SENTIMENT, head="sentiment", code="OK") == 2
    assert delta("bertserve_requests_total", method=SENTIMENT, head="sentiment", code="INVALID_ARGUMENT") == 1
    assert delta("bertserve_requests_total", method=FILL_MASK, head="fill-mask", code="OK") == 1
    predict = "bertserve.v1.InferenceService/Predict"
    assert delta("bertserve_requests_total", method=predict, head="sentiment", code="OK") == 1
    assert delta("bertserve_request_duration_seconds_count", method=SENTIMENT, head="sentiment") == 3
    assert delta("bertserve_request_duration_seconds_sum", method=SENTIMENT, head="sentiment") > 0
    # 2 + 1 + 1 + 1 encoder rows, in at least 4 forwards (the calls were sequential).
    assert delta("bertserve_encoder_rows_total") == 5
    assert delta("bertserve_queue_wait_seconds_count") == 5
    assert delta("bertserve_encoder_forward_seconds_count") == delta("bertserve_batch_rows_count") >= 4
    assert delta("bertserve_batch_rows_sum") == 5
    # Every token counted is a real one: the encoder computes no padding.
    tokenizer = observed.runtime.encoder.tokenizer
    texts = ["a fine film", "a dull and very long film that never ends", "again", "paris is the [MASK] of france"]
    real = sum(len(tokenizer(text)["input_ids"]) for text in [*texts, "through predict"])
    assert delta("bertserve_encoder_tokens_total", kind="real") == delta("bertserve_batch_tokens_sum") == real
    assert value(after, "bertserve_queue_rows") == 0 and value(after, "bertserve_requests_in_flight") == 0
    assert value(after, "bertserve_ready") == 1
    encoder_bytes = sum(p.numel() * p.element_size() for p in observed.runtime.encoder.bert.parameters())
    assert value(after, "bertserve_device_memory_bytes", device="cpu", kind="weights") > encoder_bytes  # + heads
    model = observed.runtime.encoder.model_name
    assert value(after, "bertserve_build_info", version="0.1.0", model=model) == 1


def test_metrics_endpoint_other_paths_are_404(observed: BackgroundServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://127.0.0.1:{observed._server.metrics_port}/admin", timeout=10)
    assert raised.value.code == 404


def test_metrics_can_require_the_bearer_token(tiny_config: ServerConfig) -> None:
    security = SecurityConfig(tokens=("metrics-reader-token",), metrics_require_token=True)
    config = dataclasses.replace(tiny_config, metrics=MetricsConfig(port=0), security=security)
    with BackgroundServer(config) as running:
        with pytest.raises(urllib.error.HTTPError) as raised:
            scrape(running)
        assert raised.value.code == 401 and raised.value.headers["WWW-Authenticate"] == "Bearer"
        with pytest.raises(urllib.error.HTTPError):
            scrape(running, {"Authorization": "Bearer wrong"})
        assert value(scrape(running, {"Authorization": "Bearer metrics-reader-token"}), "bertserve_ready") == 1


class Captured:
    """The request logger's records, formatted as JSON lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.logger = logging.getLogger(REQUEST_LOGGER)

    def __enter__(self) -> Captured:
        self.previous = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.previous)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.lines()) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


def test_one_log_line_per_request_with_the_callers_request_id(observed: BackgroundServer) -> None:
    with Captured() as captured, grpc.insecure_channel(observed.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        _, call = stub.ClassifySentiment.with_call(
            st.ClassifySentimentRequest(texts=["good"]), metadata=[("x-request-id", "req-abc-123")], timeout=30
        )
        assert dict(call.initial_metadata())["x-request-id"] == "req-abc-123"
        _, call = stub.ClassifySentiment.with_call(st.ClassifySentimentRequest(texts=["good"]), timeout=30)
        made = dict(call.initial_metadata())["x-request-id"]
        with pytest.raises(grpc.RpcError) as raised:
            stub.ClassifySentiment(st.ClassifySentimentRequest(texts=[]), metadata=[("x-request-id", "bad id!")])
        failed_id = dict(raised.value.trailing_metadata())["x-request-id"]
        assert "x-request-id" not in dict(raised.value.initial_metadata() or ())  # no headers: retryable
        captured.wait_for(3)  # an aborted call's status can reach the client before its log line is written
    first, second, third = captured.lines()
    assert first["request_id"] == "req-abc-123" and first["level"] == "DEBUG"
    assert first["head"] == "sentiment" and first["code"] == "OK" and first["method"] == SENTIMENT
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert second["request_id"] == made and len(made) == 32
    assert third["level"] == "WARNING" and third["code"] == "INVALID_ARGUMENT"
    assert third["request_id"] == failed_id != "bad id!"  # unsafe ids are replaced, not echoed


def test_errors_are_logged_at_the_default_level(observed: BackgroundServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER), BertServeClient(observed.address) as client:
        client.sentiment("fine")
        with pytest.raises(InvalidArgumentError):
            client.sentiment("")
        deadline = time.monotonic() + 10
        while not any(r.name == REQUEST_LOGGER for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    records = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    assert [r.levelname for r in records] == ["WARNING"] and "code=INVALID_ARGUMENT" in records[0].getMessage()


def test_plain_and_json_formats(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for fmt in ("plain", "json"):
            stream = io.StringIO()
            configure_logging(LoggingConfig(level="WARNING", format=fmt), stream)
            logging.getLogger("bertserve.test").info("hidden")
            logging.getLogger("bertserve.test").warning("shown %d", 7, extra={"request_id": "r1"})
            output = stream.getvalue().strip()
            assert "hidden" not in output
            if fmt == "json":
                entry = json.loads(output)
                assert entry["message"] == "shown 7" and entry["request_id"] == "r1" and entry["level"] == "WARNING"
            else:
                assert output.endswith("WARNING bertserve.test: shown 7")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_readme_lists_every_metric(observed: BackgroundServer) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for family in observed._server.metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in readme, name


def test_refused_calls_are_counted_and_logged(tiny_config: ServerConfig) -> None:
    """Calls refused by authentication never reach a handler, yet get a log line and a metric."""
    security = SecurityConfig(tokens=("observed-token-1",))
    config = dataclasses.replace(tiny_config, metrics=MetricsConfig(port=0), security=security)
    with BackgroundServer(config) as running, Captured() as captured:
        with grpc.insecure_channel(running.address) as channel:
            stub = st_grpc.SentimentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["good"]), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.ClassifySentiment(
                st.ClassifySentimentRequest(texts=["good"]),
                metadata=[("authorization", "Bearer observed-token-1")],
                timeout=10,
            )
        captured.wait_for(2)
        samples = scrape(running, {"Authorization": "Bearer observed-token-1"})
    assert value(samples, "bertserve_requests_total", method=SENTIMENT, head="", code="UNAUTHENTICATED") == 1
    assert value(samples, "bertserve_requests_total", method=SENTIMENT, head="sentiment", code="OK") == 1
    refused, answered = captured.lines()
    assert refused["code"] == "UNAUTHENTICATED" and refused["principal"] == ""
    assert answered["code"] == "OK" and answered["principal"] == "env-1"
    assert "observed-token-1" not in json.dumps(captured.lines())


def test_per_head_metrics_count_each_heads_rows_and_tokens(observed: BackgroundServer) -> None:
    texts, masked = ["a fine film", "a dull and very long film that never ends"], "paris is the [MASK] of france"
    before = scrape(observed)
    with BertServeClient(observed.address) as client:
        client.sentiment(texts)
        client.fill_mask(masked)
        client.analyze(["a [MASK] shared by two heads"], ["sentiment", "fill-mask"])
    after = scrape(observed)

    def delta(name: str, head: str) -> float:
        return value(after, name, head=head) - value(before, name, head=head)

    tokenizer = observed.runtime.encoder.tokenizer
    count = lambda *texts: sum(len(tokenizer(text)["input_ids"]) for text in texts)  # noqa: E731
    assert delta("bertserve_head_rows_total", "sentiment") == 3  # Analyze's shared row counts for each head
    assert delta("bertserve_head_tokens_total", "sentiment") == count(*texts, "a [MASK] shared by two heads")
    assert delta("bertserve_head_rows_total", "fill-mask") == 2
    assert delta("bertserve_head_tokens_total", "fill-mask") == count(masked, "a [MASK] shared by two heads")
    assert delta("bertserve_head_rows_total", "question-answering") == 0
    for head in ("sentiment", "fill-mask"):  # sequential calls: one head run per call
        assert delta("bertserve_head_forward_seconds_count", head) == 2
        assert delta("bertserve_head_forward_seconds_sum", head) > 0


def _timings(metadata: object) -> dict[str, float]:
    pairs = dict(metadata)  # type: ignore[call-overload]
    assert set(TIMING_KEYS) <= set(pairs), pairs
    found = {key.removeprefix("x-").removesuffix("-time"): float(pairs[key]) for key in TIMING_KEYS}
    assert all(number >= 0 for number in found.values()), found
    slack = 0.002  # each is rounded to a microsecond
    assert found["queue"] + found["inference"] <= found["total"] + slack, found
    assert found["tokenization"] + found["queue"] + found["inference"] <= found["total"] + slack, found
    assert found["inference"] > 0 and found["total"] > 0
    return found


def test_timings_in_the_trailing_metadata_of_every_unary_door(observed: BackgroundServer) -> None:
    with grpc.insecure_channel(observed.address) as channel:
        _, call = st_grpc.SentimentServiceStub(channel).ClassifySentiment.with_call(
            st.ClassifySentimentRequest(texts=["good", "two rows, maybe two batches"]), timeout=30
        )
        _timings(call.trailing_metadata())
        inference = inf_grpc.InferenceServiceStub(channel)
        predict = inf.PredictRequest(head="sentiment")
        predict.input.update({"text": "through predict"})
        _, call = inference.Predict.with_call(predict, timeout=30)
        _timings(call.trailing_metadata())
        analyze = inf.AnalyzeRequest(inputs=[inf.AnalyzeInput(text="one [MASK], two heads")])
        analyze.heads.add(head="sentiment")
        analyze.heads.add(head="fill-mask")
        _, call = inference.Analyze.with_call(analyze, timeout=30)
        _timings(call.trailing_metadata())
        infer = oip.ModelInferRequest(model_name="sentiment")
        infer.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"open protocol")
        _, call = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(infer, timeout=30)
        _timings(call.trailing_metadata())
        with pytest.raises(grpc.RpcError) as raised:  # a failure carries none
            st_grpc.SentimentServiceStub(channel).ClassifySentiment(st.ClassifySentimentRequest(texts=[]), timeout=30)
        assert not set(TIMING_KEYS) & set(dict(raised.value.trailing_metadata() or ()))


def test_timings_as_http_response_headers(observed: BackgroundServer) -> None:
    port = observed._server.http_port
    for path, body in [
        ("/bertserve.v1.SentimentService/ClassifySentiment", {"texts": ["over http"]}),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        ),
    ]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            _timings(response.headers.items())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=30) as response:
        assert not set(TIMING_KEYS) & {key.lower() for key in response.headers}  # no rows, no timings


def test_a_request_over_two_batches_reports_queue_less_its_own_earlier_forward() -> None:
    timings = RequestTimings(started=0.0, queued=1.0)
    first, second = BatchTiming(2.0, 2.5, end=3.0), BatchTiming(3.5, 3.75, end=4.0)
    timings.batches += [BatchShare(first, 1, 5, frozenset({"h"}), 1.0), BatchShare(second, 1, 5, frozenset({"h"}), 1.0)]
    # Queued at 1, last forward started at 3.5, of which 1 s was its own first forward: 1.5 s of queueing.
    assert timings.queue_seconds() == 1.5 and timings.inference_seconds() == 1.5
    assert timings.queue_seconds() + timings.inference_seconds() == second.end - 1.0
