"""Answer offsets in both units, through every door, on contexts with multi-byte characters.

Every answer's `start`/`end` slice the context by code points and its
`start_byte`/`end_byte` slice the context's UTF-8 bytes, both to the answer's
text: over the native QuestionAnsweringService (raw stub and the Python client),
the generic Predict RPC, the HTTP gateway (native route and Predict) and the
Open Inference Protocol over HTTP, all answering the same spans. The spans
themselves are proven against the transformers reference in
`test_question_answering_exact.py`; `tests/client/test_go_client.py` and
`test_node_client.py` slice the same contexts in Go and JavaScript.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, ServerConfig
from bertserve.plugin import AnswerSpan, hookimpl
from bertserve_client import BertServeClient
from bertserve_client.v1 import question_answering_pb2 as qa_pb2, question_answering_pb2_grpc as qa_grpc
from bertserve_heads import question_answering
from bertserve_heads.question_answering import QuestionAnsweringHead
from interop import MULTIBYTE_QA_INPUTS

HEAD = "question-answering"
TOP_K = 10
INPUTS = MULTIBYTE_QA_INPUTS
Span = tuple[str, int, int, int, int, bool]  # text, start, end, start_byte, end_byte, no_answer


def spans_of(answers: list[dict[str, Any]]) -> list[Span]:
    keys = ("text", "start", "end", "start_byte", "end_byte", "no_answer")
    return [tuple(answer.get(key, 0 if key != "no_answer" else False) for key in keys) for answer in answers]  # type: ignore[misc]


def check_offsets(context: str, spans: list[Span]) -> None:
    """Both units slice the context to the text; multi-byte text moves the byte offsets away from the code points."""
    assert spans, context
    utf8 = context.encode()
    for text, start, end, start_byte, end_byte, no_answer in spans:
        assert context[start:end] == text, (context, text, start, end)
        assert utf8[start_byte:end_byte].decode() == text, (context, text, start_byte, end_byte)
        assert (start_byte, end_byte) == (len(context[:start].encode()), len(context[:end].encode()))
        if no_answer:
            assert (text, start, end, start_byte, end_byte) == ("", 0, 0, 0, 0)


def http(port: int, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.load(response)


@pytest.fixture(scope="module")
def gateway(tiny_config: ServerConfig) -> Iterator[tuple[BackgroundServer, int]]:
    with BackgroundServer(dataclasses.replace(tiny_config, http=HttpConfig(port=0))) as running:
        assert running._server is not None and running._server.http_port is not None
        yield running, running._server.http_port


@pytest.fixture(scope="module")
def native(gateway: tuple[BackgroundServer, int]) -> list[list[Span]]:
    """The spans the native RPC answers, per input: the reference for every other door."""
    request = qa_pb2.AnswerQuestionRequest(
        inputs=[qa_pb2.QuestionContext(question=q, context=c) for q, c in INPUTS],
        top_k=TOP_K,
        no_answer_policy=qa_pb2.NO_ANSWER_POLICY_ALLOW,
    )
    with grpc.insecure_channel(gateway[0].address) as channel:
        reply = qa_grpc.QuestionAnsweringServiceStub(channel).AnswerQuestion(request, timeout=30)
    return [
        [(a.text, a.start, a.end, a.start_byte, a.end_byte, a.no_answer) for a in result.answers]
        for result in reply.results
    ]


def test_native_offsets_slice_the_context_in_both_units(native: list[list[Span]]) -> None:
    for (_, context), spans in zip(INPUTS, native, strict=True):
        check_offsets(context, spans)
    # Not vacuous: spans holding multi-byte characters, spans after emoji outside the
    # BMP (where a UTF-16 index differs from both units), and the "no answer" candidate.
    answers = [(context, span) for (_, context), spans in zip(INPUTS, native) for span in spans if not span[5]]
    assert any(len(span[0].encode()) != len(span[0]) for _, span in answers)
    assert any(any(ord(char) > 0xFFFF for char in context[: span[1]]) for context, span in answers)
    assert any(no_answer for spans in native for *_, no_answer in spans)


def test_python_client_answers_carry_both_units(
    gateway: tuple[BackgroundServer, int], native: list[list[Span]]
) -> None:
    with BertServeClient(gateway[0].address, timeout=30) as client:
        results = client.answer(INPUTS, top_k=TOP_K, allow_no_answer=True)
    got = [[(a.text, a.start, a.end, a.start_byte, a.end_byte, a.no_answer) for a in r.answers] for r in results]
    assert got == native


def test_predict_and_http_doors_answer_the_same_offsets(
    gateway: tuple[BackgroundServer, int], native: list[list[Span]]
) -> None:
    server, port = gateway
    options = {"top_k": TOP_K, "allow_no_answer": True}
    with BertServeClient(server.address, timeout=30) as client:
        predicted = [client.predict(HEAD, {"question": q, "context": c, **options}) for q, c in INPUTS]
    assert [spans_of(output["answers"]) for output in predicted] == native
    route = http(
        port,
        "/bertserve.v1.QuestionAnsweringService/AnswerQuestion",
        {
            "inputs": [{"question": q, "context": c} for q, c in INPUTS],
            "topK": TOP_K,
            "noAnswerPolicy": "NO_ANSWER_POLICY_ALLOW",
        },
    )
    renamed = {"startByte": "start_byte", "endByte": "end_byte", "noAnswer": "no_answer"}
    for result, spans in zip(route["results"], native, strict=True):
        assert spans_of([{renamed.get(k, k): v for k, v in a.items()} for a in result["answers"]]) == spans
    for (question, context), spans in zip(INPUTS, native, strict=True):
        generic = http(
            port,
            "/bertserve.v1.InferenceService/Predict",
            {"head": HEAD, "input": {"question": question, "context": context, **options}},
        )
        assert spans_of(generic["output"]["answers"]) == spans


def test_open_inference_protocol_has_byte_offset_tensors(
    gateway: tuple[BackgroundServer, int], native: list[list[Span]]
) -> None:
    body = {
        "inputs": [
            {"name": "question", "shape": [len(INPUTS)], "datatype": "BYTES", "data": [q for q, _ in INPUTS]},
            {"name": "context", "shape": [len(INPUTS)], "datatype": "BYTES", "data": [c for _, c in INPUTS]},
        ],
        "parameters": {"top_k": TOP_K, "allow_no_answer": True},
    }
    reply = http(gateway[1], f"/v2/models/{HEAD}/infer", body)
    tensors = {tensor["name"]: tensor for tensor in reply["outputs"]}
    lengths = tensors["answers.length"]["data"]
    width = max(lengths)
    for row, ((_, context), spans) in enumerate(zip(INPUTS, native, strict=True)):
        utf8 = context.encode()
        picked = range(row * width, row * width + lengths[row])
        starts = [tensors["answers.start_byte"]["data"][i] for i in picked]
        ends = [tensors["answers.end_byte"]["data"][i] for i in picked]
        assert tensors["answers.start_byte"]["datatype"] == "INT64"
        assert [utf8[s:e].decode() for s, e in zip(starts, ends)] == [span[0] for span in spans]
        assert [
            json.loads(tensors["output_json"]["data"][row])["answers"][i]["end_byte"] for i in range(len(spans))
        ] == ends


def test_answer_span_derives_both_units_from_the_context() -> None:
    context = "a 😀 é 東京"
    span = AnswerSpan.in_context(context, 2, 5, 0.5)
    assert (span.text, span.start, span.end, span.start_byte, span.end_byte) == ("😀 é", 2, 5, 2, 9)
    assert AnswerSpan.none(0.1) == AnswerSpan("", 0.1, 0, 0, no_answer=True, start_byte=0, end_byte=0)
    with pytest.raises(ValueError, match="in_context"):
        AnswerSpan("😀", 0.5, 2, 3, start_byte=2, end_byte=3)


class _CodePointsOnlyHead(QuestionAnsweringHead):
    """A QA head written for plugin API 1.1: its spans carry code-point offsets only."""

    name = "qa-code-points"

    def postprocess(self, item: Any, rows: Any, outputs: Any) -> Any:
        answered = super().postprocess(item, rows, outputs)
        old = [AnswerSpan(a.text, a.score, a.start, a.end, a.no_answer) for a in answered.answers]
        assert all(a.start_byte is None for a in old)
        return dataclasses.replace(answered, answers=tuple(old))


class _CodePointsOnlyPlugin:
    BERTSERVE_API_VERSION = "1.1"  # written before answers had byte offsets

    @hookimpl
    def register_heads(self, register: Any, config: Any) -> None:
        register(_CodePointsOnlyHead())


def test_a_head_giving_only_code_points_gets_byte_offsets_from_the_server(
    tiny_config: ServerConfig, native: list[list[Span]]
) -> None:
    config = dataclasses.replace(
        tiny_config, head_files={**tiny_config.head_files, "qa-code-points": tiny_config.head_files[HEAD]}
    )
    with (
        BackgroundServer(config, plugins=[(HEAD, question_answering), ("old-qa", _CodePointsOnlyPlugin())]) as running,
        BertServeClient(running.address, timeout=30) as client,
    ):
        for (question, context), spans in zip(INPUTS, native, strict=True):
            output = client.predict(
                "qa-code-points", {"question": question, "context": context, "top_k": TOP_K, "allow_no_answer": True}
            )
            assert spans_of(output["answers"]) == spans  # the same weights: the built-in head's spans, bytes and all
