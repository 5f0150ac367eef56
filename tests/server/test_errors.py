"""Every bad-input case through a real channel: status code, message, details,
and the server keeps serving afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve_client.v1 import (
    fill_mask_pb2 as fm,
    fill_mask_pb2_grpc as fm_grpc,
    next_sentence_pb2 as ns,
    next_sentence_pb2_grpc as ns_grpc,
    question_answering_pb2 as qa,
    question_answering_pb2_grpc as qa_grpc,
    sentiment_pb2 as st,
    sentiment_pb2_grpc as st_grpc,
)
from rpc import call_failure

LONG_TEXT = " ".join(["the movie was good"] * 40)  # far over the tiny model's 64 tokens
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def channel(server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stubs(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    return (
        fm_grpc.FillMaskServiceStub(channel),
        ns_grpc.NextSentenceServiceStub(channel),
        st_grpc.SentimentServiceStub(channel),
        qa_grpc.QuestionAnsweringServiceStub(channel),
    )


def assert_invalid(failure, field: str, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert failure.code == INVALID
    assert failure.domain == "bertserve" and failure.reason == "INVALID_ARGUMENT"
    assert field in failure.violations, failure.violations
    for word in words:
        assert word in failure.violations[field], failure.violations[field]
        assert word in failure.message


def test_fill_mask_empty_text(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[0].FillMask, fm.FillMaskRequest(texts=["the [MASK] .", "   "]))
    assert_invalid(failure, "texts[1]", "empty")
    assert "texts[0]" not in failure.violations


def test_fill_mask_without_mask_names_the_mask_token(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[0].FillMask, fm.FillMaskRequest(texts=["no mask here"]))
    assert_invalid(failure, "texts[0]", "[MASK]")


@pytest.mark.parametrize("top_k", [100000, 2**31])
def test_fill_mask_top_k_out_of_range_says_the_range(stubs, server: BackgroundServer, top_k: int) -> None:  # type: ignore[no-untyped-def]
    vocab_size = len(server.runtime.encoder.tokenizer)
    failure = call_failure(stubs[0].FillMask, fm.FillMaskRequest(texts=["the [MASK] ."], top_k=top_k))
    assert_invalid(failure, "top_k", str(vocab_size), str(top_k))


def test_over_long_input_without_truncation_says_the_limit(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[2].ClassifySentiment, st.ClassifySentimentRequest(texts=[LONG_TEXT]))
    assert_invalid(failure, "texts[0]", "64", "truncate")
    failure = call_failure(stubs[0].FillMask, fm.FillMaskRequest(texts=["[MASK] " + LONG_TEXT]))
    assert_invalid(failure, "texts[0]", "64")
    pair = ns.SentencePair(first=LONG_TEXT, second="the end .")
    failure = call_failure(stubs[1].PredictNextSentence, ns.PredictNextSentenceRequest(pairs=[pair]))
    assert_invalid(failure, "pairs[0]", "64")


def test_over_long_input_with_truncation_is_answered(stubs) -> None:  # type: ignore[no-untyped-def]
    response = stubs[2].ClassifySentiment(st.ClassifySentimentRequest(texts=[LONG_TEXT], truncate=True))
    assert len(response.results) == 1 and response.results[0].label
    response = stubs[0].FillMask(fm.FillMaskRequest(texts=["[MASK] " + LONG_TEXT], truncate=True))
    assert len(response.results[0].masks) == 1


def test_truncation_that_drops_every_mask_is_rejected(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[0].FillMask, fm.FillMaskRequest(texts=[LONG_TEXT + " [MASK]"], truncate=True))
    assert_invalid(failure, "texts[0]", "mask")


def test_next_sentence_empty_second_sentence(stubs) -> None:  # type: ignore[no-untyped-def]
    pairs = [ns.SentencePair(first="john went home .", second="")]
    failure = call_failure(stubs[1].PredictNextSentence, ns.PredictNextSentenceRequest(pairs=pairs))
    assert_invalid(failure, "pairs[0].second", "empty")


@pytest.mark.parametrize(
    ("question", "context", "field"),
    [("", "john went home .", "inputs[0].question"), ("who went home ?", " ", "inputs[0].context")],
)
def test_question_answering_empty_question_or_context(stubs, question: str, context: str, field: str) -> None:  # type: ignore[no-untyped-def]
    request = qa.AnswerQuestionRequest(inputs=[qa.QuestionContext(question=question, context=context)])
    assert_invalid(call_failure(stubs[3].AnswerQuestion, request), field, "empty")


def test_question_answering_options_out_of_range(stubs) -> None:  # type: ignore[no-untyped-def]
    inputs = [qa.QuestionContext(question="who ?", context="john went home .")]
    failure = call_failure(stubs[3].AnswerQuestion, qa.AnswerQuestionRequest(inputs=inputs, top_k=1000))
    assert_invalid(failure, "top_k", "100")
    failure = call_failure(stubs[3].AnswerQuestion, qa.AnswerQuestionRequest(inputs=inputs, max_answer_length=1000))
    assert_invalid(failure, "max_answer_length", "64")


def test_question_too_long_for_the_window(stubs) -> None:  # type: ignore[no-untyped-def]
    inputs = [qa.QuestionContext(question=LONG_TEXT, context="john went home .")]
    failure = call_failure(stubs[3].AnswerQuestion, qa.AnswerQuestionRequest(inputs=inputs))
    assert_invalid(failure, "inputs[0].question", "window")


def test_empty_request_is_invalid(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[2].ClassifySentiment, st.ClassifySentimentRequest())
    assert failure.code == INVALID and "texts" in failure.violations


def test_unknown_head_is_not_found_and_named(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[2].ClassifySentiment, st.ClassifySentimentRequest(texts=["good"], head="emotion"))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "HEAD_NOT_FOUND" and "'emotion'" in failure.message and "sentiment" in failure.message


def test_head_of_another_task_is_not_found(stubs) -> None:  # type: ignore[no-untyped-def]
    failure = call_failure(stubs[2].ClassifySentiment, st.ClassifySentimentRequest(texts=["good"], head="fill-mask"))
    assert failure.code == grpc.StatusCode.NOT_FOUND


def test_server_keeps_serving_after_errors(stubs) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        call_failure(stubs[0].FillMask, fm.FillMaskRequest(texts=[""]))
    response = stubs[0].FillMask(fm.FillMaskRequest(texts=["the [MASK] was good ."]))
    assert len(response.results[0].masks[0].predictions) == 5


def test_heads_without_weights_answer_failed_precondition_naming_the_head(tiny_checkpoint) -> None:  # type: ignore[no-untyped-def]
    config = ServerConfig(model=str(tiny_checkpoint), device="cpu", port=0)  # no head files
    with BackgroundServer(config) as bare, grpc.insecure_channel(bare.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["good"]))
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
        assert failure.reason == "HEAD_NOT_LOADED"
        assert "'sentiment'" in failure.message and "--head-file sentiment=" in failure.message
        # the heads that have weights still serve
        response = fm_grpc.FillMaskServiceStub(channel).FillMask(fm.FillMaskRequest(texts=["the [MASK] ."]))
        assert response.results[0].masks


def test_head_file_from_another_encoder_is_refused_naming_both(tmp_path, head_files) -> None:  # type: ignore[no-untyped-def]
    from bertserve_client.v1 import model_pb2, model_pb2_grpc
    from tiny_models import make_checkpoint

    other = make_checkpoint(tmp_path / "other-bert", seed=7)
    config = ServerConfig(model=str(other), head_files=dict(head_files), device="cpu", port=0)
    with BackgroundServer(config) as mismatched, grpc.insecure_channel(mismatched.address) as channel:
        heads = model_pb2_grpc.ModelServiceStub(channel).ListHeads(model_pb2.ListHeadsRequest()).heads
        sentiment = next(h for h in heads if h.name == "sentiment")
        assert sentiment.state == model_pb2.HEAD_STATE_UNAVAILABLE
        assert "trained on encoder" in sentiment.reason and str(other) in sentiment.reason
        failure = call_failure(
            st_grpc.SentimentServiceStub(channel).ClassifySentiment, st.ClassifySentimentRequest(texts=["good"])
        )
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and "trained on encoder" in failure.message
