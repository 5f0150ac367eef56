"""The generic head API: GetHead schemas, Predict with schema validation, Analyze on one encoder pass."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve_client.v1 import (
    inference_pb2 as inf,
    inference_pb2_grpc as inf_grpc,
    model_pb2,
    model_pb2_grpc,
    sentiment_pb2 as st,
    sentiment_pb2_grpc as st_grpc,
)
from google.protobuf import json_format, struct_pb2
from rpc import call_failure

TEXTS = ["the movie was great fun", "a terrible [MASK] and a boring plot", "good", "mary went home at night ."]


def struct(data: dict) -> struct_pb2.Struct:  # type: ignore[type-arg]
    message = struct_pb2.Struct()
    message.update(data)
    return message


@pytest.fixture(scope="module")
def channel(server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def inference(channel: grpc.Channel) -> inf_grpc.InferenceServiceStub:
    return inf_grpc.InferenceServiceStub(channel)


def test_get_head_publishes_schemas_package_and_version(channel: grpc.Channel) -> None:
    head = model_pb2_grpc.ModelServiceStub(channel).GetHead(model_pb2.GetHeadRequest(name="fill-mask")).head
    schema = json_format.MessageToDict(head.input_schema)
    assert schema["required"] == ["text"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"text", "top_k", "targets", "truncate"}
    assert schema["properties"]["top_k"]["type"] == "integer"
    output = json_format.MessageToDict(head.output_schema)
    assert "masks" in output["properties"]
    assert head.package == "bertserve" and head.version and list(head.text_fields) == ["text"]
    failure = call_failure(model_pb2_grpc.ModelServiceStub(channel).GetHead, model_pb2.GetHeadRequest(name="nope"))
    assert failure.code == grpc.StatusCode.NOT_FOUND and "fill-mask" in failure.message


def test_predict_equals_the_typed_service(channel: grpc.Channel, inference: inf_grpc.InferenceServiceStub) -> None:
    typed = st_grpc.SentimentServiceStub(channel).ClassifySentiment(st.ClassifySentimentRequest(texts=[TEXTS[0]]))
    generic = inference.Predict(inf.PredictRequest(head="sentiment", input=struct({"text": TEXTS[0]})))
    output = json_format.MessageToDict(generic.output)
    assert output["label"] == typed.results[0].label
    assert [s["label"] for s in output["scores"]] == [s.label for s in typed.results[0].scores]
    for got, want in zip(output["scores"], typed.results[0].scores):
        assert abs(got["score"] - want.score) < 1e-6


def test_predict_reports_every_schema_violation(inference: inf_grpc.InferenceServiceStub) -> None:
    bad = struct({"top_k": "five", "targets": ["ok", 3], "colour": "red"})
    failure = call_failure(inference.Predict, inf.PredictRequest(head="fill-mask", input=bad))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(failure.violations) == {"input.text", "input.top_k", "input.targets[1]", "input.colour"}
    assert "required" in failure.violations["input.text"]
    assert "allowed" in failure.violations["input.colour"] and "top_k" in failure.violations["input.colour"]
    assert "'fill-mask'" in failure.message


def test_predict_value_errors_from_the_head_name_the_field(server: BackgroundServer, inference) -> None:  # type: ignore[no-untyped-def]
    vocab = len(server.runtime.encoder.tokenizer)
    request = inf.PredictRequest(head="fill-mask", input=struct({"text": "the [MASK] .", "top_k": vocab + 1}))
    failure = call_failure(inference.Predict, request)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and str(vocab) in failure.violations["input.top_k"]
    failure = call_failure(inference.Predict, inf.PredictRequest(head="fill-mask", input=struct({"text": "no mask"})))
    assert "[MASK]" in failure.violations["input.text"]


def test_predict_unknown_head_is_not_found(inference: inf_grpc.InferenceServiceStub) -> None:
    failure = call_failure(inference.Predict, inf.PredictRequest(head="emotion", input=struct({"text": "x"})))
    assert failure.code == grpc.StatusCode.NOT_FOUND and "'emotion'" in failure.message


def analyze_request(texts: list[str], heads: list[tuple[str, dict]]) -> inf.AnalyzeRequest:  # type: ignore[type-arg]
    return inf.AnalyzeRequest(
        inputs=[inf.AnalyzeInput(text=text) for text in texts],
        heads=[inf.HeadOptions(head=name, options=struct(options)) for name, options in heads],
    )


def test_analyze_equals_separate_calls_in_one_encoder_pass(server: BackgroundServer, inference) -> None:  # type: ignore[no-untyped-def]
    texts = [t if "[MASK]" in t else t + " [MASK]" for t in TEXTS]  # every text can feed fill-mask
    heads = [("sentiment", {}), ("fill-mask", {"top_k": 3}), ("sentiment", {"truncate": True})]
    separate = [
        [
            json_format.MessageToDict(
                inference.Predict(inf.PredictRequest(head=name, input=struct({**options, "text": text}))).output
            )
            for name, options in heads
        ]
        for text in texts
    ]
    batcher = server.runtime.batcher
    release = threading.Event()
    batcher._thread.submit(release.wait)  # hold the encoder so the whole request forms one batch

    async def analyze() -> inf.AnalyzeResponse:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = inf_grpc.InferenceServiceStub(channel).Analyze(analyze_request(texts, heads))
            deadline = time.monotonic() + 10
            while batcher.pending_rows < len(texts) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            forwards_before, rows_before = batcher.stats.forwards, batcher.stats.rows
            release.set()
            response = await call
            return response, batcher.stats.forwards - forwards_before, batcher.stats.rows - rows_before

    response, forwards, rows = asyncio.run(analyze())
    assert (forwards, rows) == (1, len(texts))  # one encoder row per text, read by all three heads
    for per_text, expected in zip(response.results, separate):
        assert [o.head for o in per_text.outputs] == [name for name, _ in heads]
        for output, want in zip(per_text.outputs, expected):
            assert_json_close(json_format.MessageToDict(output.output), want)


def test_analyze_refuses_heads_that_cannot_read_the_inputs(inference: inf_grpc.InferenceServiceStub) -> None:
    failure = call_failure(
        inference.Analyze, analyze_request(["good"], [("sentiment", {}), ("question-answering", {})])
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "'question-answering'" in failure.message
    assert "heads[1].head" in failure.violations
    pair = inf.AnalyzeRequest(
        inputs=[inf.AnalyzeInput(text="john went home .", text_pair="he slept .")],
        heads=[inf.HeadOptions(head="next-sentence"), inf.HeadOptions(head="sentiment")],
    )
    failure = call_failure(inference.Analyze, pair)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "'sentiment'" in failure.message
    failure = call_failure(inference.Analyze, analyze_request(["good"], [("sentiment", {"text": "other"})]))
    assert "heads[0].options.text" in failure.violations


def test_analyze_pairs_feed_pair_heads(inference: inf_grpc.InferenceServiceStub) -> None:
    request = inf.AnalyzeRequest(
        inputs=[inf.AnalyzeInput(text="john went home .", text_pair="he slept .")],
        heads=[inf.HeadOptions(head="next-sentence")],
    )
    output = json_format.MessageToDict(inference.Analyze(request).results[0].outputs[0].output)
    alone = inf.PredictRequest(
        head="next-sentence", input=struct({"first": "john went home .", "second": "he slept ."})
    )
    expected = json_format.MessageToDict(inference.Predict(alone).output)
    assert abs(output["is_next_probability"] - expected["is_next_probability"]) < 1e-5


def assert_json_close(got, want, tolerance: float = 1e-4) -> None:  # type: ignore[no-untyped-def]
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            assert_json_close(got[key], want[key], tolerance)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_json_close(g, w, tolerance)
    elif isinstance(want, float):
        assert abs(got - want) <= tolerance
    else:
        assert got == want
