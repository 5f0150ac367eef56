"""InferenceService.PredictStream: many inputs over one stream, through both Python clients and the raw stub."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve_client import AsyncBertServeClient, BertServeClient, HeadOutputError, StreamInput, StreamResult
from bertserve_client._streams import stream_request, stream_result
from bertserve_client.v1 import inference_pb2, inference_pb2_grpc
from gates import EncoderGate, wait_until
from interop import assert_matches

TEXTS = ["a great movie", "the plot was dull", "I laughed a lot", "too long by an hour", "fine acting"]


def _inputs() -> list[StreamInput]:
    inputs = [StreamInput("sentiment", {"text": text}, id=f"s{i}") for i, text in enumerate(TEXTS)]
    inputs.append(StreamInput("fill-mask", {"text": "the [MASK] was great", "top_k": 2}, id="mask"))
    inputs.append(StreamInput("next-sentence", {"first": "he went home .", "second": "he slept ."}, id="nsp"))
    inputs.append(StreamInput("sentiment", {"txt": "misspelt field"}, id="bad-field"))
    inputs.append(StreamInput("no-such-head", {"text": "x"}, id="bad-head"))
    inputs.append(StreamInput("fill-mask", {"text": "no mask here"}, id="no-mask"))
    return inputs


def _check(results: list[StreamResult], client: BertServeClient) -> None:
    by_id = {result.id: result for result in results}
    assert sorted(by_id) == sorted(item.id for item in _inputs() if item.id is not None)  # every input answered once
    for item in _inputs()[:7]:
        result = by_id[item.id or ""]
        assert result.ok and result.head == item.head, result
        assert_matches(result.output, client.predict(item.head, dict(item.input)), item.id or "")
    bad_field, bad_head, no_mask = by_id["bad-field"].error, by_id["bad-head"].error, by_id["no-mask"].error
    assert isinstance(bad_field, HeadOutputError) and bad_field.code is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field.field == "input.text"
    assert isinstance(bad_head, HeadOutputError) and bad_head.code is grpc.StatusCode.NOT_FOUND
    assert isinstance(no_mask, HeadOutputError) and no_mask.code is grpc.StatusCode.INVALID_ARGUMENT


def test_a_stream_answers_every_input_with_its_id_and_errors_in_place(server: BackgroundServer) -> None:
    with BertServeClient(server.address) as client:
        results = list(client.predict_stream(_inputs()))
        _check(results, client)


def test_the_async_client_streams_from_an_async_generator(server: BackgroundServer) -> None:
    async def produce() -> AsyncIterator[StreamInput]:
        for item in _inputs():
            await asyncio.sleep(0)
            yield item

    async def run() -> list[StreamResult]:
        async with AsyncBertServeClient(server.address) as client:
            return [result async for result in client.predict_stream(produce())]

    results = asyncio.run(run())
    with BertServeClient(server.address) as client:
        _check(results, client)


def test_tuples_and_default_ids(server: BackgroundServer) -> None:
    with BertServeClient(server.address) as client:
        results = list(client.predict_stream([("sentiment", {"text": "good"}), ("x7", "sentiment", {"text": "bad"})]))
    assert sorted(result.id for result in results) == ["0", "x7"]


@pytest.fixture(scope="module")
def narrow(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    """A server that lets 4 inputs of one stream (or one request) be in flight."""
    with BackgroundServer(dataclasses.replace(tiny_config, max_inputs_per_request=4)) as running:
        yield running


def _requests(count: int, sent: list[int]) -> Iterator[inference_pb2.PredictStreamRequest]:
    for index in range(count):
        sent.append(index)
        yield stream_request(StreamInput("sentiment", {"text": f"review number {index}"}), index)


def test_a_stream_never_has_more_inputs_in_flight_than_its_limit(narrow: BackgroundServer) -> None:
    gate = EncoderGate(narrow)
    batcher = narrow.runtime.batcher
    try:
        with grpc.insecure_channel(narrow.address) as channel:
            sent: list[int] = []
            call = inference_pb2_grpc.InferenceServiceStub(channel).PredictStream(_requests(40, sent), timeout=60)
            assert gate.entered.wait(10)
            wait_until(lambda: batcher.pending_rows == 4)
            threading.Event().wait(0.3)  # time for more to arrive, were the limit not held
            assert batcher.pending_rows == 4  # one in the held forward, three queued: the reader stopped
            gate.open()
            ids = [response.id for response in call]
        assert sorted(ids, key=int) == [str(i) for i in range(40)] and len(sent) == 40
    finally:
        gate.restore()


def test_cancelling_a_stream_drops_its_queued_inputs(narrow: BackgroundServer) -> None:
    gate = EncoderGate(narrow)
    batcher = narrow.runtime.batcher
    try:
        dropped = batcher.stats.dropped_cancelled
        with grpc.insecure_channel(narrow.address) as channel:
            sent: list[int] = []
            call = inference_pb2_grpc.InferenceServiceStub(channel).PredictStream(_requests(10, sent), timeout=60)
            assert gate.entered.wait(10)
            wait_until(lambda: batcher.pending_rows == 4)
            queued = batcher.queued_rows  # the rest are in the held forward
            call.cancel()
            wait_until(lambda: narrow._server is not None and narrow._server.admission.in_flight == 0)
            gate.open()
            wait_until(lambda: batcher.pending_rows == 0)
        wait_until(lambda: batcher.stats.dropped_cancelled >= dropped + queued)
        assert queued >= 1 and gate.rows_run == 4 - queued  # only the rows already in the forward ran
    finally:
        gate.restore()


def test_a_stream_before_the_server_is_ready_is_unavailable(tiny_config: ServerConfig) -> None:
    import bertserve.app as app

    async def run() -> grpc.StatusCode:
        server = app.BertServeServer(tiny_config)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                call = stub.PredictStream(iter([stream_request(StreamInput("sentiment", {"text": "x"}), 0)]))
                try:
                    async for _ in call:
                        pass
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK
        finally:
            await server.stop(grace=None)

    assert asyncio.run(run()) == grpc.StatusCode.UNAVAILABLE


def test_stream_planning_is_pure() -> None:
    request = stream_request(("id-1", "sentiment", {"text": "x", "truncate": True}), 5)
    assert (request.id, request.head, dict(request.input)) == ("id-1", "sentiment", {"text": "x", "truncate": True})
    assert stream_request(StreamInput("h", {}), 3).id == "3"
    with pytest.raises(TypeError, match="stream input 2"):
        stream_request(("only-one",), 2)  # type: ignore[arg-type]
    response = inference_pb2.PredictStreamResponse(id="a", head="h")
    response.error.code, response.error.message, response.error.field = 3, "bad", "input.top_k"
    result = stream_result(response)
    assert not result.ok and result.output is None and result.error is not None
    assert (result.error.code, result.error.field, result.error.head) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input.top_k",
        "h",
    )
    response = inference_pb2.PredictStreamResponse(id="b", head="h")
    response.output.update({"n": 2.0, "label": "x"})
    assert stream_result(response) == StreamResult("b", "h", output={"n": 2, "label": "x"})
