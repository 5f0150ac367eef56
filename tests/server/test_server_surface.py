"""Health, reflection, deadlines and cancellation through real channels."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from bertserve.app import BertServeServer
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve_client.v1 import sentiment_pb2 as st, sentiment_pb2_grpc as st_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rpc import call_failure

SERVICES = {
    "bertserve.v1.FillMaskService",
    "bertserve.v1.NextSentenceService",
    "bertserve.v1.SentimentService",
    "bertserve.v1.QuestionAnsweringService",
    "bertserve.v1.ModelService",
    "grpc.health.v1.Health",
}


def test_reflection_lists_every_service_and_resolves_methods(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICES <= set(database.get_services())
        fill_mask = database.FindFileContainingSymbol("bertserve.v1.FillMaskService")
        assert fill_mask.name == "bertserve/v1/fill_mask.proto"
        assert [m.name for m in fill_mask.service[0].method] == ["FillMask"]


def test_health_is_serving_per_service_once_loaded(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", *sorted(SERVICES - {"grpc.health.v1.Health"})]:
            response = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service


def test_health_not_serving_and_rpcs_unavailable_until_loaded(tiny_config: ServerConfig) -> None:
    async def scenario() -> None:
        server = BertServeServer(tiny_config)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                before = await health.Check(health_pb2.HealthCheckRequest(service=""))
                assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await st_grpc.SentimentServiceStub(channel).ClassifySentiment(
                        st.ClassifySentimentRequest(texts=["good"])
                    )
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "loading" in (raised.value.details() or "")
                await server.load()
                after = await health.Check(health_pb2.HealthCheckRequest(service=""))
                assert after.status == health_pb2.HealthCheckResponse.SERVING
                response = await st_grpc.SentimentServiceStub(channel).ClassifySentiment(
                    st.ClassifySentimentRequest(texts=["good"])
                )
                assert response.results[0].label
        finally:
            await server.stop(grace=None)

    asyncio.run(scenario())


def test_service_without_a_loaded_head_reports_not_serving(tiny_checkpoint) -> None:  # type: ignore[no-untyped-def]
    with BackgroundServer(ServerConfig(model=str(tiny_checkpoint), device="cpu", port=0)) as bare:
        with grpc.insecure_channel(bare.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name)).status  # noqa: E731
            assert check("bertserve.v1.SentimentService") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert check("bertserve.v1.FillMaskService") == health_pb2.HealthCheckResponse.SERVING
            assert check("") == health_pb2.HealthCheckResponse.SERVING


def hold_inference(server: BackgroundServer) -> threading.Event:
    """Block the inference thread until the returned event is set."""
    release = threading.Event()
    server.runtime.batcher._thread.submit(release.wait)
    return release


def test_expired_deadline_is_dropped_before_the_forward(server: BackgroundServer) -> None:
    batcher = server.runtime.batcher
    with grpc.insecure_channel(server.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["warm up"]))
        release = hold_inference(server)
        try:
            # A first request takes the (held) encoder; the second waits in the queue past its deadline.
            first = stub.ClassifySentiment.future(st.ClassifySentimentRequest(texts=["first"]))
            _wait_for(lambda: batcher.pending_rows == 1)
            rows_before, dropped_before = batcher.stats.rows, _dropped(batcher)
            failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["late"]), timeout=0.3)
            assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            release.set()
        assert first.result(timeout=10).results[0].label
        # Dropped as expired, or as cancelled when gRPC ended the handler at the deadline first.
        _wait_for(lambda: _dropped(batcher) == dropped_before + 1)
        assert batcher.stats.rows == rows_before + 1  # only "first" reached the encoder
        assert stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["after"])).results[0].label


def test_cancelled_request_is_dropped_before_the_forward(server: BackgroundServer) -> None:
    batcher = server.runtime.batcher
    with grpc.insecure_channel(server.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        release = hold_inference(server)
        try:
            first = stub.ClassifySentiment.future(st.ClassifySentimentRequest(texts=["first"]))
            _wait_for(lambda: batcher.pending_rows == 1)
            rows_before, cancelled_before = batcher.stats.rows, batcher.stats.dropped_cancelled
            doomed = stub.ClassifySentiment.future(st.ClassifySentimentRequest(texts=["a", "b", "c"]))
            _wait_for(lambda: batcher.pending_rows == 4)
            doomed.cancel()
            time.sleep(0.2)  # let the server see the cancellation
        finally:
            release.set()
        assert first.result(timeout=10).results
        _wait_for(lambda: batcher.stats.dropped_cancelled >= cancelled_before + 3)
        assert batcher.stats.rows == rows_before + 1


def _dropped(batcher) -> int:  # type: ignore[no-untyped-def]
    return batcher.stats.dropped_expired + batcher.stats.dropped_cancelled


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_a_batcher_bug_fails_requests_instead_of_hanging(server: BackgroundServer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bertserve.runtime.queue

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("selection bug")

    with grpc.insecure_channel(server.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        monkeypatch.setattr(bertserve.runtime.queue, "select_batch", broken)
        failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["good"]), timeout=10)
        assert failure.code == grpc.StatusCode.INTERNAL and "selection bug" in failure.message
        monkeypatch.undo()
        assert stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["good"]), timeout=10).results[0].label
