"""The native routes: ``POST /package.Service/Method`` for every RPC, ``GET /openapi.json``, the
middleware that gives every reply an ``x-request-id`` and every HTTP-level error a `google.rpc.Status` body,
and the one that checks the bearer token before any route reads a body.

The route rule is the Connect protocol's for unary calls: the gRPC path,
``POST``, a JSON body (``Content-Type: application/json``) in the proto3 JSON
mapping, a JSON reply (fields with default values included). Streaming RPCs
take ``Content-Type: application/x-ndjson`` and answer NDJSON (`ndjson.py`).
Optional headers: ``Authorization: Bearer TOKEN``, ``X-Request-Id`` and
``Connect-Timeout-Ms`` (the call's deadline). A reply carries the call's
timings as headers, as its gRPC call's trailers (``x-total-time``, ...).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf import json_format
from google.protobuf.message import Message

from bertserve.plugin.errors import BertServeError
from bertserve.wire.http.errors import HTTP_STATUS, error_response, local_status, status_from_call
from bertserve.wire.http.gateway import (
    CALL_TIMINGS,
    TRACE_CONTEXT,
    CallFailed,
    Gateway,
    Rpc,
    request_id,
    trace_context,
)
from bertserve.wire.http.ndjson import NDJSON, stream_rpc
from bertserve.wire.security import AuthInterceptor
from bertserve.wire.status import to_status

#: The HTTP call's request id, set by the middleware (which runs in the handler's task).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("bertserve_http_request_id", default="")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The route of every RPC; its path is the RPC's.
RPC_ROUTE = "/{service}/{method}"

_HTTP_ERRORS = {  # HTTP-level refusals: (gRPC code, reason)
    404: (grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND"),
    405: (grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED"),
    413: (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE"),
}


class HttpError(Exception):
    """An error of the HTTP layer itself, answered with a Status body."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason, self.http_status = code, message, reason, http_status


@web.middleware
async def status_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request id for every call, echoed on every reply; its timings and trace context; HTTP errors as Status JSON."""
    rid = request_id(request.headers)
    oip = request.path == "/v2" or request.path.startswith("/v2/")
    REQUEST_ID.set(rid)
    CALL_TIMINGS.set(())  # a kept-alive connection's earlier call must not lend its timings
    TRACE_CONTEXT.set(trace_context(request.headers))
    try:
        response = await handler(request)
    except CallFailed as failure:
        return error_response(failure.status, failure.request_id, oip=oip)
    except BertServeError as error:  # raised by a translation (OIP tensors) before any call
        status = to_status(error)
        return error_response(status_from_call(status.code, status.details, status.trailing_metadata), rid, oip=oip)
    except HttpError as error:
        status = local_status(error.code, error.message, error.reason)
        return error_response(status, rid, http_status=error.http_status, oip=oip)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code, reason = _HTTP_ERRORS.get(error.status, (grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST"))
        status = local_status(code, error.text or error.reason, reason)
        reply = error_response(status, rid, http_status=error.status, oip=oip)
        if error.status == 405 and "Allow" in error.headers:
            reply.headers["Allow"] = error.headers["Allow"]
        return reply
    response.headers.setdefault("x-request-id", rid)
    if not response.prepared:  # a stream's headers are sent already
        response.headers.extend(CALL_TIMINGS.get())
    return response


def authorization(request: web.Request) -> list[str]:
    return request.headers.getall("Authorization", [])


def token_middleware(
    auth: AuthInterceptor,
    gateway: Gateway,
    rpcs: Mapping[str, Rpc],
    route_rpcs: Mapping[str, str],
    open_paths: frozenset[str],
) -> Middleware:
    """Refuse a request without a valid token (or with one that may not call its RPC) before its route runs.

    `route_rpcs` maps a route's path to the RPC it calls (a template filled
    from the path's parameters). A refused request to a route that calls an
    RPC is refused by the gRPC side itself (`Gateway.refuse`: same status,
    log line and metric); any other (an unknown path, ``/openapi.json``) here,
    with gRPC's statuses. Either way no body is read, so nothing about the
    routes, their RPCs or their request messages reaches a caller without a
    token. Paths in `open_paths` need none.
    """

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        rpc = _route_rpc(request, rpcs, route_rpcs)
        metadata = [("authorization", value) for value in authorization(request)]
        try:
            if rpc is not None:
                auth.authorize(rpc.path, metadata)
            else:
                auth.authenticate(metadata)
        except BertServeError:
            if rpc is not None:
                await gateway.refuse(rpc, rid=REQUEST_ID.get(), authorization=authorization(request))
            raise
        return await handler(request)

    return check_token


def _route_rpc(request: web.Request, rpcs: Mapping[str, Rpc], route_rpcs: Mapping[str, str]) -> Rpc | None:
    """The RPC the request's route calls, or None (an unknown RPC or path, a route that calls none)."""
    resource = request.match_info.route.resource
    template = route_rpcs.get(resource.canonical) if resource is not None else None
    return rpcs.get(template.format_map(request.match_info)) if template is not None else None


def parse_json(request_body: bytes, message: Message, content_type: str) -> Message:
    """`message` filled from a JSON body; `HttpError` (400, 415) for anything else."""
    if content_type not in ("", "application/json"):
        raise HttpError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"send the request as JSON with 'Content-Type: application/json', not {content_type!r}",
            "UNSUPPORTED_MEDIA_TYPE",
            http_status=415,
        )
    try:
        json_format.Parse(request_body.decode("utf-8") or "{}", message)
    except (UnicodeDecodeError, json_format.ParseError) as error:
        raise HttpError(
            grpc.StatusCode.INVALID_ARGUMENT, f"the JSON body is not a valid request: {error}", "INVALID_JSON"
        ) from None
    return message


def _content_type(request: web.Request) -> str:
    return request.content_type if "Content-Type" in request.headers else ""


def json_reply(message: Message, rid: str) -> web.Response:
    body = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return web.json_response(body, headers={"x-request-id": rid})


def deadline(request: web.Request) -> float | None:
    """Seconds from ``Connect-Timeout-Ms``, or None."""
    value = request.headers.get("Connect-Timeout-Ms")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10:
        raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, "Connect-Timeout-Ms must be a number of ms", "BAD_TIMEOUT")
    if int(value) == 0:  # gRPC would race a zero deadline against the call
        raise HttpError(grpc.StatusCode.DEADLINE_EXCEEDED, "Connect-Timeout-Ms is 0: no time left", "DEADLINE_EXCEEDED")
    return int(value) / 1000


def add_native_routes(app: web.Application, gateway: Gateway, rpcs: Mapping[str, Rpc], grpc_port: int) -> None:
    """``POST /{service}/{method}`` for every RPC in `rpcs`: JSON for unary ones, NDJSON for streaming ones."""

    async def call(request: web.Request) -> web.StreamResponse:
        path = f"/{request.match_info['service']}/{request.match_info['method']}"
        rpc = rpcs.get(path)
        if rpc is None:
            raise HttpError(grpc.StatusCode.NOT_FOUND, f"no RPC {path}; GET /openapi.json lists them", "RPC_NOT_FOUND")
        if rpc.streaming:
            if _content_type(request) != NDJSON:
                raise HttpError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{path} is a streaming RPC: send its request messages as JSON lines with "
                    f"'Content-Type: {NDJSON}' (the replies come back as JSON lines), or call it over gRPC "
                    f"(port {grpc_port})",
                    "STREAMING_RPC",
                )
            return await stream_rpc(
                request,
                gateway,
                rpc,
                rid=REQUEST_ID.get(),
                authorization=authorization(request),
                timeout=deadline(request),
            )
        message = parse_json(await request.read(), rpc.request(), _content_type(request))
        response, rid = await gateway.call(
            rpc, message, rid=REQUEST_ID.get(), authorization=authorization(request), timeout=deadline(request)
        )
        return json_reply(response, rid)

    app.router.add_post(RPC_ROUTE, call)


def add_openapi_route(app: web.Application, document: dict[str, Any]) -> None:
    """``GET /openapi.json``; with tokens configured (and reflection not public) `token_middleware` guards it."""
    body = json.dumps(document)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)


__all__ = [
    "HTTP_STATUS",
    "REQUEST_ID",
    "RPC_ROUTE",
    "HttpError",
    "add_native_routes",
    "add_openapi_route",
    "status_middleware",
    "token_middleware",
]
