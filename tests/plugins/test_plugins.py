"""Plugin discovery, registration and isolation: duplicates, raising plugins, failing heads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import bertserve_heads.fill_mask
import bertserve_heads.next_sentence
import bertserve_heads.question_answering
import bertserve_heads.sentiment
import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.plugins import discover_plugins, register_plugins
from bertserve.model.registry import DuplicateNameError
from bertserve.plugin import EncodedRow, EncoderOutputs, Head, HeadDescription, HeadLoadContext, hookimpl
from bertserve.plugin.tasks import ClassificationOutput, TextClassificationInput
from bertserve_client.v1 import model_pb2, model_pb2_grpc, sentiment_pb2 as st, sentiment_pb2_grpc as st_grpc
from bertserve_heads.sentiment import SentimentHead
from rpc import call_failure

BUILT_INS = [
    ("fill-mask", bertserve_heads.fill_mask),
    ("next-sentence", bertserve_heads.next_sentence),
    ("sentiment", bertserve_heads.sentiment),
    ("question-answering", bertserve_heads.question_answering),
]


def test_built_in_heads_come_from_the_public_entry_point_group() -> None:
    plugins = discover_plugins("bertserve.heads")
    builtin = {p.name: p for p in plugins if p.package == "bertserve"}
    assert set(builtin) == {"fill-mask", "next-sentence", "sentiment", "question-answering"}
    assert all(p.version for p in builtin.values())
    registry = register_plugins(ServerConfig(), plugins)
    assert {r.head.name for r in registry.records()} >= {
        "fill-mask",
        "next-sentence",
        "sentiment",
        "question-answering",
    }


class _AnotherSentiment:
    BERTSERVE_API_VERSION = "1.0"

    @hookimpl
    def register_heads(self, register, config):  # type: ignore[no-untyped-def]
        register(SentimentHead())


def test_duplicate_head_name_fails_start_up_naming_both_plugins() -> None:
    with pytest.raises(DuplicateNameError) as raised:
        register_plugins(ServerConfig(), [*BUILT_INS, ("acme-sentiment", _AnotherSentiment())])
    message = str(raised.value)
    assert "'sentiment'" in message and "acme-sentiment" in message and "sentiment" in message


class _RaisingPlugin:
    BERTSERVE_API_VERSION = "1.0"

    @hookimpl
    def register_heads(self, register, config):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken plugin")


class _ExplodingLoadHead(SentimentHead):
    name = "exploding"
    task = "sentiment"

    def load(self, context: HeadLoadContext) -> HeadDescription:
        raise RuntimeError("weights corrupted")


class _ExplodingForwardHead(SentimentHead):
    """Loads like the sentiment head, then fails on every batch holding a text with "boom"."""

    name = "flaky"

    def preprocess(self, item: TextClassificationInput) -> list[EncodedRow]:
        return [EncodedRow(row.input_ids, row.token_type_ids, data=item.text) for row in super().preprocess(item)]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        if any("boom" in row.data for row in rows):
            raise ValueError("bug in head")
        return super().forward(outputs, rows)


class _TroublePlugin:
    BERTSERVE_API_VERSION = "1.0"

    @hookimpl
    def register_heads(self, register, config):  # type: ignore[no-untyped-def]
        register(_ExplodingLoadHead())
        register(_ExplodingForwardHead())


def test_raising_plugins_and_heads_are_isolated(tiny_config: ServerConfig) -> None:
    config = ServerConfig(
        model=tiny_config.model,
        head_files={**tiny_config.head_files, "flaky": tiny_config.head_files["sentiment"]},
        device="cpu",
        port=0,
    )
    plugins = [*BUILT_INS, ("raising", _RaisingPlugin()), ("trouble", _TroublePlugin())]
    with BackgroundServer(config, plugins=plugins) as running, grpc.insecure_channel(running.address) as channel:
        registry = running.runtime.registry
        assert [p.plugin for p in registry.problems] == ["raising"]
        assert "broken plugin" in registry.problems[0].error
        heads = {
            h.name: h for h in model_pb2_grpc.ModelServiceStub(channel).ListHeads(model_pb2.ListHeadsRequest()).heads
        }
        assert heads["exploding"].state == model_pb2.HEAD_STATE_FAILED
        assert "weights corrupted" in heads["exploding"].reason and heads["exploding"].plugin == "trouble"
        assert heads["sentiment"].state == model_pb2.HEAD_STATE_LOADED
        assert list(heads["sentiment"].labels) == ["negative", "neutral", "positive"]

        stub = st_grpc.SentimentServiceStub(channel)
        failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["boom"], head="flaky"))
        assert failure.code == grpc.StatusCode.INTERNAL and "flaky" in failure.message
        assert "plugin trouble" in failure.message and "bug in head" in failure.message
        assert stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["good"], head="flaky")).results[0].label
        failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["good"], head="exploding"))
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and "weights corrupted" in failure.message
        assert stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["good"])).results[0].label


def test_head_failure_fails_only_its_rows_in_a_mixed_batch(tiny_config: ServerConfig) -> None:
    """A batch holding rows of a failing head and of a healthy one: only the failing rows fail.

    The head's rows are re-run in smaller groups to find the bad one, so the
    flaky head's good rows are answered too, in the same encoder forward.
    """
    import asyncio

    from bertserve.plugin.errors import HeadFailed

    config = ServerConfig(
        model=tiny_config.model,
        head_files={**tiny_config.head_files, "flaky": tiny_config.head_files["sentiment"]},
        device="cpu",
        port=0,
    )
    with BackgroundServer(config, plugins=[*BUILT_INS, ("trouble", _TroublePlugin())]) as running:
        runtime = running.runtime
        good, flaky = runtime.head("sentiment", task="sentiment"), runtime.head("flaky", task="sentiment")
        item = TextClassificationInput(text="a good movie")
        bad = TextClassificationInput(text="boom goes the movie")

        async def mixed() -> list[Any]:
            # The submissions queue in the same event-loop tick, so they share one batch.
            return await asyncio.gather(
                runtime.batcher.submit(flaky, flaky.preprocess(item)),
                runtime.batcher.submit(flaky, flaky.preprocess(bad)),
                runtime.batcher.submit(flaky, flaky.preprocess(item)),
                runtime.batcher.submit(good, good.preprocess(item)),
                return_exceptions=True,
            )

        forwards = runtime.batcher.stats.forwards
        flaky_good, flaky_bad, flaky_good_again, good_result = running.call(mixed())
        assert runtime.batcher.stats.forwards - forwards == 1
        assert isinstance(flaky_bad, HeadFailed) and "flaky" in str(flaky_bad)
        assert flaky_good == flaky_good_again == good_result  # same weights, same text: same scores
        assert isinstance(good.postprocess(item, [], good_result), ClassificationOutput)


def test_a_head_is_an_abstract_contract() -> None:
    class Incomplete(Head[TextClassificationInput, ClassificationOutput]):
        name = task = "incomplete"

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


class _BlockingHead(SentimentHead):
    """Preprocessing that blocks until the test releases it, like a CPU-heavy head."""

    name = "blocking"
    release = threading.Event()
    entered = threading.Event()

    def preprocess(self, item: TextClassificationInput) -> list[EncodedRow]:
        self.entered.set()
        assert self.release.wait(timeout=30)
        return super().preprocess(item)


class _BlockingPlugin:
    BERTSERVE_API_VERSION = "1.0"

    @hookimpl
    def register_heads(self, register, config):  # type: ignore[no-untyped-def]
        register(_BlockingHead())


def test_slow_preprocessing_does_not_stall_the_event_loop(tiny_config: ServerConfig) -> None:
    config = ServerConfig(
        model=tiny_config.model,
        head_files={**tiny_config.head_files, "blocking": tiny_config.head_files["sentiment"]},
        device="cpu",
        port=0,
        warmup=False,  # the blocking head would fail its warm-up
    )
    with BackgroundServer(config, plugins=[*BUILT_INS, ("blocking", _BlockingPlugin())]) as running:
        with grpc.insecure_channel(running.address) as channel:
            slow = st_grpc.SentimentServiceStub(channel).ClassifySentiment.future(
                st.ClassifySentimentRequest(texts=["good"], head="blocking"), timeout=30
            )
            assert _BlockingHead.entered.wait(timeout=10)
            # While the head's preprocessing is blocked, the server still answers.
            heads = model_pb2_grpc.ModelServiceStub(channel).ListHeads(model_pb2.ListHeadsRequest(), timeout=5).heads
            assert "blocking" in {h.name for h in heads} and not slow.done()
            # ... and other heads' requests are preprocessed on other worker threads.
            other = st_grpc.SentimentServiceStub(channel).ClassifySentiment(
                st.ClassifySentimentRequest(texts=["bad"]), timeout=5
            )
            assert other.results[0].label and not slow.done()
            _BlockingHead.release.set()
            assert slow.result(timeout=10).results[0].label
