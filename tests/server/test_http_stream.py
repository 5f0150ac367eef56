"""Streaming RPCs over HTTP: PredictStream as NDJSON both ways, over a real socket with a chunked request body."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, SecurityConfig, ServerConfig
from bertserve.wire.http.ndjson import _lines
from bertserve_client import BertServeClient
from gates import EncoderGate, wait_until

TOKEN = "tok-http-stream-3e7b"
PREDICT_STREAM = "/bertserve.v1.InferenceService/PredictStream"
NDJSON = "application/x-ndjson"
TEXTS = ["a great movie", "the plot was dull", "I laughed a lot", "too long by an hour"]


@pytest.fixture(scope="module")
def door(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    """Tokens on, the HTTP door open, at most 4 inputs of one stream in flight."""
    config = dataclasses.replace(
        tiny_config, http=HttpConfig(port=0), security=SecurityConfig(tokens=(TOKEN,)), max_inputs_per_request=4
    )
    with BackgroundServer(config) as running:
        yield running


def port(server: BackgroundServer) -> int:
    assert server._server is not None and server._server.http_port is not None
    return server._server.http_port


class Stream:
    """One HTTP/1.1 POST whose body goes out in chunks, a line at a time, while its reply is read line by line."""

    def __init__(
        self,
        http_port: int,
        *,
        token: str | None = TOKEN,
        content_type: str = NDJSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        self.connection.putrequest("POST", PREDICT_STREAM)
        headers = {
            "Content-Type": content_type,
            "Transfer-Encoding": "chunked",
            "X-Request-Id": "stream-test",
            **(headers or {}),
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for key, value in headers.items():
            self.connection.putheader(key, value)
        self.connection.endheaders()
        self.response: http.client.HTTPResponse | None = None

    def send(self, *messages: dict[str, Any] | bytes) -> None:
        data = b"".join(m if isinstance(m, bytes) else json.dumps(m).encode() + b"\n" for m in messages)
        self.connection.send(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        self.connection.send(b"0\r\n\r\n")

    def reply(self) -> http.client.HTTPResponse:
        if self.response is None:
            self.response = self.connection.getresponse()
        return self.response

    def line(self) -> dict[str, Any] | None:
        raw = self.reply().readline()
        return json.loads(raw) if raw else None

    def lines(self) -> list[dict[str, Any]]:
        return [line for line in iter(self.line, None) if line is not None]

    def close(self) -> None:
        self.connection.close()


def _item(id_: str, head: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"id": id_, "head": head, "input": input_}


def _inputs() -> list[dict[str, Any]]:
    inputs = [_item(f"s{i}", "sentiment", {"text": text}) for i, text in enumerate(TEXTS)]
    inputs.append(_item("mask", "fill-mask", {"text": "the [MASK] was great", "top_k": 2}))
    inputs.append(_item("nsp", "next-sentence", {"first": "he went home .", "second": "he slept ."}))
    inputs.append(_item("qa", "question-answering", {"question": "who went home", "context": "john went home"}))
    inputs.append(_item("bad-field", "sentiment", {"txt": "misspelt field"}))
    inputs.append(_item("bad-head", "no-such-head", {"text": "x"}))
    return inputs


def _assert_close(got: object, expected: object) -> None:
    """Equal JSON, numbers within 1e-5 (a stream's batches may differ from a lone call's)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key in expected:
            _assert_close(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for a, b in zip(got, expected):
            _assert_close(a, b)
    elif isinstance(expected, float | int) and not isinstance(expected, bool):
        assert got == pytest.approx(expected, abs=1e-5)
    else:
        assert got == expected


def test_every_input_is_answered_as_predict_would_with_errors_in_place(door: BackgroundServer) -> None:
    stream = Stream(port(door))
    try:
        stream.send(*_inputs())
        stream.end()
        reply = stream.reply()
        assert reply.status == 200 and reply.getheader("Content-Type", "").startswith(NDJSON)
        assert reply.getheader("x-request-id") == "stream-test"
        by_id = {line["id"]: line for line in stream.lines()}
    finally:
        stream.close()
    assert sorted(by_id) == sorted(item["id"] for item in _inputs())  # each input answered once
    with BertServeClient(door.address, token=TOKEN) as client:
        for item in _inputs()[:-2]:
            line = by_id[item["id"]]
            assert line["head"] == item["head"] and "error" not in line, line
            _assert_close(line["output"], client.predict(item["head"], item["input"]))
    bad_field, bad_head = by_id["bad-field"]["error"], by_id["bad-head"]["error"]
    assert (bad_field["code"], bad_field["field"]) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "input.text")
    assert bad_head["code"] == grpc.StatusCode.NOT_FOUND.value[0] and "output" not in by_id["bad-head"]


def test_results_arrive_while_the_body_is_still_being_sent(door: BackgroundServer) -> None:
    stream = Stream(port(door))
    try:
        stream.send(_item("first", "sentiment", {"text": "a great film"}))
        assert stream.reply().status == 200
        first = stream.line()
        assert first is not None and first["id"] == "first" and first["output"]["label"]
        stream.send(_item("second", "sentiment", {"text": "a dull film"}))
        second = stream.line()
        assert second is not None and second["id"] == "second"
        stream.end()
        assert stream.line() is None  # the body ended: so does the reply, with no error line
    finally:
        stream.close()


@pytest.mark.parametrize("bad", [b"{not json\n", b'{"id": "x", "hed": "sentiment"}\n', b"\xff\xfe\n"])
def test_a_malformed_line_ends_the_stream_with_its_error(door: BackgroundServer, bad: bytes) -> None:
    stream = Stream(port(door))
    try:
        stream.send(_item("before", "sentiment", {"text": "fine"}), b"\n", bad, _item("after", "sentiment", {}))
        stream.end()
        assert stream.reply().status == 200  # the headers went out before the bad line was read
        lines = stream.lines()
    finally:
        stream.close()
    assert [line.get("id") for line in lines] == ["before", None]  # the line after the bad one is not run
    error = lines[-1]["error"]
    assert error["code"] == 3 and error["message"].startswith("line 3 ")
    assert error["details"][0]["reason"] == "INVALID_JSON" and error["details"][0]["domain"] == "bertserve"


def test_an_empty_body_is_an_empty_stream(door: BackgroundServer) -> None:
    stream = Stream(port(door))
    try:
        stream.end()
        assert stream.reply().status == 200 and stream.lines() == []
    finally:
        stream.close()


@pytest.mark.parametrize(("token", "reason"), [(None, "BEARER_TOKEN_MISSING"), ("wrong", "BEARER_TOKEN_INVALID")])
def test_without_a_valid_token_it_is_401_before_any_stream(
    door: BackgroundServer, token: str | None, reason: str
) -> None:
    stream = Stream(port(door), token=token)
    try:
        stream.send(_item("a", "sentiment", {"text": "fine"}))
        stream.end()
        reply = stream.reply()
        body = json.loads(reply.read())
    finally:
        stream.close()
    assert reply.status == 401 and reply.getheader("Content-Type", "").startswith("application/json"), body
    assert body["code"] == 16 and body["details"][0]["reason"] == reason
    assert reply.getheader("WWW-Authenticate") == "Bearer" and reply.getheader("x-request-id") == "stream-test"


def test_a_stream_before_the_server_is_ready_is_503(tiny_config: ServerConfig) -> None:
    import bertserve.app as app

    def call(http_port: int) -> tuple[int, dict[str, Any]]:
        stream = Stream(http_port, token=None)
        try:
            stream.send(_item("a", "sentiment", {"text": "fine"}))
            stream.end()
            return stream.reply().status, json.loads(stream.reply().read())
        finally:
            stream.close()

    async def run() -> tuple[int, dict[str, Any]]:
        server = app.BertServeServer(dataclasses.replace(tiny_config, http=HttpConfig(port=0)))
        await server.start()  # not loaded: not ready
        try:
            assert server.http_port is not None
            return await asyncio.to_thread(call, server.http_port)
        finally:
            await server.stop(grace=None)

    status, body = asyncio.run(run())
    assert status == 503 and body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]


def test_json_on_a_streaming_route_says_to_send_ndjson(door: BackgroundServer) -> None:
    stream = Stream(port(door), content_type="application/json")
    try:
        stream.send(b"{}")
        stream.end()
        reply = stream.reply()
        body = json.loads(reply.read())
    finally:
        stream.close()
    assert reply.status == 400 and body["details"][0]["reason"] == "STREAMING_RPC"
    assert NDJSON in body["message"]


def test_disconnecting_cancels_the_stream_and_drops_its_queued_inputs(door: BackgroundServer) -> None:
    gate = EncoderGate(door)
    batcher = door.runtime.batcher
    assert door._server is not None
    admission = door._server.admission
    try:
        dropped = batcher.stats.dropped_cancelled
        stream = Stream(port(door))
        try:
            stream.send(_item("0", "sentiment", {"text": "review number 0"}))
            assert gate.entered.wait(10)  # the first input alone in the held forward
            stream.send(*(_item(str(i), "sentiment", {"text": f"review number {i}"}) for i in range(1, 10)))
            wait_until(lambda: batcher.pending_rows == 4)  # the stream's limit: the rest wait in the body
            queued = batcher.queued_rows  # the others are in the held forward
            assert admission.in_flight == 1
        finally:
            stream.close()  # mid-stream, without ending the body
        wait_until(lambda: admission.in_flight == 0)
        gate.open()
        wait_until(lambda: batcher.pending_rows == 0)
        wait_until(lambda: batcher.stats.dropped_cancelled >= dropped + queued)
        assert queued == 3 and gate.rows_run == 1  # only the row already in the forward ran
    finally:
        gate.restore()


def test_a_deadline_that_passes_mid_stream_ends_it_with_an_error_line(door: BackgroundServer) -> None:
    gate = EncoderGate(door)
    try:
        stream = Stream(port(door), headers={"Connect-Timeout-Ms": "300"})
        try:
            stream.send(*(_item(str(i), "sentiment", {"text": f"review number {i}"}) for i in range(10)))
            assert stream.reply().status == 200  # the headers go out once the stream is admitted
            lines = stream.lines()
        finally:
            stream.close()
        assert len(lines) == 1 and lines[0]["error"]["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], lines
    finally:
        gate.restore()


class _Body:
    """The `readany()` of a request body that arrives in the given chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_lines_are_split_across_chunks_and_limited() -> None:
    async def lines(*chunks: bytes, limit: int = 10) -> list[tuple[int, bytes]]:
        return [line async for line in _lines(_Body(*chunks), limit)]  # type: ignore[arg-type]

    got = asyncio.run(lines(b'{"a"', b":1}\r\n\n{}\n{", b'"b":2}'))
    assert got == [(1, b'{"a":1}\r'), (2, b""), (3, b"{}"), (4, b'{"b":2}')]
    assert asyncio.run(lines(b"0123456789\n")) == [(1, b"0123456789")]
    for chunks, number in [((b"01234", b"56789x"), 1), ((b"0\n0123456789x\n",), 2)]:
        with pytest.raises(Exception, match=f"line {number} is over limits.max_message_bytes") as error:
            asyncio.run(lines(*chunks))
        assert error.value.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]  # type: ignore[attr-defined]
