"""A forward that never returns is noticed: health and liveness NOT_SERVING, waiting requests UNAVAILABLE.

The server's forward timeout is 0.5 s here. A head stuck in `forward` (the
stall plugin) or an encoder forward held shut (`EncoderGate`) must fail the
requests waiting for it with UNAVAILABLE and a retry delay instead of
letting them hang, turn health and the liveness service NOT_SERVING, name
where it is stuck in the log and the metrics, and serve again once the
forward returns. With ``exit_on_stuck_forward`` the process exits instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bertserve_heads.sentiment
import grpc
import pytest
import stall_plugin
from bertserve.app import LIVENESS_SERVICE
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.lifecycle import EXIT_STUCK
from bertserve_client.oip import grpc_service_pb2, grpc_service_pb2_grpc
from bertserve_client.v1 import inference_pb2, inference_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc
from gates import EncoderGate, wait_until
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpc import call_failure

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def stall_server(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    config = dataclasses.replace(
        tiny_config,
        forward_timeout_seconds=0.5,
        head_files={**tiny_config.head_files, "stall": tiny_config.head_files["sentiment"]},
    )
    plugins = [("sentiment", bertserve_heads.sentiment), ("stall", stall_plugin)]
    with BackgroundServer(config, plugins=plugins) as running:
        yield running


def _predict(text: str) -> inference_pb2.PredictRequest:
    data = struct_pb2.Struct()
    data.update({"text": text})
    return inference_pb2.PredictRequest(head="stall", input=data)


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def _oip_ready(channel: grpc.Channel) -> bool:
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return bool(stub.ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=5).ready)


def _stuck_metrics(server: BackgroundServer, stage: str) -> tuple[float, float]:
    registry = server.runtime.batcher.metrics.registry
    total = registry.get_sample_value("bertserve_stuck_forwards_total", {"stage": stage}) or 0.0
    return total, registry.get_sample_value("bertserve_forward_stuck") or 0.0


def test_a_stuck_head_fails_its_requests_and_turns_health_and_liveness_off_until_it_returns(
    stall_server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    stall_plugin.RELEASE.clear()
    with grpc.insecure_channel(stall_server.address) as channel, ThreadPoolExecutor(1) as pool:
        predict = inference_pb2_grpc.InferenceServiceStub(channel).Predict
        sentiment = sentiment_pb2_grpc.SentimentServiceStub(channel).ClassifySentiment
        started = time.monotonic()
        stuck = pool.submit(call_failure, predict, _predict("please stall"), timeout=20)
        failure = stuck.result(timeout=15)
        waited = time.monotonic() - started
        try:
            assert failure.code == grpc.StatusCode.UNAVAILABLE, failure
            assert failure.reason == "FORWARD_STUCK" and failure.metadata["stage"] == "stall"
            assert "head 'stall'" in failure.message and failure.retry_delay is not None
            assert waited < 10, "answered soon after the 0.5 s limit, not when the forward returned"
            assert _health(channel, "") == NOT_SERVING
            assert _health(channel, LIVENESS_SERVICE) == NOT_SERVING
            assert _health(channel, "bertserve.v1.SentimentService") == NOT_SERVING
            assert not _oip_ready(channel), "the Open Inference Protocol's ServerReady agrees with health"
            other = call_failure(sentiment, sentiment_pb2.ClassifySentimentRequest(texts=["fine"]), timeout=10)
            assert other.code == grpc.StatusCode.UNAVAILABLE and other.reason == "FORWARD_STUCK", other
            assert _stuck_metrics(stall_server, "stall") == (1.0, 1.0)
            assert any(
                "head 'stall'" in record.getMessage() for record in caplog.records if record.levelname == "ERROR"
            )
        finally:
            stall_plugin.RELEASE.set()
        wait_until(lambda: _health(channel, "") == SERVING and _health(channel, LIVENESS_SERVICE) == SERVING)
        assert _health(channel, "bertserve.v1.SentimentService") == SERVING
        assert _oip_ready(channel)
        assert sentiment(sentiment_pb2.ClassifySentimentRequest(texts=["fine"]), timeout=10).results
        assert predict(_predict("not stuck now"), timeout=10).output
        assert _stuck_metrics(stall_server, "stall") == (1.0, 0.0)


def test_a_stuck_encoder_forward_fails_queued_requests_too_and_serves_again(stall_server: BackgroundServer) -> None:
    gate = EncoderGate(stall_server)
    request = sentiment_pb2.ClassifySentimentRequest(texts=["a fine film"])
    try:
        with grpc.insecure_channel(stall_server.address) as channel, ThreadPoolExecutor(4) as pool:
            sentiment = sentiment_pb2_grpc.SentimentServiceStub(channel).ClassifySentiment
            first = pool.submit(call_failure, sentiment, request, timeout=20)
            assert gate.entered.wait(10)
            queued = [pool.submit(call_failure, sentiment, request, timeout=20) for _ in range(3)]
            failures = [future.result(timeout=15) for future in [first, *queued]]
            assert {failure.code for failure in failures} == {grpc.StatusCode.UNAVAILABLE}, failures
            assert {failure.metadata["stage"] for failure in failures} == {"encoder"}
            assert _health(channel, LIVENESS_SERVICE) == NOT_SERVING
            gate.open()
            wait_until(lambda: _health(channel, LIVENESS_SERVICE) == SERVING and _health(channel, "") == SERVING)
            assert sentiment(request, timeout=10).results
    finally:
        gate.restore()
    assert _stuck_metrics(stall_server, "encoder")[0] == 1.0


def test_with_exit_on_stuck_forward_the_process_exits_for_its_orchestrator(
    tiny_config: ServerConfig, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, logging, sys
        import bertserve_heads.sentiment, stall_plugin
        from pathlib import Path
        from bertserve.config import ServerConfig
        from bertserve.lifecycle import serve_until_signalled
        logging.basicConfig(level="INFO")
        config = ServerConfig(
            model={str(tiny_config.model)!r}, device="cpu", port=0, warmup=False,
            head_files={{"sentiment": Path({str(tiny_config.head_files["sentiment"])!r}),
                        "stall": Path({str(tiny_config.head_files["sentiment"])!r})}},
            forward_timeout_seconds=0.5, exit_on_stuck_forward=True,
        )
        plugins = [("sentiment", bertserve_heads.sentiment), ("stall", stall_plugin)]
        sys.exit(asyncio.run(serve_until_signalled(config, plugins=plugins)))
        """
    )
    support = str(Path(stall_plugin.__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([support, os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        port = _wait_for_serving_port(process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = inference_pb2_grpc.InferenceServiceStub(channel).Predict
            failure = call_failure(predict, _predict("please stall"), timeout=20)
        assert failure.code == grpc.StatusCode.UNAVAILABLE and failure.reason == "FORWARD_STUCK", failure
        assert process.wait(timeout=30) == EXIT_STUCK
        assert "exiting with status 3" in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def _wait_for_serving_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        logging.getLogger(__name__).debug(line.rstrip())
        if "serving on port" in line:
            return int(line.split("serving on port ")[1].split(";")[0])
    raise AssertionError(f"the server did not start (exit status {process.poll()})")
