"""Cross-head dynamic batching through real channels.

The inference thread is held busy while a mixed burst arrives, so the burst
must queue; then every answer is compared with the same request sent alone,
and the encoder forwards are counted.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.plugin.tasks import QuestionAnsweringInput
from bertserve.runtime.queue import select_batch
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

CONTEXT = " ".join(["john went home at night and mary went to school in the day ."] * 6)


def mixed_requests() -> list[tuple[str, object]]:
    requests: list[tuple[str, object]] = []
    texts = ["the [MASK] was good .", "paris is the [MASK] of [MASK] .", "a [MASK] movie"]
    sentences = ["the movie was great fun", "a terrible story", "the book was boring and long", "good"]
    for i in range(6):
        requests.append(("fill", fm.FillMaskRequest(texts=[texts[i % 3]], top_k=3)))
        requests.append(
            (
                "nsp",
                ns.PredictNextSentenceRequest(
                    pairs=[ns.SentencePair(first=sentences[i % 4], second=sentences[(i + 1) % 4])]
                ),
            )
        )
        requests.append(("sentiment", st.ClassifySentimentRequest(texts=[sentences[i % 4], sentences[(i + 2) % 4]])))
        question = ["who went home ?", "where did mary go ?"][i % 2]
        requests.append(
            ("qa", qa.AnswerQuestionRequest(inputs=[qa.QuestionContext(question=question, context=CONTEXT)], top_k=2))
        )
    return requests


def method(channel, kind: str):  # type: ignore[no-untyped-def]
    return {
        "fill": fm_grpc.FillMaskServiceStub(channel).FillMask,
        "nsp": ns_grpc.NextSentenceServiceStub(channel).PredictNextSentence,
        "sentiment": st_grpc.SentimentServiceStub(channel).ClassifySentiment,
        "qa": qa_grpc.QuestionAnsweringServiceStub(channel).AnswerQuestion,
    }[kind]


def assert_close(a, b, tolerance: float = 1e-4) -> None:  # type: ignore[no-untyped-def]
    """Messages equal, with floats compared within `tolerance` (batch composition changes rounding)."""
    from google.protobuf.json_format import MessageToDict

    def walk(x, y, path: str) -> None:  # type: ignore[no-untyped-def]
        if isinstance(x, dict):
            assert x.keys() == y.keys(), path
            for key in x:
                walk(x[key], y[key], f"{path}.{key}")
        elif isinstance(x, list):
            assert len(x) == len(y), path
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif isinstance(x, float) or isinstance(y, float):
            assert abs(float(x) - float(y)) <= tolerance, (path, x, y)
        else:
            assert x == y, (path, x, y)

    walk(MessageToDict(a), MessageToDict(b), "")


def test_mixed_burst_matches_sequential_answers_in_fewer_forwards(server: BackgroundServer) -> None:
    requests = mixed_requests()
    with grpc.insecure_channel(server.address) as channel:
        sequential = [method(channel, kind)(request) for kind, request in requests]

    batcher = server.runtime.batcher
    expected_rows = sum(rows_of(server, kind, request) for kind, request in requests)
    release = threading.Event()
    batcher._thread.submit(release.wait)  # hold the inference thread: the burst must queue
    forwards_before = batcher.stats.forwards

    async def burst() -> list[object]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            calls = [asyncio.ensure_future(method(channel, kind)(request)) for kind, request in requests]
            deadline = time.monotonic() + 20
            while batcher.pending_rows < expected_rows and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            release.set()
            return list(await asyncio.gather(*calls))

    concurrent = asyncio.run(burst())
    forwards = batcher.stats.forwards - forwards_before
    for alone, together in zip(sequential, concurrent):
        assert_close(alone, together)
    print(f"{len(requests)} requests ({expected_rows} rows) ran in {forwards} encoder forwards")
    assert forwards < len(requests)
    assert forwards <= 1 + -(-expected_rows // server.runtime.config.batching.max_batch_size) + 1


def rows_of(server: BackgroundServer, kind: str, request) -> int:  # type: ignore[no-untyped-def]
    """Encoder rows a request needs: one per text or pair, one per QA window."""
    if kind != "qa":
        return len(getattr(request, "texts", None) or request.pairs)
    head = server.runtime.head("", task="question-answering")
    item = request.inputs[0]
    return len(
        head.preprocess(QuestionAnsweringInput(question=item.question, context=item.context, top_k=request.top_k))
    )


class _Row:
    def __init__(self, length: int, order: int) -> None:
        self.length, self.order = length, order


@pytest.mark.parametrize(
    ("lengths", "max_size", "max_tokens", "expected"),
    [
        ([10, 50, 11, 12, 49], 3, 10_000, [10, 50, 11]),  # the oldest rows, whatever their lengths
        ([50, 10, 49, 48, 11], 10, 10_000, [50, 10, 49, 48, 11]),
        ([30, 10, 31, 60], 10, 71, [30, 10, 31]),  # real tokens: 30 + 10 + 31 fit, 60 more would not
        ([30, 10, 31, 60], 10, 70, [30, 10]),  # 31 would pass the budget; 60 may not jump the queue
        ([30], 4, 1, [30]),  # the oldest row always runs, even over budget
    ],
)
def test_select_batch_takes_the_oldest_rows_within_the_limits(lengths, max_size, max_tokens, expected) -> None:  # type: ignore[no-untyped-def]
    rows = [_Row(length, order) for order, length in enumerate(lengths)]
    shuffled = rows[1::2] + rows[0::2]  # the queue's order does not matter, only arrival order
    batch = select_batch(shuffled, max_size, max_tokens)  # type: ignore[arg-type]
    assert [row.length for row in batch] == expected
    assert [row.order for row in batch] == list(range(len(expected)))
