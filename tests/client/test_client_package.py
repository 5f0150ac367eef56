"""Tests of the bertserve-client distribution: packaging, errors, results, and
both clients against an in-process fake server (no torch involved)."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import bertserve_client
import grpc
import pytest
from bertserve_client import (
    AnswerResult,
    AsyncBertServeClient,
    BertServeClient,
    BertServeError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    FillMaskResult,
    HeadInfo,
    HeadOutputError,
    HeadState,
    InternalError,
    InvalidArgumentError,
    NextSentenceResult,
    NotFoundError,
    RequestCancelledError,
    ResourceExhaustedError,
    SentimentResult,
    ServerInfo,
    UnavailableError,
    _methods,
    _requests,
    dict_to_struct,
    error_from_rpc,
    struct_to_dict,
)
from bertserve_client.v1 import (
    fill_mask_pb2,
    fill_mask_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    next_sentence_pb2,
    next_sentence_pb2_grpc,
    question_answering_pb2,
    question_answering_pb2_grpc,
    sentiment_pb2,
    sentiment_pb2_grpc,
)
from google.protobuf import any_pb2, json_format, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"


# --- packaging ---------------------------------------------------------------

FRESH_VENV_CHECK = """
import importlib.metadata, importlib.util, pathlib, sys

import bertserve_client
from bertserve_client import AsyncBertServeClient, BertServeClient, BertServeError, error_from_rpc
from bertserve_client.v1 import (
    fill_mask_pb2, fill_mask_pb2_grpc, inference_pb2, inference_pb2_grpc, model_pb2, model_pb2_grpc,
    next_sentence_pb2, next_sentence_pb2_grpc, question_answering_pb2, question_answering_pb2_grpc,
    sentiment_pb2, sentiment_pb2_grpc,
)

BertServeClient("127.0.0.1:1").close()
assert importlib.util.find_spec("torch") is None, "torch is installed in the client venv"
loaded = [name for name in ("torch", "transformers", "numpy") if name in sys.modules]
assert not loaded, f"importing the client loaded {loaded}"
requires = " ".join(importlib.metadata.requires("bertserve-client") or []).lower()
assert "torch" not in requires and "numpy" not in requires, requires
assert importlib.metadata.version("bertserve-client") == bertserve_client.__version__
package = pathlib.Path(bertserve_client.__file__).parent
assert "site-packages" in str(package), package
assert (package / "py.typed").is_file() and (package / "v1" / "fill_mask_pb2.pyi").is_file()
print("CLIENT-OK")
"""


@pytest.mark.timeout(900)
def test_client_installs_and_imports_without_torch(tmp_path: Path) -> None:
    # Build from a copy so the shared checkout gets no build/ or egg-info.
    source = tmp_path / "src"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=780,
        env=env,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run(
        [str(python), "-c", FRESH_VENV_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "CLIENT-OK" in check.stdout


def test_client_package_exports() -> None:
    assert bertserve_client.__version__ == "0.1.0"
    missing = [name for name in bertserve_client.__all__ if not hasattr(bertserve_client, name)]
    assert not missing
    assert {"dict_to_struct", "struct_to_dict"} <= set(bertserve_client.__all__)
    for cls in (BertServeClient, AsyncBertServeClient):
        assert all(callable(getattr(cls, name, None)) for name in ("get_head", "predict", "analyze")), cls


RPC_METHODS = (
    "fill_mask",
    "next_sentence",
    "sentiment",
    "answer",
    "server_info",
    "list_heads",
    "get_head",
    "predict",
    "analyze",
)


@pytest.mark.parametrize("name", RPC_METHODS)
def test_both_clients_take_their_rpc_methods_from_one_table(name: str) -> None:
    plan = getattr(_methods, name)
    planned = inspect.signature(plan)
    for cls in (BertServeClient, AsyncBertServeClient):
        method = getattr(cls, name)
        assert method.__name__ == name and method.__qualname__ == f"{cls.__name__}.{name}"
        assert method.__doc__ == plan.__doc__ and method.__doc__
        assert inspect.iscoroutinefunction(method) is (cls is AsyncBertServeClient)
        signature = inspect.signature(method)
        assert list(signature.parameters)[0] == "self"
        assert list(signature.parameters.values())[1:] == list(planned.parameters.values())
        assert f"Call[{signature.return_annotation}]" == planned.return_annotation
    # A bound method shows the caller's parameters, as any method does.
    with BertServeClient("127.0.0.1:1") as client:
        assert inspect.signature(getattr(client, name)).parameters == planned.parameters


# --- errors -------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    """A failed sync call as grpc raises it: code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str | bytes], ...] = ()):
        super().__init__(details)
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _rich_status(code: int, message: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason="MASK_TOKEN_MISSING", domain="bertserve", metadata={"head": "fill-mask"})
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="texts[1]", description="has no [MASK] token"),
            error_details_pb2.BadRequest.FieldViolation(field="top_k", description="must be at most 30522"),
        ]
    )
    return status_pb2.Status(code=code, message=message, details=[_packed(info), _packed(bad)])


def test_error_from_rpc_decodes_error_info_and_bad_request() -> None:
    message = "texts[1] has no mask token"
    status = _rich_status(code_pb2.INVALID_ARGUMENT, message)
    trailing = (("x-other", "1"), ("grpc-status-details-bin", status.SerializeToString()))
    rpc_error = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, message, trailing)

    error = error_from_rpc(rpc_error)

    assert type(error) is InvalidArgumentError
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == message
    assert error.reason == "MASK_TOKEN_MISSING"
    assert error.domain == "bertserve"
    assert error.metadata == {"head": "fill-mask"}
    assert error.field_violations == (
        FieldViolation("texts[1]", "has no [MASK] token"),
        FieldViolation("top_k", "must be at most 30522"),
    )
    assert error.__cause__ is rpc_error
    assert "MASK_TOKEN_MISSING" in str(error) and "texts[1]" in str(error)


def test_error_from_rpc_reads_aio_metadata() -> None:
    status = _rich_status(code_pb2.NOT_FOUND, "no head named 'x'")
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="no head named 'x'",
    )
    error = error_from_rpc(rpc_error)
    assert type(error) is NotFoundError
    assert error.reason == "MASK_TOKEN_MISSING"
    assert [v.field for v in error.field_violations] == ["texts[1]", "top_k"]
    assert error.__cause__ is rpc_error


def test_error_from_rpc_without_details() -> None:
    rpc_error = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    error = error_from_rpc(rpc_error)
    assert type(error) is UnavailableError
    assert error.message == "failed to connect to all addresses"
    assert error.reason is None and error.domain is None
    assert error.metadata == {} and error.field_violations == ()
    assert error.__cause__ is rpc_error


def test_error_from_rpc_survives_garbage_details() -> None:
    trailing = (("grpc-status-details-bin", b"\xff\xff not a status"),)
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", trailing))
    assert type(error) is ResourceExhaustedError
    assert error.reason is None and error.message == "queue full"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, RequestCancelledError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNKNOWN, InternalError),
        (grpc.StatusCode.DATA_LOSS, InternalError),
        (grpc.StatusCode.UNIMPLEMENTED, InternalError),
    ],
)
def test_error_class_by_status_code(code: grpc.StatusCode, cls: type[BertServeError]) -> None:
    error = error_from_rpc(FakeRpcError(code, "boom"))
    assert type(error) is cls
    assert isinstance(error, BertServeError)
    assert error.code is code


# --- results ------------------------------------------------------------------


def test_fill_mask_result_from_proto() -> None:
    message = fill_mask_pb2.FillMaskResult(
        masks=[
            fill_mask_pb2.MaskPredictions(
                token_index=3,
                predictions=[
                    fill_mask_pb2.TokenPrediction(
                        token="capital", token_id=3007, score=0.75, sequence="paris is the capital"
                    ),
                    fill_mask_pb2.TokenPrediction(
                        token="city", token_id=2103, score=0.125, sequence="paris is the city"
                    ),
                ],
            )
        ]
    )
    result = FillMaskResult.from_proto(message)
    assert len(result.masks) == 1
    mask = result.masks[0]
    assert mask.token_index == 3
    assert [(p.token, p.token_id, p.score, p.sequence) for p in mask.predictions] == [
        ("capital", 3007, 0.75, "paris is the capital"),
        ("city", 2103, 0.125, "paris is the city"),
    ]
    assert isinstance(mask.predictions, tuple)
    with pytest.raises(AttributeError):
        mask.token_index = 4  # type: ignore[misc]


def test_next_sentence_and_sentiment_results_from_proto() -> None:
    nsp = NextSentenceResult.from_proto(next_sentence_pb2.NextSentenceResult(is_next_probability=0.25, is_next=False))
    assert nsp == NextSentenceResult(is_next_probability=0.25, is_next=False)
    sentiment = SentimentResult.from_proto(
        sentiment_pb2.SentimentResult(
            label="positive",
            score=0.75,
            scores=[
                sentiment_pb2.LabelScore(label="negative", score=0.25),
                sentiment_pb2.LabelScore(label="positive", score=0.75),
            ],
        )
    )
    assert sentiment.label == "positive" and sentiment.score == 0.75
    assert [(s.label, s.score) for s in sentiment.scores] == [("negative", 0.25), ("positive", 0.75)]


def test_answer_result_from_proto_and_best() -> None:
    result = AnswerResult.from_proto(
        question_answering_pb2.AnswerQuestionResult(
            answers=[
                question_answering_pb2.Answer(text="Paris", score=0.5, start=22, end=27),
                question_answering_pb2.Answer(text="", score=0.25, start=0, end=0, no_answer=True),
            ]
        )
    )
    assert result.best is not None
    assert (result.best.text, result.best.score, result.best.start, result.best.end, result.best.no_answer) == (
        "Paris",
        0.5,
        22,
        27,
        False,
    )
    assert result.answers[1].no_answer is True
    assert AnswerResult.from_proto(question_answering_pb2.AnswerQuestionResult()).best is None


INPUT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "minLength": 1, "description": "the text"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.5},
        "mode": {"anyOf": [{"type": "boolean"}, {"type": "null"}], "enum": [True, False, None]},
        "targets": {"type": "array", "items": {"type": "string"}, "default": []},
    },
    "required": ["text"],
}
OUTPUT_SCHEMA = {"type": "object", "properties": {"token_id": {"type": "integer"}}, "required": ["token_id"]}


def _struct(data: dict[str, object]) -> struct_pb2.Struct:
    # The way the server builds its Structs: every number becomes a double.
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def _assert_same_json(actual: object, expected: object) -> None:
    """Equal, and of the same JSON types all the way down (1 == 1.0 == True in Python)."""
    assert actual == expected
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        for key in expected:
            _assert_same_json(actual[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(actual, list)
        for got, want in zip(actual, expected):
            _assert_same_json(got, want)


def test_head_info_and_server_info_from_proto() -> None:
    head = HeadInfo.from_proto(
        model_pb2.HeadInfo(
            name="sentiment",
            task="sentiment",
            state=model_pb2.HEAD_STATE_FAILED,
            reason="bad weights",
            labels=["negative", "positive"],
            plugin="sentiment (bertserve 0.1.0)",
            description="SST-2 sentiment",
            input_schema=_struct(INPUT_SCHEMA),
            output_schema=_struct(OUTPUT_SCHEMA),
            package="bertserve-extra",
            version="1.2.3",
            text_fields=["first", "second"],
        )
    )
    assert head == HeadInfo(
        name="sentiment",
        task="sentiment",
        state=HeadState.FAILED,
        reason="bad weights",
        labels=("negative", "positive"),
        plugin="sentiment (bertserve 0.1.0)",
        description="SST-2 sentiment",
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        package="bertserve-extra",
        version="1.2.3",
        text_fields=("first", "second"),
    )
    assert head.state == "FAILED"
    # The schemas read as the JSON they came from: integers stay int, not the Struct's double.
    _assert_same_json(head.input_schema, INPUT_SCHEMA)
    _assert_same_json(head.output_schema, OUTPUT_SCHEMA)
    assert isinstance(head.text_fields, tuple)
    assert hash(head) == hash(dataclasses.replace(head, input_schema={}))  # schemas stay out of the hash
    with pytest.raises(AttributeError):
        head.package = "other"  # type: ignore[misc]

    # A head with no schema (an older server) reads as empty, not as an error.
    bare = HeadInfo.from_proto(model_pb2.HeadInfo(name="x"))
    assert (bare.input_schema, bare.output_schema, bare.package, bare.version, bare.text_fields) == ({}, {}, "", "", ())
    assert HeadState.from_proto(model_pb2.HEAD_STATE_LOADED) is HeadState.LOADED
    assert HeadState.from_proto(model_pb2.HEAD_STATE_UNAVAILABLE) is HeadState.UNAVAILABLE
    assert HeadState.from_proto(99) is HeadState.UNSPECIFIED

    fields = dict(
        model="/models/tiny",
        model_type="bert",
        max_sequence_length=512,
        device="cpu",
        dtype="float32",
        hidden_size=384,
        num_layers=6,
        vocab_size=30522,
        mask_token="[MASK]",
        encoder_fingerprint="sha256:ab",
        server_version="0.1.0",
        plugin_api_version="1.0",
    )
    info = ServerInfo.from_proto(model_pb2.GetServerInfoResponse(**fields))
    assert info == ServerInfo(**fields)
    assert info.plugin_api_version == "1.0"


# --- JSON values (google.protobuf.Struct) ---------------------------------------


def test_struct_round_trip_keeps_json_types() -> None:
    data = {
        "text": "a great movie",
        "top_k": 3,
        "score": 0.25,
        "big": 2**53,
        "negative": -7,
        "flag": False,
        "nothing": None,
        "empty_object": {},
        "empty_list": [],
        "nested": {"ids": [101, 2023, 102], "spans": [{"start": 0, "end": 5}], "mixed": [1, 1.5, "x", True, None]},
    }
    struct = dict_to_struct(data)
    # What went over the wire is a Struct; a fresh parse of its bytes reads back the same JSON.
    wire = struct_pb2.Struct.FromString(struct.SerializeToString())
    assert wire.fields["top_k"].WhichOneof("kind") == "number_value"
    assert wire.fields["empty_object"].WhichOneof("kind") == "struct_value"
    assert wire.fields["empty_list"].WhichOneof("kind") == "list_value"
    assert wire.fields["nothing"].WhichOneof("kind") == "null_value"
    _assert_same_json(struct_to_dict(wire), data)
    # Tuples and other mappings are sent as lists and objects.
    _assert_same_json(
        struct_to_dict(dict_to_struct({"t": (1, "a"), "m": {"k": (2.5,)}})), {"t": [1, "a"], "m": {"k": [2.5]}}
    )


def test_struct_to_dict_turns_whole_floats_into_int() -> None:
    struct = _struct(
        {"token_id": 93.0, "offsets": [0.0, 5.0], "score": 1.5, "tiny": 1e-5, "minus": -2.0, "huge": 1e300}
    )
    data = struct_to_dict(struct)
    _assert_same_json(data, {"token_id": 93, "offsets": [0, 5], "score": 1.5, "tiny": 1e-5, "minus": -2, "huge": 1e300})
    # Booleans are not numbers: they stay bool.
    _assert_same_json(struct_to_dict(_struct({"b": True, "n": 1})), {"b": True, "n": 1})


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"x": b"bytes"}, TypeError, r"input\.x is of type bytes"),
        ({"x": {1, 2}}, TypeError, r"input\.x is of type set"),
        ({"x": [1, object()]}, TypeError, r"input\.x\[1\] is of type object"),
        ({"x": {3: "a"}}, TypeError, r"input\.x has a key of type int"),
        ({"x": float("nan")}, ValueError, "not a JSON number"),
        ({"x": {"y": float("inf")}}, ValueError, r"input\.x\.y = inf"),
        ({"x": 2**53 + 1}, ValueError, "too large"),
        (["not", "a", "mapping"], TypeError, "input must be a mapping"),
    ],
)
def test_dict_to_struct_rejects_what_json_cannot_hold(data: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        dict_to_struct(data, name="input")  # type: ignore[arg-type]


# --- request building -----------------------------------------------------------


def test_single_input_gives_one_result_and_sequences_give_lists() -> None:
    prepared = _requests.prepare_sentiment("good", truncate=True, head="h")
    assert list(prepared.request.texts) == ["good"] and prepared.request.truncate and prepared.request.head == "h"
    response = sentiment_pb2.ClassifySentimentResponse(results=[sentiment_pb2.SentimentResult(label="pos")])
    assert prepared.convert(response) == SentimentResult(label="pos", score=0.0, scores=())

    prepared = _requests.prepare_sentiment(("a", "b"), truncate=False, head="")
    response = sentiment_pb2.ClassifySentimentResponse(results=[sentiment_pb2.SentimentResult(label=x) for x in "ab"])
    assert [r.label for r in prepared.convert(response)] == ["a", "b"]
    with pytest.raises(InternalError, match="1 results for 2 inputs"):
        prepared.convert(sentiment_pb2.ClassifySentimentResponse(results=[sentiment_pb2.SentimentResult()]))


def test_answer_request_policy_and_pairs() -> None:
    kwargs = dict(top_k=2, max_answer_length=30, doc_stride=64, head="")
    expected = {
        None: question_answering_pb2.NO_ANSWER_POLICY_UNSPECIFIED,
        True: question_answering_pb2.NO_ANSWER_POLICY_ALLOW,
        False: question_answering_pb2.NO_ANSWER_POLICY_NEVER,
    }
    for allow, policy in expected.items():
        request = _requests.prepare_answer("q", "c", allow_no_answer=allow, **kwargs).request
        assert request.no_answer_policy == policy
    request = _requests.prepare_answer([("q1", "c1"), ["q2", "c2"]], None, allow_no_answer=None, **kwargs).request
    assert [(i.question, i.context) for i in request.inputs] == [("q1", "c1"), ("q2", "c2")]
    assert (request.top_k, request.max_answer_length, request.doc_stride) == (2, 30, 64)


def test_predict_request_and_output() -> None:
    prepared = _requests.prepare_predict("fill-mask", {"text": "a [MASK]", "top_k": 2, "targets": ("x", "y")})
    assert prepared.request.head == "fill-mask"
    assert json_format.MessageToDict(prepared.request.input) == {
        "text": "a [MASK]",
        "top_k": 2.0,
        "targets": ["x", "y"],
    }
    response = inference_pb2.PredictResponse(output=_struct({"masks": [{"token_index": 2.0, "predictions": []}]}))
    _assert_same_json(prepared.convert(response), {"masks": [{"token_index": 2, "predictions": []}]})
    assert _requests.prepare_predict("h", {}).convert(inference_pb2.PredictResponse()) == {}


def test_get_head_request() -> None:
    prepared = _requests.prepare_get_head("sentiment")
    assert prepared.request == model_pb2.GetHeadRequest(name="sentiment")
    response = model_pb2.GetHeadResponse(
        head=model_pb2.HeadInfo(name="sentiment", output_schema=_struct(OUTPUT_SCHEMA))
    )
    head = prepared.convert(response)
    assert isinstance(head, HeadInfo) and head.name == "sentiment"
    _assert_same_json(head.output_schema, OUTPUT_SCHEMA)


def _analyze_response(request: inference_pb2.AnalyzeRequest) -> inference_pb2.AnalyzeResponse:
    """What a server would answer: every head echoes the input it got, with an index that is a whole double."""
    return inference_pb2.AnalyzeResponse(
        results=[
            inference_pb2.AnalyzeResult(
                outputs=[
                    inference_pb2.HeadOutput(
                        head=h.head,
                        output=_struct({"text": i.text, "pair": i.text_pair, "index": float(n), "p": 0.5}),
                    )
                    for h in request.heads
                ]
            )
            for n, i in enumerate(request.inputs)
        ]
    )


def test_analyze_single_text_gives_one_dict() -> None:
    prepared = _requests.prepare_analyze("a text", ["sentiment", ("fill-mask", {"top_k": 3, "targets": ["x"]})])
    request = prepared.request
    assert [(i.text, i.text_pair) for i in request.inputs] == [("a text", "")]
    assert [h.head for h in request.heads] == ["sentiment", "fill-mask"]
    assert json_format.MessageToDict(request.heads[0].options) == {}
    assert json_format.MessageToDict(request.heads[1].options) == {"top_k": 3.0, "targets": ["x"]}
    result = prepared.convert(_analyze_response(request))
    assert isinstance(result, dict) and list(result) == ["sentiment", "fill-mask"]
    _assert_same_json(result["fill-mask"], {"text": "a text", "pair": "", "index": 0, "p": 0.5})


def test_analyze_sequence_gives_a_list_with_pairs() -> None:
    prepared = _requests.prepare_analyze(["one", ("first", "second"), ["a", "b"]], ("next-sentence",))
    request = prepared.request
    assert [(i.text, i.text_pair) for i in request.inputs] == [("one", ""), ("first", "second"), ("a", "b")]
    results = prepared.convert(_analyze_response(request))
    assert isinstance(results, list) and len(results) == 3
    assert [r["next-sentence"]["index"] for r in results] == [0, 1, 2]
    assert results[1]["next-sentence"]["pair"] == "second"
    # A one-item sequence is still a list.
    one = _requests.prepare_analyze(["only"], ["sentiment"])
    assert isinstance(one.convert(_analyze_response(one.request)), list)


def test_analyze_checks_the_response_shape() -> None:
    prepared = _requests.prepare_analyze(["a", "b"], ["sentiment", "fill-mask"])
    response = _analyze_response(prepared.request)
    del response.results[1]
    with pytest.raises(InternalError, match="1 results for 2 inputs"):
        prepared.convert(response)
    response = _analyze_response(prepared.request)
    response.results[0].outputs[0].head = "other"
    with pytest.raises(InternalError, match="outputs of heads"):
        prepared.convert(response)


def test_analyze_puts_a_head_error_in_place_of_its_output() -> None:
    prepared = _requests.prepare_analyze(["a [MASK]", "no mask"], ["fill-mask", "sentiment"])
    response = _analyze_response(prepared.request)
    failed = response.results[1].outputs[0]
    failed.ClearField("output")
    failed.error.CopyFrom(
        inference_pb2.HeadError(
            code=code_pb2.INVALID_ARGUMENT,
            message="head 'fill-mask' cannot take inputs[1]: text has no mask token",
            reason="MASK_TOKEN_MISSING",
            field="inputs[1]",
        )
    )
    results = prepared.convert(response)
    assert isinstance(results, list) and [list(r) for r in results] == [["fill-mask", "sentiment"]] * 2
    error = results[1]["fill-mask"]
    assert isinstance(error, HeadOutputError) and isinstance(error, BertServeError)
    assert (error.head, error.code, error.message, error.reason, error.field) == (
        "fill-mask",
        grpc.StatusCode.INVALID_ARGUMENT,
        "head 'fill-mask' cannot take inputs[1]: text has no mask token",
        "MASK_TOKEN_MISSING",
        "inputs[1]",
    )
    assert "INVALID_ARGUMENT" in str(error) and "MASK_TOKEN_MISSING" in str(error) and "inputs[1]" in str(error)
    # The other head on that input, and every head on the other input, are answered as usual.
    _assert_same_json(results[1]["sentiment"], {"text": "no mask", "pair": "", "index": 1, "p": 0.5})
    _assert_same_json(results[0]["fill-mask"], {"text": "a [MASK]", "pair": "", "index": 0, "p": 0.5})
    # Results may cross process boundaries: every attribute survives pickling.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HeadOutputError
    assert (copy.head, copy.code, copy.message, copy.reason, copy.field) == (
        error.head,
        error.code,
        error.message,
        error.reason,
        error.field,
    )


def test_head_error_with_only_a_code_or_none() -> None:
    error = HeadOutputError.from_proto("qa", inference_pb2.HeadError(code=code_pb2.INTERNAL))
    assert (error.code, error.reason, error.field) == (grpc.StatusCode.INTERNAL, None, None)
    assert error.message == "head 'qa' failed with INTERNAL"
    # OK is no failure's code, and a code this client does not know is no better.
    for code in (code_pb2.OK, 99):
        assert HeadOutputError.from_proto("qa", inference_pb2.HeadError(code=code)).code is grpc.StatusCode.UNKNOWN


def test_options_left_as_none_are_the_servers_defaults() -> None:
    # None sends nothing (proto3's 0, "unset"): the server applies its default.
    request = _requests.prepare_fill_mask("[MASK]", top_k=None, targets=None, truncate=False, head="").request
    assert request == fill_mask_pb2.FillMaskRequest(texts=["[MASK]"])
    request = _requests.prepare_answer(
        "q", "c", top_k=None, max_answer_length=None, doc_stride=None, allow_no_answer=None, head=""
    ).request
    assert request == question_answering_pb2.AnswerQuestionRequest(
        inputs=[question_answering_pb2.QuestionContext(question="q", context="c")]
    )
    request = _requests.prepare_fill_mask("[MASK]", top_k=3, targets=None, truncate=False, head="").request
    assert request.top_k == 3


def test_analyze_rejects_a_head_listed_twice() -> None:
    with pytest.raises(ValueError, match="'sentiment' is listed twice"):
        _requests.prepare_analyze("t", ["sentiment", ("sentiment", {"truncate": True})])


@pytest.mark.parametrize(
    "call",
    [
        lambda: _requests.prepare_get_head(3),
        lambda: _requests.prepare_predict(None, {"text": "x"}),
        lambda: _requests.prepare_predict("h", "text"),
        lambda: _requests.prepare_predict("h", {"x": b"bytes"}),
        lambda: _requests.prepare_analyze(b"bytes", ["sentiment"]),
        lambda: _requests.prepare_analyze(["ok", 3], ["sentiment"]),
        lambda: _requests.prepare_analyze([("a", "b", "c")], ["sentiment"]),
        lambda: _requests.prepare_analyze(["ab"], "sentiment"),
        lambda: _requests.prepare_analyze(["a"], [("sentiment", None)]),
        lambda: _requests.prepare_analyze(["a"], [("sentiment",)]),
        lambda: _requests.prepare_analyze(["a"], [3]),
        lambda: _requests.prepare_sentiment(b"bytes", truncate=False, head=""),
        lambda: _requests.prepare_sentiment(["ok", 3], truncate=False, head=""),
        lambda: _requests.prepare_fill_mask("[MASK]", top_k=5, targets="paris", truncate=False, head=""),
        lambda: _requests.prepare_fill_mask("[MASK]", top_k="5", targets=None, truncate=False, head=""),
        lambda: _requests.prepare_answer(
            "q", "c", top_k=True, max_answer_length=None, doc_stride=None, allow_no_answer=None, head=""
        ),
        lambda: _requests.prepare_answer(
            "q", "c", top_k=None, max_answer_length=None, doc_stride=1.5, allow_no_answer=None, head=""
        ),
        lambda: _requests.prepare_next_sentence("first only", None, truncate=False, head=""),
        lambda: _requests.prepare_next_sentence(["ab"], None, truncate=False, head=""),
        lambda: _requests.prepare_next_sentence([("a", "b")], "c", truncate=False, head=""),
        lambda: _requests.prepare_next_sentence([("a", "b", "c")], None, truncate=False, head=""),
    ],
)
def test_bad_argument_types_raise_type_error(call: object) -> None:
    with pytest.raises(TypeError):
        call()  # type: ignore[operator]


# --- both clients against an in-process fake server ----------------------------------


def _abort(context: grpc.ServicerContext, code: int, message: str, reason: str) -> None:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="bertserve")
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="head", description=message)]
    )
    status = status_pb2.Status(code=code, message=message, details=[_packed(info), _packed(bad)])
    context.abort_with_status(rpc_status.to_status(status))


class FakeBertServe(
    fill_mask_pb2_grpc.FillMaskServiceServicer,
    next_sentence_pb2_grpc.NextSentenceServiceServicer,
    sentiment_pb2_grpc.SentimentServiceServicer,
    question_answering_pb2_grpc.QuestionAnsweringServiceServicer,
    model_pb2_grpc.ModelServiceServicer,
    inference_pb2_grpc.InferenceServiceServicer,
):
    """Echoes each request into its response so tests can see what was sent."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    def _check_head(self, head: str, context: grpc.ServicerContext) -> None:
        if head == "missing":
            _abort(context, code_pb2.NOT_FOUND, "no head named 'missing'", "HEAD_NOT_FOUND")
        if head == "slow":
            time.sleep(2)

    def FillMask(self, request, context):  # noqa: N802
        self.requests.append(request)
        self._check_head(request.head, context)
        return fill_mask_pb2.FillMaskResponse(
            results=[
                fill_mask_pb2.FillMaskResult(
                    masks=[
                        fill_mask_pb2.MaskPredictions(
                            token_index=1,
                            predictions=[
                                fill_mask_pb2.TokenPrediction(token=t, token_id=request.top_k, score=0.5, sequence=text)
                                for t in (request.targets or ["x"])
                            ],
                        )
                    ]
                )
                for text in request.texts
            ]
        )

    def PredictNextSentence(self, request, context):  # noqa: N802
        self.requests.append(request)
        self._check_head(request.head, context)
        return next_sentence_pb2.PredictNextSentenceResponse(
            results=[
                next_sentence_pb2.NextSentenceResult(
                    is_next_probability=0.75 if p.second else 0.25, is_next=bool(p.second)
                )
                for p in request.pairs
            ]
        )

    def ClassifySentiment(self, request, context):  # noqa: N802
        self.requests.append(request)
        self._check_head(request.head, context)
        if request.head == "short":
            return sentiment_pb2.ClassifySentimentResponse()
        return sentiment_pb2.ClassifySentimentResponse(
            results=[sentiment_pb2.SentimentResult(label=text, score=1.0) for text in request.texts]
        )

    def AnswerQuestion(self, request, context):  # noqa: N802
        self.requests.append(request)
        self._check_head(request.head, context)
        return question_answering_pb2.AnswerQuestionResponse(
            results=[
                question_answering_pb2.AnswerQuestionResult(
                    answers=[question_answering_pb2.Answer(text=i.context[:2], score=0.5, start=0, end=2)]
                )
                for i in request.inputs
            ]
        )

    def GetServerInfo(self, request, context):  # noqa: N802
        return model_pb2.GetServerInfoResponse(
            model="fake", mask_token="[MASK]", vocab_size=10, plugin_api_version="1.0"
        )

    def GetHead(self, request, context):  # noqa: N802
        self.requests.append(request)
        self._check_head(request.name, context)
        return model_pb2.GetHeadResponse(
            head=model_pb2.HeadInfo(
                name=request.name,
                task="sentiment",
                state=model_pb2.HEAD_STATE_LOADED,
                input_schema=_struct(INPUT_SCHEMA),
                output_schema=_struct(OUTPUT_SCHEMA),
                package="bertserve",
                version="0.1.0",
                text_fields=["text"],
            )
        )

    def Predict(self, request, context):  # noqa: N802
        self.requests.append(request)
        self._check_head(request.head, context)
        # The server sends Structs built from Python values, every number a double.
        return inference_pb2.PredictResponse(
            output=_struct({"head": request.head, "input": json_format.MessageToDict(request.input), "token_id": 7.0})
        )

    def Analyze(self, request, context):  # noqa: N802
        self.requests.append(request)
        for h in request.heads:
            self._check_head(h.head, context)
        return _analyze_response(request)

    def ListHeads(self, request, context):  # noqa: N802
        return model_pb2.ListHeadsResponse(
            heads=[
                model_pb2.HeadInfo(name="fill-mask", task="fill-mask", state=model_pb2.HEAD_STATE_LOADED),
                model_pb2.HeadInfo(name="sentiment", task="sentiment", state=model_pb2.HEAD_STATE_UNAVAILABLE),
            ]
        )


class FakeServer:
    def __init__(self) -> None:
        self.servicer = FakeBertServe()
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        fill_mask_pb2_grpc.add_FillMaskServiceServicer_to_server(self.servicer, self.server)
        next_sentence_pb2_grpc.add_NextSentenceServiceServicer_to_server(self.servicer, self.server)
        sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(self.servicer, self.server)
        question_answering_pb2_grpc.add_QuestionAnsweringServiceServicer_to_server(self.servicer, self.server)
        model_pb2_grpc.add_ModelServiceServicer_to_server(self.servicer, self.server)
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"
        self.set_serving(False)
        self.server.start()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", status)


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.server.stop(None)


def test_health_bytes_match_the_health_proto() -> None:
    assert health_pb2.HealthCheckRequest(service="").SerializeToString() == _requests.HEALTH_CHECK_REQUEST
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert serving.SerializeToString() == _requests.HEALTH_SERVING_RESPONSE


def test_sync_client_end_to_end(fake_server: FakeServer) -> None:
    with BertServeClient(fake_server.target, timeout=10) as client:
        threading.Timer(0.3, fake_server.set_serving, args=(True,)).start()
        client.wait_until_ready(timeout=10)

        one = client.fill_mask("a [MASK]", top_k=3, targets=["paris", "rome"], truncate=True, head="fm")
        assert isinstance(one, FillMaskResult)
        assert [p.token for p in one.masks[0].predictions] == ["paris", "rome"]
        assert one.masks[0].predictions[0].token_id == 3
        sent = fake_server.servicer.requests[-1]
        assert (list(sent.texts), sent.top_k, list(sent.targets), sent.truncate, sent.head) == (
            ["a [MASK]"],
            3,
            ["paris", "rome"],
            True,
            "fm",
        )
        many = client.fill_mask(["x [MASK]", "y [MASK]"])
        assert [r.masks[0].predictions[0].sequence for r in many] == ["x [MASK]", "y [MASK]"]
        assert fake_server.servicer.requests[-1].top_k == 0  # unset: the server's default

        assert client.next_sentence("a", "b") == NextSentenceResult(0.75, True)
        assert [r.is_next for r in client.next_sentence([("a", "b"), ("c", "")])] == [True, False]

        assert client.sentiment("fine").label == "fine"
        assert [r.label for r in client.sentiment(["p", "q"])] == ["p", "q"]

        answer = client.answer("who?", "Ada wrote it", allow_no_answer=False)
        assert answer.best is not None and answer.best.text == "Ad"
        assert fake_server.servicer.requests[-1].no_answer_policy == question_answering_pb2.NO_ANSWER_POLICY_NEVER
        assert [r.best.text for r in client.answer([("q", "xyz"), ("q", "uvw")])] == ["xy", "uv"]  # type: ignore[union-attr]
        request = fake_server.servicer.requests[-1]
        assert (request.top_k, request.max_answer_length, request.doc_stride) == (0, 0, 0)  # the server's defaults
        client.answer("q", "c", top_k=3, max_answer_length=20, doc_stride=None)
        request = fake_server.servicer.requests[-1]
        assert (request.top_k, request.max_answer_length, request.doc_stride) == (3, 20, 0)

        info = client.server_info()
        assert (info.mask_token, info.plugin_api_version) == ("[MASK]", "1.0")
        assert [(h.name, h.state) for h in client.list_heads()] == [
            ("fill-mask", HeadState.LOADED),
            ("sentiment", HeadState.UNAVAILABLE),
        ]

        head = client.get_head("my-head")
        assert fake_server.servicer.requests[-1] == model_pb2.GetHeadRequest(name="my-head")
        assert (head.name, head.package, head.version, head.text_fields) == ("my-head", "bertserve", "0.1.0", ("text",))
        _assert_same_json(head.input_schema, INPUT_SCHEMA)
        _assert_same_json(head.output_schema, OUTPUT_SCHEMA)

        payload = {"text": "a great movie", "top_k": 3, "score": 0.25, "ids": [1, 2], "opt": None, "deep": {"ok": True}}
        output = client.predict("sentiment", payload)
        assert fake_server.servicer.requests[-1].head == "sentiment"
        _assert_same_json(output, {"head": "sentiment", "input": payload, "token_id": 7})

        single = client.analyze("one text", ["sentiment", ("fill-mask", {"top_k": 2})])
        assert isinstance(single, dict) and list(single) == ["sentiment", "fill-mask"]
        _assert_same_json(single["sentiment"], {"text": "one text", "pair": "", "index": 0, "p": 0.5})
        sent = fake_server.servicer.requests[-1]
        assert json_format.MessageToDict(sent.heads[1].options) == {"top_k": 2.0}
        many = client.analyze(["x", ("q", "c")], ["next-sentence"])
        assert isinstance(many, list)
        assert [
            (r["next-sentence"]["text"], r["next-sentence"]["pair"], r["next-sentence"]["index"]) for r in many
        ] == [
            ("x", "", 0),
            ("q", "c", 1),
        ]


def test_sync_client_errors(fake_server: FakeServer) -> None:
    with BertServeClient(fake_server.target, timeout=10) as client:
        with pytest.raises(NotFoundError) as caught:
            client.sentiment("x", head="missing")
        assert caught.value.reason == "HEAD_NOT_FOUND" and caught.value.domain == "bertserve"
        assert caught.value.field_violations == (FieldViolation("head", "no head named 'missing'"),)
        assert isinstance(caught.value.__cause__, grpc.RpcError)

        with pytest.raises(DeadlineExceededError):
            client.sentiment("x", head="slow", timeout=0.2)
        with pytest.raises(InternalError, match="0 results for 1 inputs"):
            client.sentiment("x", head="short")

        with pytest.raises(NotFoundError) as caught:
            client.get_head("missing")
        assert caught.value.reason == "HEAD_NOT_FOUND"
        with pytest.raises(NotFoundError):
            client.predict("missing", {"text": "x"})
        with pytest.raises(NotFoundError):
            client.analyze("x", ["sentiment", "missing"])
        with pytest.raises(DeadlineExceededError):
            client.predict("slow", {}, timeout=0.2)
        with pytest.raises(TypeError):  # refused before anything is sent
            client.predict("sentiment", {"x": object()})


def test_wait_until_ready_times_out(fake_server: FakeServer) -> None:
    with BertServeClient(fake_server.target) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="not ready"):
            client.wait_until_ready(timeout=0.5)
        assert time.monotonic() - started < 5


def test_wait_until_ready_without_server() -> None:
    with BertServeClient("127.0.0.1:1") as client, pytest.raises(UnavailableError) as caught:
        client.wait_until_ready(timeout=0.5)
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_async_client_end_to_end(fake_server: FakeServer) -> None:
    client = AsyncBertServeClient(fake_server.target, timeout=10)  # created outside any event loop

    async def scenario() -> None:
        async with client:
            with pytest.raises(UnavailableError):
                await client.wait_until_ready(timeout=0.3)
            fake_server.set_serving(True)
            await client.wait_until_ready(timeout=10)

            one, many = await asyncio.gather(client.fill_mask("a [MASK]", top_k=2), client.sentiment(["p", "q"]))
            assert one.masks[0].predictions[0].token_id == 2
            assert [r.label for r in many] == ["p", "q"]
            assert (await client.next_sentence("a", "b")).is_next
            assert len(await client.next_sentence([("a", "b"), ("c", "d")])) == 2
            assert (await client.answer(question="who?", context="Ada")).best.text == "Ad"  # type: ignore[union-attr]
            info = await client.server_info()
            assert (info.model, info.plugin_api_version) == ("fake", "1.0")
            assert [h.name for h in await client.list_heads()] == ["fill-mask", "sentiment"]

            head = await client.get_head("sentiment")
            assert head.text_fields == ("text",)
            _assert_same_json(head.input_schema, INPUT_SCHEMA)
            output, single, many = await asyncio.gather(
                client.predict("sentiment", {"text": "t", "n": 1}),
                client.analyze("t", [("fill-mask", {"top_k": 1})]),
                client.analyze(["a", "b"], ["sentiment", "fill-mask"]),
            )
            _assert_same_json(output, {"head": "sentiment", "input": {"text": "t", "n": 1}, "token_id": 7})
            assert isinstance(single, dict) and single["fill-mask"]["index"] == 0
            assert isinstance(many, list)
            assert [sorted(r) for r in many] == [["fill-mask", "sentiment"]] * 2
            assert [r["sentiment"]["text"] for r in many] == ["a", "b"]
            with pytest.raises(NotFoundError):
                await client.predict("missing", {})
            with pytest.raises(DeadlineExceededError):
                await client.analyze("x", ["slow"], timeout=0.2)

            with pytest.raises(NotFoundError) as caught:
                await client.answer("q", "c", head="missing")
            assert caught.value.reason == "HEAD_NOT_FOUND"
            assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
            with pytest.raises(DeadlineExceededError):
                await client.next_sentence("a", "b", head="slow", timeout=0.2)
        with pytest.raises(RuntimeError, match="closed"):
            await client.sentiment("x")

    asyncio.run(scenario())
