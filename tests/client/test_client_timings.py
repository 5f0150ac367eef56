"""The clients' ``on_timings``: the server's per-call timings, read from trailing metadata."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from bertserve.background import BackgroundServer
from bertserve_client import AsyncBertServeClient, BertServeClient, InvalidArgumentError, ServerTimings
from bertserve_client._timings import parse_timings

TRAILERS = (
    ("x-total-time", "12.500"),
    ("x-tokenization-time", "0.250"),
    ("x-queue-time", "3.000"),
    ("x-inference-time", "8.125"),
)


def test_parse_reads_the_four_keys_and_nothing_less() -> None:
    assert parse_timings((("x-request-id", "r1"), *TRAILERS)) == ServerTimings(12.5, 0.25, 3.0, 8.125)
    assert parse_timings(TRAILERS[:3]) is None
    assert parse_timings(None) is None
    assert parse_timings((*TRAILERS[:3], ("x-inference-time", "soon"))) is None


def check(timings: ServerTimings) -> None:
    assert min(timings.total_ms, timings.tokenization_ms, timings.queue_ms, timings.inference_ms) >= 0
    assert timings.inference_ms > 0
    assert timings.queue_ms + timings.inference_ms <= timings.total_ms


def test_the_blocking_client_passes_each_calls_timings(server: BackgroundServer) -> None:
    seen: list[ServerTimings] = []
    with BertServeClient(server.address, on_timings=seen.append) as client:
        client.sentiment(["a fine film", "a dull film"])
        client.predict("fill-mask", {"text": "the [MASK] was good ."})
        client.list_heads()  # no rows through the encoder: no timings
        with pytest.raises(InvalidArgumentError):
            client.fill_mask("no mask here")  # an error carries none
    assert len(seen) == 2
    for timings in seen:
        check(timings)


def test_the_asyncio_client_passes_each_calls_timings(server: BackgroundServer) -> None:
    seen: list[ServerTimings] = []

    async def calls() -> None:
        async with AsyncBertServeClient(server.address, on_timings=seen.append) as client:
            await asyncio.gather(client.sentiment("a fine film"), client.answer("who went ?", "john went home ."))

    asyncio.run(calls())
    assert len(seen) == 2
    for timings in seen:
        check(timings)


def test_a_callback_that_raises_does_not_fail_the_call(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(timings: ServerTimings) -> None:
        raise RuntimeError("metrics backend down")

    with (
        caplog.at_level(logging.WARNING, logger="bertserve_client"),
        BertServeClient(server.address, on_timings=broken) as client,
    ):
        assert client.sentiment("a fine film").label
    assert "on_timings callback raised" in caplog.text


def test_the_readme_example_runs(server: BackgroundServer, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md").read_text()
    section = readme.split("### Server timings", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(example.replace("localhost:50051", server.address), namespace)
    client = namespace["client"]
    assert isinstance(client, BertServeClient)
    with client:
        client.sentiment("a fine film")
    assert re.fullmatch(r"queue [\d.]+ ms, inference [\d.]+ ms of [\d.]+ ms\n", capsys.readouterr().out)
