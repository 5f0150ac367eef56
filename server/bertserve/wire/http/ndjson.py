"""Streaming RPCs over HTTP: request messages as NDJSON lines in, reply messages as NDJSON lines out, both at once.

``POST /package.Service/Method`` with ``Content-Type: application/x-ndjson``:
one request message per line (the proto3 JSON mapping), and a ``200`` with a
chunked ``application/x-ndjson`` body, one reply message per line, each
written as it arrives while the request body is still being read. One task
feeds the gRPC stream from the body's lines as they come, waiting while gRPC's
flow control holds a message (so the server's limit on inputs in flight holds
back the body, and TCP holds back the client); the handler writes the replies.

Errors before the ``200`` (authentication, admission, a server not ready) are
plain HTTP errors with a `google.rpc.Status` body, as for unary calls. After
it the status cannot change: a malformed line stops the reading, the inputs
before it are answered, and the stream ends with a last line
``{"error": <google.rpc.Status>}``; so does a call that fails mid-stream. A
client that goes away cancels the gRPC call: its queued inputs are dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from bertserve.wire.http.errors import local_status
from bertserve.wire.http.gateway import CallFailed, Gateway, Rpc, StreamCall

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


class _BadLine(Exception):
    """A line (or the body) that ends the stream: `status` goes out as its last line."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class _Feed:
    """What feeding the call from the body ended with: None, or the error of a bad line."""

    error: status_pb2.Status | None = None


async def stream_rpc(
    request: web.Request,
    gateway: Gateway,
    rpc: Rpc,
    *,
    rid: str,
    authorization: list[str],
    timeout: float | None,
) -> web.StreamResponse:
    """Answer a streaming `rpc` with NDJSON both ways; `CallFailed` (before any byte) when the server refuses it."""
    call = gateway.stream(rpc, rid=rid, authorization=authorization, timeout=timeout)
    feed = _Feed()
    feeder = asyncio.create_task(_feed(request.content, call, rpc, gateway.max_message_bytes, feed))
    try:
        rid = await call.opened()  # a refusal raises CallFailed: an HTTP error status, as for a unary call
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "x-request-id": rid})
        await response.prepare(request)
        try:
            error = await _relay(call, response)
            error = feed.error if error is None else error
            if error is not None:
                await response.write(_line({"error": _status_json(error)}))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away: the call is cancelled below
        return response
    finally:
        feeder.cancel()
        call.cancel()


async def _relay(call: StreamCall, response: web.StreamResponse) -> status_pb2.Status | None:
    """Write each reply as a line as it arrives; the call's status when it failed."""
    try:
        while (reply := await call.read()) is not None:
            await response.write(_line(json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)))
    except CallFailed as failure:
        return failure.status
    return None


async def _feed(body: StreamReader, call: StreamCall, rpc: Rpc, limit: int, feed: _Feed) -> None:
    """Write each line's request to `call` as it arrives, then half-close; a bad line stops it (`feed.error`)."""
    try:
        number = 0
        async for number, line in _lines(body, limit):
            if line.strip() and not await call.write(_parse(line, rpc, number)):
                return  # the call is over: its reader reports how it ended
    except _BadLine as bad:
        feed.error = bad.status
    except (OSError, HttpProcessingError) as error:  # a body cut short: the client went, or broke its chunks
        feed.error = _bad(f"the request body broke off after line {number}: {error}", "BODY_INCOMPLETE").status
    except Exception:  # a bug: end the stream (rather than leave it waiting for a half-close) and say so
        log.exception("reading the NDJSON body of %s failed", rpc.path)
        feed.error = _bad("internal error reading the request body", "INTERNAL", grpc.StatusCode.INTERNAL).status
    await call.done_writing()


async def _lines(body: StreamReader, limit: int) -> AsyncIterator[tuple[int, bytes]]:
    """The body's lines, numbered from 1, as they arrive, each at most `limit` bytes (the last may lack its newline)."""
    buffer = bytearray()
    number = 0
    while chunk := await body.readany():
        start, scan = 0, len(buffer)
        buffer += chunk
        while (end := buffer.find(b"\n", scan)) >= 0:
            number += 1
            if end - start > limit:
                raise _too_long(number, limit)
            yield number, bytes(buffer[start:end])
            start = scan = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            raise _too_long(number + 1, limit)
    if buffer:
        yield number + 1, bytes(buffer)


def _parse(line: bytes, rpc: Rpc, number: int) -> Message:
    try:
        return json_format.Parse(line.decode("utf-8"), rpc.request())
    except (UnicodeDecodeError, json_format.ParseError, RecursionError) as error:
        raise _bad(
            f"line {number} is not a valid {rpc.request.DESCRIPTOR.full_name}: {error}", "INVALID_JSON"
        ) from None


def _bad(message: str, reason: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> _BadLine:
    return _BadLine(local_status(code, message, reason))


def _too_long(number: int, limit: int) -> _BadLine:
    message = f"line {number} is over limits.max_message_bytes ({limit} bytes)"
    return _bad(message, "REQUEST_TOO_LARGE", grpc.StatusCode.RESOURCE_EXHAUSTED)


def _status_json(status: status_pb2.Status) -> dict[str, Any]:
    return json_format.MessageToDict(status, always_print_fields_with_no_presence=True)


def _line(content: dict[str, Any]) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode() + b"\n"
