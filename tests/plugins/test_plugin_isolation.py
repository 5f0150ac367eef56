"""Deliberately broken plugins: each is reported with the fix and never stops the server or breaks other heads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import bertserve_heads.fill_mask
import bertserve_heads.next_sentence
import bertserve_heads.question_answering
import bertserve_heads.sentiment
import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.checks import head_problems, hook_problems
from bertserve.plugin import EncodedRow, EncoderOutputs, ServiceDefinition, hookimpl
from bertserve.plugin.hooks import PROJECT_NAME, hook_names
from bertserve.plugin.tasks import TextClassificationInput
from bertserve_client.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    sentiment_pb2 as st,
    sentiment_pb2_grpc as st_grpc,
)
from bertserve_heads.sentiment import SentimentHead
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpc import call_failure

BUILT_INS = [
    ("fill-mask", bertserve_heads.fill_mask),
    ("next-sentence", bertserve_heads.next_sentence),
    ("sentiment", bertserve_heads.sentiment),
    ("question-answering", bertserve_heads.question_answering),
]


def _plugin(*heads: Any, hook: str = "register_heads") -> object:
    """A plugin object whose hook (named `hook`, to misspell it) registers `heads`."""

    def register_heads(register, config):  # type: ignore[no-untyped-def]
        for head in heads:
            register(head)

    namespace = {"BERTSERVE_API_VERSION": "1.0", hook: staticmethod(hookimpl(register_heads))}
    return type("Plugin", (), namespace)()


def _sentiment_like(name: str, **overrides: Any) -> SentimentHead:
    """A sentiment head named `name`, with methods or attributes replaced by `overrides`."""
    return type(f"Head_{name.replace('-', '_')}", (SentimentHead,), {"name": name, **overrides})()  # type: ignore[no-any-return]


def _raise(message: str) -> Any:
    def method(self: Any, *args: Any) -> Any:
        raise RuntimeError(message)

    return method


def _preprocess_fails_on_boom(self: Any, item: TextClassificationInput) -> list[EncodedRow]:
    if "boom" in item.text:
        raise RuntimeError("tokenizer exploded")
    return SentimentHead.preprocess(self, item)


def _forward_fails_on_boom(self: Any, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
    if any("boom" in row.data for row in rows):
        raise ValueError("cannot read boom")
    return SentimentHead.forward(self, outputs, rows)


def _preprocess_keeping_text(self: Any, item: TextClassificationInput) -> list[EncodedRow]:
    return [EncodedRow(r.input_ids, r.token_type_ids, data=item.text) for r in SentimentHead.preprocess(self, item)]


class _NotADataclass:
    text: str = ""


def _after_one_head(register, config):  # type: ignore[no-untyped-def]
    register(_sentiment_like("half-registered"))
    raise RuntimeError("could not build the second head")


BROKEN: list[tuple[str, object]] = [
    ("misspelled", _plugin(_sentiment_like("never-seen"), hook="register_head")),
    ("no-api-version", type("NoVersion", (), {})()),
    ("no-dataclass", _plugin(_sentiment_like("no-dataclass", input_type=_NotADataclass))),
    (
        "bad-forward",
        _plugin(_sentiment_like("picky", preprocess=_preprocess_keeping_text, forward=_forward_fails_on_boom)),
    ),
    ("bad-warmup", _plugin(_sentiment_like("cold", warmup_input=_raise("no sample for this head")))),
    ("bad-preprocess", _plugin(_sentiment_like("grumpy", preprocess=_preprocess_fails_on_boom))),
    ("bad-load", _plugin(_sentiment_like("empty-load", load=lambda self, context: None))),
    (
        "half",
        type("Half", (), {"BERTSERVE_API_VERSION": "1.0", "register_heads": staticmethod(hookimpl(_after_one_head))})(),
    ),
    (
        "needs-cold",
        type(
            "ColdService",
            (),
            {
                "BERTSERVE_API_VERSION": "1.0",
                "register_services": staticmethod(
                    hookimpl(
                        lambda register, config: register(
                            ServiceDefinition("acme.v1.ColdService", lambda server, runner: None, heads=("cold",))
                        )
                    )
                ),
            },
        )(),
    ),
]


@pytest.fixture(scope="module")
def broken_server(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    sentiment_file = tiny_config.head_files["sentiment"]
    names = ["picky", "cold", "grumpy", "empty-load", "half-registered", "no-dataclass", "never-seen"]
    config = ServerConfig(
        model=tiny_config.model,
        head_files={**tiny_config.head_files, **{name: sentiment_file for name in names}},
        device="cpu",
        port=0,
    )
    with BackgroundServer(config, plugins=[*BUILT_INS, *BROKEN]) as running:
        yield running


@pytest.fixture(scope="module")
def channel(broken_server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(broken_server.address) as opened:
        yield opened


def _heads(channel: grpc.Channel) -> dict[str, Any]:
    response = model_pb2_grpc.ModelServiceStub(channel).ListHeads(model_pb2.ListHeadsRequest(), timeout=10)
    return {head.name: head for head in response.heads}


def test_a_misspelled_hook_refuses_that_plugin_with_the_closest_name(broken_server: BackgroundServer) -> None:
    problems = {p.plugin: p.error for p in broken_server.runtime.registry.problems}
    assert "'register_head' is not a bertserve hook" in problems["misspelled"]
    assert "did you mean 'register_heads'" in problems["misspelled"]
    assert "BERTSERVE_API_VERSION" in problems["no-api-version"]


def test_a_head_that_breaks_the_contract_is_failed_and_listing_still_works(channel: grpc.Channel) -> None:
    heads = _heads(channel)
    broken = heads["no-dataclass"]
    assert broken.state == model_pb2.HEAD_STATE_FAILED and broken.plugin == "no-dataclass"
    assert "input_type" in broken.reason and "not a dataclass" in broken.reason and "@dataclass" in broken.reason
    stub = model_pb2_grpc.ModelServiceStub(channel)
    assert stub.GetHead(model_pb2.GetHeadRequest(name="no-dataclass"), timeout=10).head.state == broken.state
    assert heads["sentiment"].state == model_pb2.HEAD_STATE_LOADED
    assert heads["sentiment"].input_schema.fields["properties"].struct_value.fields["text"]


def test_a_failing_warm_up_marks_the_head_failed_and_its_service_not_serving(channel: grpc.Channel) -> None:
    cold = _heads(channel)["cold"]
    assert cold.state == model_pb2.HEAD_STATE_FAILED and "warm-up failed" in cold.reason
    assert "no sample for this head" in cold.reason
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="acme.v1.ColdService"), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    sentiment = health.Check(health_pb2.HealthCheckRequest(service="bertserve.v1.SentimentService"), timeout=10)
    assert sentiment.status == health_pb2.HealthCheckResponse.SERVING
    failure = call_failure(
        st_grpc.SentimentServiceStub(channel).ClassifySentiment, st.ClassifySentimentRequest(texts=["x"], head="cold")
    )
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and "warm-up failed" in failure.message


def test_load_results_and_half_registrations_fail_just_those_heads(channel: grpc.Channel) -> None:
    heads = _heads(channel)
    assert heads["empty-load"].state == model_pb2.HEAD_STATE_FAILED
    assert "return a HeadDescription" in heads["empty-load"].reason
    half = heads["half-registered"]
    assert half.state == model_pb2.HEAD_STATE_FAILED and "could not build the second head" in half.reason


def test_an_exception_in_preprocess_names_the_head_and_plugin(channel: grpc.Channel) -> None:
    stub = st_grpc.SentimentServiceStub(channel)
    failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["boom"], head="grumpy"))
    assert failure.code == grpc.StatusCode.INTERNAL
    assert "head 'grumpy' (plugin bad-preprocess)" in failure.message and "tokenizer exploded" in failure.message
    assert failure.metadata["stage"] == "preprocess"


def test_a_forward_that_raises_on_one_input_fails_only_that_input(channel: grpc.Channel) -> None:
    stub = st_grpc.SentimentServiceStub(channel)
    texts = [f"caller {i} liked it" for i in range(6)]
    calls = [stub.ClassifySentiment.future(st.ClassifySentimentRequest(texts=[t], head="picky")) for t in texts]
    bad = stub.ClassifySentiment.future(st.ClassifySentimentRequest(texts=["boom"], head="picky"))
    reference = stub.ClassifySentiment(st.ClassifySentimentRequest(texts=texts))  # the same weights
    for call, expected in zip(calls, reference.results):
        assert call.result(timeout=10).results[0].label == expected.label
    with pytest.raises(grpc.RpcError) as raised:
        bad.result(timeout=10)
    assert raised.value.code() == grpc.StatusCode.INTERNAL and "cannot read boom" in (raised.value.details() or "")


def test_analyze_reports_each_heads_error_in_place(channel: grpc.Channel) -> None:
    request = inference_pb2.AnalyzeRequest(
        inputs=[inference_pb2.AnalyzeInput(text="a fine day"), inference_pb2.AnalyzeInput(text="boom")],
        heads=[
            inference_pb2.HeadOptions(head="sentiment", options=struct_pb2.Struct()),
            inference_pb2.HeadOptions(head="picky", options=struct_pb2.Struct()),
            inference_pb2.HeadOptions(head="grumpy", options=struct_pb2.Struct()),
        ],
    )
    results = inference_pb2_grpc.InferenceServiceStub(channel).Analyze(request, timeout=10).results
    fine, boom = ([(o.head, o) for o in result.outputs] for result in results)
    assert [name for name, _ in fine] == ["sentiment", "picky", "grumpy"]
    for name, output in fine + boom[:1]:
        assert not output.HasField("error") and output.output.fields["label"].string_value, name
    scores = [output.output.fields["score"].number_value for _, output in fine]  # same weights, same text
    assert scores == pytest.approx([scores[0]] * 3, abs=1e-5)
    picky_error = boom[1][1].error
    assert picky_error.code == grpc.StatusCode.INTERNAL.value[0] and picky_error.reason == "HEAD_FAILED"
    assert "cannot read boom" in picky_error.message and not boom[1][1].HasField("output")
    grumpy_error = boom[2][1].error
    assert grumpy_error.code == grpc.StatusCode.INTERNAL.value[0] and "tokenizer exploded" in grumpy_error.message


def test_a_head_of_a_refused_plugin_is_a_failed_precondition_naming_it(channel: grpc.Channel) -> None:
    stub = st_grpc.SentimentServiceStub(channel)
    failure = call_failure(stub.ClassifySentiment, st.ClassifySentimentRequest(texts=["x"], head="never-seen"))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "PLUGIN_REFUSED"
    assert "misspelled" in failure.message and "register_head" in failure.message
    assert "misspelled" in failure.metadata["refused_plugins"].split(",")


def test_the_server_still_serves_its_healthy_heads(channel: grpc.Channel) -> None:
    heads = _heads(channel)
    for name in ("sentiment", "fill-mask", "next-sentence", "picky"):
        assert heads[name].state == model_pb2.HEAD_STATE_LOADED, name
    reply = st_grpc.SentimentServiceStub(channel).ClassifySentiment(st.ClassifySentimentRequest(texts=["good"]))
    assert reply.results[0].label


# --- the pure checks ---------------------------------------------------------------------------------------------


def test_hook_problems_suggest_the_closest_hook() -> None:
    plugin = _plugin(hook="register_service")
    (problem,) = hook_problems(plugin, hook_names(), PROJECT_NAME)
    assert "'register_service'" in problem and "did you mean 'register_services'" in problem
    assert hook_problems(_plugin(), hook_names(), PROJECT_NAME) == []


@dataclass(frozen=True)
class _Unschematic:
    value: complex


def test_head_problems_name_each_broken_part() -> None:
    assert head_problems(SentimentHead()) == []
    problems = " | ".join(
        head_problems(
            _sentiment_like(
                "bad",
                task="",
                output_type=_Unschematic,
                text_fields=("txt",),
                forward=lambda self, outputs: [],
            )
        )
    )
    assert "`task` is empty" in problems
    assert "`output_type` _Unschematic has no JSON Schema" in problems
    assert "`forward` does not take 2 argument(s)" in problems
    # text fields are checked once the types are sound
    assert "`text_fields` names ['txt']" in " ".join(head_problems(_sentiment_like("bad", text_fields=("txt",))))


def test_a_head_without_a_usable_name_refuses_the_plugin(tiny_config: ServerConfig) -> None:
    from bertserve.model.plugins import register_plugins

    registry = register_plugins(tiny_config, [("nameless", _plugin(_sentiment_like("has space")))])
    (problem,) = registry.problems
    assert problem.plugin == "nameless" and "'has space'" in problem.error and "letters, digits" in problem.error
    assert registry.records() == []
