"""Tests of the bertserve-client distribution: packaging, errors, results, and
both clients against an in-process fake server (no torch involved)."""

from __future__ import annotations

import asyncio
import os
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
    _requests,
    error_from_rpc,
)
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
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "python"


# --- packaging ---------------------------------------------------------------

FRESH_VENV_CHECK = """
import importlib.metadata, importlib.util, pathlib, sys

import bertserve_client
from bertserve_client import AsyncBertServeClient, BertServeClient, BertServeError, error_from_rpc
from bertserve_client.v1 import (
    fill_mask_pb2, fill_mask_pb2_grpc, model_pb2, model_pb2_grpc, next_sentence_pb2,
    next_sentence_pb2_grpc, question_answering_pb2, question_answering_pb2_grpc,
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
    )
    assert head.state == "FAILED"
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
    )
    assert ServerInfo.from_proto(model_pb2.GetServerInfoResponse(**fields)) == ServerInfo(**fields)


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


@pytest.mark.parametrize(
    "call",
    [
        lambda: _requests.prepare_sentiment(b"bytes", truncate=False, head=""),
        lambda: _requests.prepare_sentiment(["ok", 3], truncate=False, head=""),
        lambda: _requests.prepare_fill_mask("[MASK]", top_k=5, targets="paris", truncate=False, head=""),
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
        return model_pb2.GetServerInfoResponse(model="fake", mask_token="[MASK]", vocab_size=10)

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
        assert fake_server.servicer.requests[-1].top_k == 5

        assert client.next_sentence("a", "b") == NextSentenceResult(0.75, True)
        assert [r.is_next for r in client.next_sentence([("a", "b"), ("c", "")])] == [True, False]

        assert client.sentiment("fine").label == "fine"
        assert [r.label for r in client.sentiment(["p", "q"])] == ["p", "q"]

        answer = client.answer("who?", "Ada wrote it", allow_no_answer=False)
        assert answer.best is not None and answer.best.text == "Ad"
        assert fake_server.servicer.requests[-1].no_answer_policy == question_answering_pb2.NO_ANSWER_POLICY_NEVER
        assert [r.best.text for r in client.answer([("q", "xyz"), ("q", "uvw")])] == ["xy", "uv"]  # type: ignore[union-attr]
        request = fake_server.servicer.requests[-1]
        assert (request.top_k, request.max_answer_length, request.doc_stride) == (1, 15, 128)

        assert client.server_info().mask_token == "[MASK]"
        assert [(h.name, h.state) for h in client.list_heads()] == [
            ("fill-mask", HeadState.LOADED),
            ("sentiment", HeadState.UNAVAILABLE),
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
            assert (await client.server_info()).model == "fake"
            assert [h.name for h in await client.list_heads()] == ["fill-mask", "sentiment"]

            with pytest.raises(NotFoundError) as caught:
                await client.answer("q", "c", head="missing")
            assert caught.value.reason == "HEAD_NOT_FOUND"
            assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
            with pytest.raises(DeadlineExceededError):
                await client.next_sentence("a", "b", head="slow", timeout=0.2)
        with pytest.raises(RuntimeError, match="closed"):
            await client.sentiment("x")

    asyncio.run(scenario())
