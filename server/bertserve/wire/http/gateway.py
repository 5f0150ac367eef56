"""The gateway's half that speaks gRPC: the RPC table and one local channel into the server's own gRPC port.

Every HTTP call becomes a real gRPC call on the server, so authentication,
admission, limits, metrics, request ids and logs are exactly those of gRPC:
the same interceptors run. The channel dials a Unix socket that the server
binds for the gateway alone (in a private folder, mode 0700), so it needs no
TLS of its own and does not depend on which interface the TCP port binds.
"""

from __future__ import annotations

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
from bertserve.wire.interceptor import _REQUEST_ID_ALLOWED, REQUEST_ID_KEY


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
    if 0 < len(value) <= 128 and set(value) <= _REQUEST_ID_ALLOWED:
        return value
    return uuid.uuid4().hex


class CallFailed(Exception):
    """A gateway call that ended with a non-OK status."""

    def __init__(self, status: status_pb2.Status, request_id: str) -> None:
        super().__init__(status.message)
        self.status = status
        self.request_id = request_id


class Gateway:
    """Calls the server's own gRPC methods over a local channel, passing ``authorization`` and ``x-request-id``."""

    def __init__(self, target: str, max_message_bytes: int) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", -1)]
        self._channel = grpc.aio.insecure_channel(target, options=options)
        self._callables: dict[str, Any] = {}

    async def call(
        self, rpc: Rpc, request: Message, *, rid: str, authorization: Sequence[str] = (), timeout: float | None = None
    ) -> tuple[Message, str]:
        """The reply of `rpc` and the request id the server used; raises `CallFailed` with the rich status."""
        callable_ = self._callables.get(rpc.path)
        if callable_ is None:
            callable_ = self._callables[rpc.path] = self._channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
        metadata = [(REQUEST_ID_KEY, rid), *(("authorization", value) for value in authorization)]
        call = callable_(request, metadata=metadata, timeout=timeout)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            trailers = tuple(error.trailing_metadata() or ())
            status = status_from_call(error.code(), error.details(), trailers)  # type: ignore[arg-type]
            raise CallFailed(status, _echoed(trailers) or rid) from None
        return response, _echoed(tuple(await call.initial_metadata() or ())) or rid

    async def close(self) -> None:
        await self._channel.close()


def _echoed(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None
