"""The Python client library against a real server: sync and asyncio flavours."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve_client import (
    AnswerResult,
    AsyncBertServeClient,
    BertServeClient,
    FillMaskResult,
    HeadOutputError,
    HeadState,
    InvalidArgumentError,
    NotFoundError,
)

CONTEXT = "john went home at night . mary went to school in the day ."
PROTOS = Path(__file__).resolve().parents[2] / "protos" / "bertserve" / "v1"


def proto_default(proto: str, field: str) -> int:
    """The default a .proto comment states for ``field`` ("... 0 means N."), which the server applies."""
    text = (PROTOS / proto).read_text()
    # The comment lines right above the field, one of them saying "0 means N".
    found = re.search(rf"//[^\n]*\b0 means (\d+)\b[^\n]*\n(?:\s*//[^\n]*\n)*\s*\w+ {field} = \d+;", text)
    assert found, f"{proto} states no default for {field}"
    return int(found.group(1))


def test_sync_client_single_and_list_inputs(server: BackgroundServer) -> None:
    with BertServeClient(server.address) as client:
        client.wait_until_ready(timeout=10)
        single = client.fill_mask("the [MASK] was good .", top_k=3)
        assert isinstance(single, FillMaskResult) and len(single.masks[0].predictions) == 3
        many = client.fill_mask(["the [MASK] was good .", "a [MASK] [MASK] ."], top_k=2)
        assert [len(r.masks) for r in many] == [1, 2]
        # Each candidate of a multi-mask text fills its own mask and leaves the other in place.
        assert all(p.sequence.count("[MASK]") == 1 for m in many[1].masks for p in m.predictions)
        assert "[CLS]" not in many[1].masks[0].predictions[0].sequence
        assert many[0] == single.__class__(masks=many[0].masks)
        assert [p.token_id for p in many[0].masks[0].predictions] == [
            p.token_id for p in single.masks[0].predictions[:2]
        ]

        probability = client.next_sentence("john went home .", "he slept .").is_next_probability
        assert 0.0 <= probability <= 1.0
        assert len(client.next_sentence([("a", "b"), ("c", "d")])) == 2

        sentiment = client.sentiment("a great movie")
        assert sentiment.label == max(sentiment.scores, key=lambda s: s.score).label
        assert abs(sum(s.score for s in sentiment.scores) - 1.0) < 1e-5

        answer = client.answer("who went home ?", CONTEXT, top_k=2)
        assert isinstance(answer, AnswerResult) and len(answer.answers) == 2
        assert all(CONTEXT[a.start : a.end] == a.text for a in answer.answers)
        with_null = client.answer("who went home ?", CONTEXT, top_k=50, allow_no_answer=True)
        assert sum(a.no_answer for a in with_null.answers) == 1

        heads = {h.name: h for h in client.list_heads()}
        assert all(h.state is HeadState.LOADED for h in heads.values())
        assert client.server_info().hidden_size == 32


def test_sync_client_raises_typed_errors(server: BackgroundServer) -> None:
    with BertServeClient(server.address) as client:
        with pytest.raises(InvalidArgumentError) as raised:
            client.fill_mask(["the [MASK] .", "no mask"])
        assert raised.value.reason == "INVALID_ARGUMENT"
        assert [v.field for v in raised.value.field_violations] == ["texts[1]"]
        with pytest.raises(NotFoundError):
            client.sentiment("good", head="nope")


def test_async_client_runs_concurrent_calls(server: BackgroundServer) -> None:
    async def scenario() -> None:
        async with AsyncBertServeClient(server.address) as client:
            results = await asyncio.gather(
                client.fill_mask("the [MASK] was good ."),
                client.sentiment(["good", "bad"]),
                client.next_sentence("a", "b"),
                client.answer("where did mary go ?", CONTEXT),
            )
            assert len(results[1]) == 2 and results[3].best is not None
            # Options left out are the server's defaults, as the .proto comments state them.
            assert len(results[0].masks[0].predictions) == proto_default("fill_mask.proto", "top_k")
            assert len(results[3].answers) == proto_default("question_answering.proto", "top_k")
            with pytest.raises(InvalidArgumentError):
                await client.sentiment("")

    asyncio.run(scenario())


def test_generic_calls_against_the_real_server(server: BackgroundServer) -> None:
    with BertServeClient(server.address) as client:
        head = client.get_head("sentiment")
        assert head.input_schema["required"] == ["text"] and head.text_fields == ("text",)
        assert head.package == "bertserve" and head.version
        predicted = client.predict("sentiment", {"text": "a great movie"})
        typed = client.sentiment("a great movie")
        assert predicted["label"] == typed.label and abs(predicted["score"] - typed.score) < 1e-6
        texts = ["a great [MASK]", "the [MASK] was bad"]
        analyzed = client.analyze(texts, ["sentiment", ("fill-mask", {"top_k": 2})])
        assert analyzed[0]["sentiment"]["label"] == client.sentiment(texts[0]).label
        assert len(analyzed[1]["fill-mask"]["masks"][0]["predictions"]) == 2
        # A head that cannot take an input fails there alone, in place of its output.
        outputs = client.analyze("no mask here", ["fill-mask", "sentiment"])
        failed = outputs["fill-mask"]
        assert isinstance(failed, HeadOutputError) and failed.head == "fill-mask"
        assert (failed.code, failed.field) == (grpc.StatusCode.INVALID_ARGUMENT, "inputs[0]")
        assert not isinstance(outputs["sentiment"], HeadOutputError) and outputs["sentiment"]["label"]
        with pytest.raises(InvalidArgumentError) as raised:
            client.predict("sentiment", {"text": 5})
        assert [v.field for v in raised.value.field_violations] == ["input.text"]
