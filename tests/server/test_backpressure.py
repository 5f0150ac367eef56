"""Limits and backpressure on a real server whose encoder is held shut by a gate.

The gate blocks the encoder forward, so the tests decide exactly what is in
progress, what waits in the queue and what arrives over the bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import BatchingConfig, ServerConfig
from bertserve.plugin.errors import QueueFull
from bertserve.plugin.head import EncodedRow
from bertserve.runtime.metrics import ServerMetrics
from bertserve.runtime.queue import RowQueue
from bertserve_client.v1 import sentiment_pb2 as st, sentiment_pb2_grpc as st_grpc
from gates import EncoderGate, wait_until
from rpc import decode


@pytest.fixture(scope="module")
def limited(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    config = dataclasses.replace(
        tiny_config,
        max_concurrent_requests=64,
        max_tokens_per_request=64,
        batching=BatchingConfig(max_batch_size=32, max_queue_rows=4),
    )
    with BackgroundServer(config) as running:
        yield running


@pytest.fixture
def gate(limited: BackgroundServer) -> Iterator[EncoderGate]:
    gate = EncoderGate(limited)
    yield gate
    gate.restore()
    wait_until(lambda: limited.runtime.batcher.pending_rows == 0 and limited._server.admission.in_flight == 0)


def classify(channel: grpc.Channel, text: str, timeout: float = 30) -> Any:
    return st_grpc.SentimentServiceStub(channel).ClassifySentiment.future(
        st.ClassifySentimentRequest(texts=[text]), timeout=timeout
    )


def test_burst_over_the_queue_bound_gets_resource_exhausted_with_retry_info(
    limited: BackgroundServer, gate: EncoderGate
) -> None:
    texts = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(12)]
    with grpc.insecure_channel(limited.address) as channel:
        first = classify(channel, "the first one holds the encoder")
        assert gate.entered.wait(10)
        wait_until(lambda: gate.batcher.queued_rows == 0 and gate.batcher.pending_rows == 1)
        burst = [classify(channel, text) for text in texts]
        wait_until(lambda: sum(call.done() for call in burst) >= len(texts) - 4)
        time.sleep(0.2)  # nothing more finishes while the gate is shut
        rejected = [call for call in burst if call.done()]
        assert len(rejected) == len(texts) - 4 and gate.batcher.queued_rows == 4
        gate.open()
        answered = [call for call in burst if call not in rejected]
        results = [call.result() for call in answered]
        assert first.result().results[0].label
    failures = [decode(call.exception()) for call in rejected]
    assert {failure.code for failure in failures} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    for failure in failures:
        assert failure.reason == "QUEUE_FULL" and "queue is full" in failure.message
        assert failure.retry_delay is not None and 0.05 <= failure.retry_delay <= 10
        assert failure.trailers is not None
        assert int(failure.trailers["grpc-retry-pushback-ms"]) == round(failure.retry_delay * 1000)
    # The queued requests got their own correct answers: the same as asked again with the gate open.
    with grpc.insecure_channel(limited.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        for call, result in zip(answered, results):
            text = texts[burst.index(call)]
            again = stub.ClassifySentiment(st.ClassifySentimentRequest(texts=[text]), timeout=30)
            assert result.results[0].label == again.results[0].label
            assert [s.score for s in result.results[0].scores] == pytest.approx(
                [s.score for s in again.results[0].scores], abs=1e-5
            )


def test_concurrency_limit_refuses_at_once(tiny_config: ServerConfig) -> None:
    config = dataclasses.replace(tiny_config, max_concurrent_requests=3)
    with BackgroundServer(config) as running, grpc.insecure_channel(running.address) as channel:
        gate = EncoderGate(running)
        try:
            held = [classify(channel, f"held {i}") for i in range(3)]
            wait_until(lambda: running._server.admission.in_flight == 3 and gate.entered.is_set())
            extra = [classify(channel, f"extra {i}") for i in range(4)]
            wait_until(lambda: all(call.done() for call in extra))
            assert not any(call.done() for call in held)
            gate.open()
            answers = [call.result() for call in held]
        finally:
            gate.restore()
    assert all(answer.results[0].label for answer in answers)
    failures = [decode(call.exception()) for call in extra]
    for failure in failures:
        assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED and failure.reason == "TOO_MANY_REQUESTS"
        assert "limit is 3" in failure.message and failure.retry_delay is not None


def test_too_many_tokens_is_invalid_argument_before_queueing(limited: BackgroundServer) -> None:
    before = limited.runtime.batcher.stats.rows
    with grpc.insecure_channel(limited.address) as channel:
        tokenizer = limited.runtime.encoder.tokenizer
        long_text = "word"
        while len(tokenizer(long_text)["input_ids"]) <= 32:  # one fits the 64-token limit, two do not
            long_text += " word"
        call = classify(channel, long_text)
        call2 = st_grpc.SentimentServiceStub(channel).ClassifySentiment.future(
            st.ClassifySentimentRequest(texts=[long_text, long_text]), timeout=30
        )
        assert call.result().results
        failure = decode(call2.exception())
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.reason == "REQUEST_TOO_LARGE"
    assert "at most 64" in failure.message and failure.violations.keys() == {"texts"}
    assert limited.runtime.batcher.stats.rows == before + 1


def test_message_size_limit_is_resource_exhausted(tiny_config: ServerConfig) -> None:
    config = dataclasses.replace(tiny_config, max_message_bytes=2048)
    with BackgroundServer(config) as running, grpc.insecure_channel(running.address) as channel:
        stub = st_grpc.SentimentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["x" * 4096]), timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["fine"]), timeout=30).results


def test_requests_that_expire_in_the_queue_never_reach_the_encoder(
    limited: BackgroundServer, gate: EncoderGate
) -> None:
    stats = gate.batcher.stats
    dropped_before = stats.dropped_expired + stats.dropped_cancelled
    with grpc.insecure_channel(limited.address) as channel:
        holder = classify(channel, "hold the encoder")
        assert gate.entered.wait(10)
        short = [classify(channel, f"in a hurry {i}", timeout=0.3) for i in range(3)]
        wait_until(lambda: all(call.done() for call in short))
        codes = [call.exception().code() for call in short]
        gate.open()
        holder.result()
        wait_until(lambda: stats.dropped_expired + stats.dropped_cancelled == dropped_before + 3)
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 3
    assert gate.rows_run == 1  # only the holder's row was forwarded


def test_client_cancel_frees_its_slot_and_its_row(limited: BackgroundServer, gate: EncoderGate) -> None:
    admission = limited._server.admission
    stats = gate.batcher.stats
    cancelled_before = stats.dropped_cancelled
    with grpc.insecure_channel(limited.address) as channel:
        holder = classify(channel, "hold the encoder")
        assert gate.entered.wait(10)
        leaving = classify(channel, "I will not wait")
        wait_until(lambda: admission.in_flight == 2 and gate.batcher.queued_rows == 1)
        assert leaving.cancel()
        wait_until(lambda: admission.in_flight == 1)
        gate.open()
        holder.result()
        wait_until(lambda: stats.dropped_cancelled == cancelled_before + 1)
    assert gate.rows_run == 1


class _SpentContext:
    """A servicer context whose deadline has passed (as after a long wait for a worker thread)."""

    def time_remaining(self) -> float:
        return 0.0


def test_deadline_spent_before_queueing_is_refused_without_a_forward(limited: BackgroundServer) -> None:
    from bertserve.plugin import TextClassificationInput
    from bertserve.plugin.errors import DeadlineExceeded

    runtime = limited.runtime
    before = runtime.batcher.stats.rows
    head = runtime.head("", task="sentiment")
    with pytest.raises(DeadlineExceeded, match="deadline passed before preprocessing"):
        limited.call(runtime.run(head, [TextClassificationInput(text="late")], _SpentContext(), field_of=str))
    with pytest.raises(DeadlineExceeded, match="before the request reached the batch queue"):
        limited.call(runtime.batcher.submit(head, head.preprocess(TextClassificationInput(text="late")), timeout=0))
    assert runtime.batcher.stats.rows == before


def test_client_retries_a_full_queue_after_the_servers_delay(limited: BackgroundServer, gate: EncoderGate) -> None:
    """End to end: RESOURCE_EXHAUSTED carries a delay, the client's retry policy waits it and then succeeds."""
    from bertserve_client import BertServeClient

    rejected = limited._server.metrics.rejected.labels("queue_full")
    before = rejected._value.get()
    with grpc.insecure_channel(limited.address) as channel:
        holder = classify(channel, "hold the encoder")
        assert gate.entered.wait(10)
        queued = [classify(channel, f"queued {i}") for i in range(4)]
        wait_until(lambda: gate.batcher.queued_rows == 4)
        threading.Timer(0.05, gate.open).start()
        with BertServeClient(limited.address, timeout=30) as client:
            started = time.monotonic()
            result = client.sentiment("patient")
            waited = time.monotonic() - started
        assert holder.result() and all(call.result() for call in queued)
    assert result.label and rejected._value.get() > before  # refused at least once, then answered
    assert waited >= 0.045


def _queue_expecting(wait: float | None) -> Any:
    """A RowQueue whose encoder would need `wait` seconds for what is pending (None: no rate measured yet)."""
    return RowQueue(BatchingConfig(), ServerMetrics(), lambda: 0.25, lambda rows: wait)


def test_rows_that_would_wait_past_half_their_deadline_are_refused_at_once() -> None:
    row = [(object(), EncodedRow([101, 7, 102], [0, 0, 0]))]

    async def scenario() -> None:
        queue = _queue_expecting(1.0)
        with pytest.raises(QueueFull) as refused:
            queue.add([row], timeout=1.9)
        assert refused.value.reason == "DEADLINE_UNREACHABLE" and refused.value.retry_delay == 0.25
        assert refused.value.metadata == {"expected_wait_seconds": "1.000", "deadline_seconds": "1.900"}
        assert queue._metrics.rejected.labels("deadline_unreachable")._value.get() == 1
        assert len(queue) == 0
        queue.add([row], timeout=2.1)  # half the time left covers the wait
        queue.add([row], timeout=None)  # no deadline: only the queue bound applies
        _queue_expecting(None).add([row], timeout=0.01)  # no rate measured yet: nothing to refuse on
        assert len(queue) == 2

    asyncio.run(scenario())
