"""The one place every RPC passes: request id, admission, error mapping, log line, metrics, timings and traces.

A successful unary call that ran rows through the encoder gets its timings
as trailing metadata (`wire.timings`). With tracing on (`wire.tracing`), the
call's spans are made from the same timings when it ends, under the gRPC
server span of OpenTelemetry's interceptor (which runs outside this one).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, nullcontext
from typing import Any

import grpc

from bertserve.plugin.errors import BertServeError, InvalidArgument
from bertserve.runtime.admission import Admission
from bertserve.runtime.metrics import ServerMetrics
from bertserve.runtime.request_context import (
    RequestContext,
    current_request,
    reset_current_request,
    set_current_request,
)
from bertserve.wire.logs import log_request
from bertserve.wire.status import status_code, to_status
from bertserve.wire.timings import timing_metadata
from bertserve.wire.tracing import RequestTracer

log = logging.getLogger(__name__)


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """For every bertserve unary RPC: a request id, admission, error mapping, one log line and the metrics.

    A `BertServeError` becomes its rich status; any other exception becomes
    INTERNAL (logged with its traceback, never sent to the caller).

    The request id comes from ``x-request-id`` metadata, or is made, and is
    returned to the caller as ``x-request-id``: initial metadata with an
    answer, a trailer with an error. Health and
    reflection (``/grpc.*``) pass untouched: probes must see NOT_SERVING
    while the server drains, not a refusal. A request message that does not
    parse is INVALID_ARGUMENT everywhere (gRPC itself would answer UNKNOWN).
    """

    def __init__(
        self,
        admission: Admission,
        metrics: ServerMetrics | None,
        principal: Callable[[], str | None] = lambda: None,
        tracing: RequestTracer | None = None,
    ) -> None:
        self._admission = admission
        self._metrics = metrics
        self._principal = principal
        self._tracing = tracing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        if method.startswith("/grpc."):
            return _guarded(handler, method)
        if handler.unary_unary is not None:
            return self._unary(handler, method)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            return self._stream(handler, method)
        if handler.stream_stream is not None:  # a call refused before its handler (authentication)
            return self._refused(handler, method)
        return handler

    def _unary(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        admit = self._admission.admit if method not in PROBES else nullcontext

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._track(context, method) as call:
                try:
                    if isinstance(request, _Malformed):
                        raise request.invalid(method)
                    async with admit():
                        response = await inner(request, context)
                except BertServeError as error:
                    if status_code(error) is grpc.StatusCode.INTERNAL:
                        log.error("%s failed: %s", method, error.message)
                    await context.abort_with_status(to_status(error, _request_id_trailer()))
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    log.exception("unexpected error in %s", method)
                    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")
                # Headers go out with the answer only: gRPC retries a call (UNAVAILABLE while
                # draining, RESOURCE_EXHAUSTED) only if no headers were sent before the error.
                await context.send_initial_metadata(((REQUEST_ID_KEY, current_request_id()),))
                timings = timing_metadata(call.timings, time.perf_counter())
                if timings:
                    context.set_trailing_metadata(timings)
                return response

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _stream(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """A streaming RPC: one admission slot and one log line for the whole stream, errors mapped."""
        inner = handler.stream_stream

        async def observed(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._track(context, method):
                try:
                    async with self._admission.admit():
                        await context.send_initial_metadata(((REQUEST_ID_KEY, current_request_id()),))
                        async with aclosing(inner(_parsed(requests, method), context)) as responses:
                            async for response in responses:
                                yield response
                except BertServeError as error:
                    await context.abort_with_status(to_status(error, _request_id_trailer()))

        return grpc.stream_stream_rpc_method_handler(
            observed,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _refused(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = handler.stream_stream

        async def observed(requests: Any, context: grpc.aio.ServicerContext) -> None:
            async with self._track(context, method):
                await inner(requests, context)

        return grpc.stream_stream_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @asynccontextmanager
    async def _track(self, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[RequestContext]:
        """Give the call its request id, then log it and count it however it ends."""
        request_context = RequestContext(_request_id(context), method.lstrip("/"))
        token = set_current_request(request_context)
        if self._tracing is not None:
            self._tracing.begin(request_context)
        code = grpc.StatusCode.UNKNOWN
        try:
            yield request_context
            code = context.code() or grpc.StatusCode.OK
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            reset_current_request(token)
            if self._tracing is not None:
                self._tracing.finish(request_context, code)
            seconds = time.perf_counter() - request_context.timings.started  # stamped as the context was made
            self._record(request_context, code, seconds, context.peer())

    def _record(self, request: RequestContext, code: grpc.StatusCode, seconds: float, peer: str) -> None:
        head = request.head_label
        if self._metrics is not None:
            self._metrics.requests.labels(request.method, head, code.name).inc()
            self._metrics.request_seconds.labels(request.method, head).observe(seconds)
        log_request(
            request_id=request.request_id,
            method=request.method,
            heads=head,
            code=code.name,
            duration_ms=seconds * 1000,
            peer=peer,
            principal=self._principal(),
            trace_id=request.trace_id,
        )


class _Malformed:
    """A request message that did not parse (bad wire format, bad UTF-8, nested too deep): INVALID_ARGUMENT.

    gRPC answers a deserializer's exception with UNKNOWN before any handler
    runs, so the deserializer hands this over instead, and the handler raises it.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error

    def invalid(self, method: str) -> InvalidArgument:
        return InvalidArgument(
            f"the request message of {method.lstrip('/')} is malformed: {self.error}", reason="MALFORMED_REQUEST"
        )


def _tolerant(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request deserializer that returns a `_Malformed` where `parse` raises."""
    if parse is None:
        return None

    def tolerant(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:  # DecodeError, or whatever another deserializer raises
            return _Malformed(error)

    return tolerant


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """gRPC's own services (health, reflection) untouched, but for a malformed request: INVALID_ARGUMENT."""
    parse, serialize = _tolerant(handler.request_deserializer), handler.response_serializer
    unary = handler.unary_unary or handler.unary_stream  # health's Check, List and Watch
    make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
    if unary is not None and inspect.iscoroutinefunction(unary):

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await context.abort_with_status(to_status(request.invalid(method)))
            return await unary(request, context)

        return make(checked, request_deserializer=parse, response_serializer=serialize)
    if handler.unary_unary is not None:  # a plain function, which gRPC runs on a thread

        def plain(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                context.set_code(grpc.StatusCode.INVALID_ARGUMENT)  # the status gRPC answers the error with
                context.set_details(request.invalid(method).message)
                raise request.error
            return handler.unary_unary(request, context)

        return make(plain, request_deserializer=parse, response_serializer=serialize)
    inner = handler.stream_stream
    if inner is None or not inspect.isasyncgenfunction(inner):
        return handler

    async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:  # reflection's requests
            async for request in requests:
                if isinstance(request, _Malformed):
                    await context.abort_with_status(to_status(request.invalid(method)))
                yield request

        async with aclosing(inner(checked(), context)) as responses:
            async for response in responses:
                yield response

    return grpc.stream_stream_rpc_method_handler(stream, request_deserializer=parse, response_serializer=serialize)


async def _parsed(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    """A stream's requests; a malformed one ends it with INVALID_ARGUMENT."""
    async for request in requests:
        if isinstance(request, _Malformed):
            raise request.invalid(method)
        yield request


REQUEST_ID_KEY = "x-request-id"

# Liveness and readiness probes of other protocols: answered while loading or draining, never refused.
PROBES = frozenset({"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"})
_REQUEST_ID_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/")


def current_request_id() -> str:
    request = current_request()
    return request.request_id if request is not None else ""


def _request_id_trailer() -> tuple[tuple[str, str], ...]:
    """The request id as a trailer of a failed call (a failure sends no headers)."""
    request_id = current_request_id()
    return ((REQUEST_ID_KEY, request_id),) if request_id else ()


def valid_request_id(value: object) -> bool:
    """Whether a caller's request id is kept: a sane token of at most 128 safe characters."""
    return isinstance(value, str) and 0 < len(value) <= 128 and set(value) <= _REQUEST_ID_ALLOWED


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's ``x-request-id`` when it is valid (`valid_request_id`), else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and valid_request_id(value):
            return str(value)
    return uuid.uuid4().hex
