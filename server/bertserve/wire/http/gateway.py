"""The gateway's half that speaks gRPC: the RPC table and one local channel into the server's own gRPC port.

Every HTTP call becomes a real gRPC call on the server, so authentication,
admission, limits, metrics, request ids and logs are exactly those of gRPC:
the same interceptors run. The channel dials a Unix socket that the server
binds for the gateway alone (in a private folder, mode 0700), so it needs no
TLS of its own and does not depend on which interface the TCP port binds.
A unary call's timing trailers (`bertserve.wire.timings`) are kept in
`CALL_TIMINGS` for the reply's headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from bertserve.wire.http.errors import status_from_call
from bertserve.wire.interceptor import REQUEST_ID_KEY, valid_request_id
from bertserve.wire.timings import timing_pairs

#: The timings of the HTTP call's last successful gateway call (set in the caller's task), for its reply's headers.
CALL_TIMINGS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "bertserve_http_call_timings", default=()
)
#: The W3C trace context headers of the HTTP call (set by the middleware), passed on as gRPC metadata so that
#: a traced HTTP request continues its caller's trace.
TRACE_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "bertserve_http_trace_context", default=()
)
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_context(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The request's ``traceparent`` and ``tracestate`` headers, as gRPC metadata pairs."""
    return tuple((name, headers[name]) for name in TRACE_HEADERS if name in headers)


@dataclass(frozen=True)
class Rpc:
    """One RPC the gateway knows: its path (``/package.Service/Method``), descriptor and message classes."""

    path: str
    descriptor: MethodDescriptor
    request: type[Message]
    response: type[Message]

    @property
    def streaming(self) -> bool:
        return bool(self.descriptor.client_streaming or self.descriptor.server_streaming)


def rpc_table(service_names: Iterable[str]) -> dict[str, Rpc]:
    """Every method of the named services found in the default descriptor pool, by path."""
    pool = descriptor_pool.Default()
    table: dict[str, Rpc] = {}
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            continue  # a service registered without a descriptor in the default pool: gRPC only
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            table[path] = Rpc(path, method, request, response)
    return table


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Request-Id`` when the gRPC side would keep it (at most 128 safe characters), else a new one."""
    value = headers.get(REQUEST_ID_KEY, "")
    if valid_request_id(value):
        return value
    return uuid.uuid4().hex


class CallFailed(Exception):
    """A gateway call that ended with a non-OK status."""

    def __init__(self, status: status_pb2.Status, request_id: str) -> None:
        super().__init__(status.message)
        self.status = status
        self.request_id = request_id


class Gateway:
    """Calls the server's own gRPC methods over a local channel.

    It passes on ``authorization``, ``x-request-id`` and the trace context (`TRACE_CONTEXT`).
    """

    def __init__(self, target: str, max_message_bytes: int) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", -1)]
        self._channel = grpc.aio.insecure_channel(target, options=options)
        self._callables: dict[str, Any] = {}
        self.max_message_bytes = max_message_bytes

    def _callable(self, rpc: Rpc) -> Any:
        """The channel's multi-callable for `rpc`: unary, or bidirectional for every streaming kind.

        gRPC frames every kind alike, so a server- or client-streaming method is
        called as a bidirectional one that writes (or reads) a single message.
        """
        callable_ = self._callables.get(rpc.path)
        if callable_ is None:
            factory = self._channel.stream_stream if rpc.streaming else self._channel.unary_unary
            callable_ = self._callables[rpc.path] = factory(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
        return callable_

    async def call(
        self, rpc: Rpc, request: Message, *, rid: str, authorization: Sequence[str] = (), timeout: float | None = None
    ) -> tuple[Message, str]:
        """The reply of `rpc` and the request id the server used; raises `CallFailed` with the rich status."""
        call = self._callable(rpc)(request, metadata=_metadata(rid, authorization), timeout=timeout)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            raise _failed(error, rid) from None
        CALL_TIMINGS.set(timing_pairs(tuple(await call.trailing_metadata() or ())))
        return response, _echoed(tuple(await call.initial_metadata() or ())) or rid

    async def refuse(self, rpc: Rpc, *, rid: str, authorization: Sequence[str] = ()) -> None:
        """Have the server refuse a call of `rpc` without the caller's body: raises `CallFailed`.

        The call carries an empty message, whatever the method's kind (the
        server's refusal reads none), so the refusal, its log line and its
        metric are the server's own. Returns only if the server took the call.
        """
        call = self._channel.unary_unary(rpc.path)(
            b"", metadata=_metadata(rid, authorization), timeout=_REFUSAL_TIMEOUT
        )
        try:
            await call
        except grpc.aio.AioRpcError as error:
            raise _failed(error, rid) from None

    def stream(
        self, rpc: Rpc, *, rid: str, authorization: Sequence[str] = (), timeout: float | None = None
    ) -> StreamCall:
        """A call of the streaming `rpc`, to write requests to and read replies from, from two tasks at once."""
        call = self._callable(rpc)(metadata=_metadata(rid, authorization), timeout=timeout)
        return StreamCall(call, rid)

    async def close(self) -> None:
        await self._channel.close()


class StreamCall:
    """One streaming gateway call: `opened()` first, then `write`/`done_writing` in one task, `read` in another."""

    def __init__(self, call: grpc.aio.StreamStreamCall[Message, Message], rid: str) -> None:
        self._call = call
        self._rid = rid
        self._early: list[Message | None] = []  # a reply read by opened()
        self._writable = asyncio.Event()  # set once the server took the call

    async def opened(self) -> str:
        """Wait until the server took the call; the request id it uses. Raises `CallFailed` when it refused it.

        bertserve's streams send their headers (with the request id) as soon as
        the call is admitted; a refused call sends none, only its status. Any
        other stream may send its headers only with its first reply, so that is
        awaited then (with writes allowed).
        """
        echoed = _echoed(tuple(await self._call.initial_metadata() or ()))
        if echoed is not None or not self._call.done():  # (a refused call is done by the time its headers come)
            self._writable.set()
        if echoed is None:
            self._early.append(await self.read())
        return echoed or self._rid

    async def read(self) -> Message | None:
        """The next reply, or None after the last; raises `CallFailed` with the rich status."""
        if self._early:
            return self._early.pop()
        try:
            reply = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise _failed(error, self._rid) from None
        return None if reply is grpc.aio.EOF else reply

    async def write(self, request: Message) -> bool:
        """Send one request (waiting while gRPC's flow control holds it); False when the call is over already.

        Nothing is written before the server took the call: a write racing a
        refusal would turn the refusal's status into INTERNAL.
        """
        await self._writable.wait()
        if self._call.done():
            return False
        try:
            await self._call.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError):
            return False  # the reader learns how it ended
        return True

    async def done_writing(self) -> None:
        """Half-close: no more requests."""
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()


_REFUSAL_TIMEOUT = 10.0  # a refusal is immediate; the bound only matters if the server took the call after all


def _metadata(rid: str, authorization: Sequence[str]) -> list[tuple[str, str]]:
    return [(REQUEST_ID_KEY, rid), *(("authorization", value) for value in authorization), *TRACE_CONTEXT.get()]


def _failed(error: grpc.aio.AioRpcError, rid: str) -> CallFailed:
    trailers = tuple(error.trailing_metadata() or ())
    status = status_from_call(error.code(), error.details(), trailers)  # type: ignore[arg-type]
    return CallFailed(status, _echoed(trailers) or rid)


def _echoed(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None
