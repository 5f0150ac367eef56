"""The Open Inference Protocol's REST routes on the HTTP door, each one call of ``inference.GRPCInferenceService``.

The JSON translation is `bertserve.wire.http.oip`; calls go through the
gateway, so tokens, admission, metrics and request ids are those of gRPC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import Message

from bertserve.wire.http.gateway import Gateway, Rpc
from bertserve.wire.http.oip import infer_request, infer_response, model_metadata
from bertserve.wire.http.routes import REQUEST_ID, HttpError, authorization, deadline

SERVICE = "inference.GRPCInferenceService"


class _Routes:
    def __init__(self, gateway: Gateway, rpcs: Mapping[str, Rpc]) -> None:
        self.gateway = gateway
        self.rpcs = rpcs

    async def call(self, request: web.Request, method: str, message: Message | None = None) -> Any:
        rpc = self.rpcs[f"/{SERVICE}/{method}"]
        response, _ = await self.gateway.call(
            rpc,
            message if message is not None else rpc.request(),
            rid=REQUEST_ID.get(),
            authorization=authorization(request),
            timeout=deadline(request),
        )
        return response

    def model(self, request: web.Request) -> tuple[str, str]:
        return request.match_info["name"], request.match_info.get("version", "")

    async def server_metadata(self, request: web.Request) -> web.Response:
        response = await self.call(request, "ServerMetadata")
        return _json({"name": response.name, "version": response.version, "extensions": list(response.extensions)})

    async def live(self, request: web.Request) -> web.Response:
        live = (await self.call(request, "ServerLive")).live
        return _json({"live": live}, 200 if live else 400)

    async def ready(self, request: web.Request) -> web.Response:
        ready = (await self.call(request, "ServerReady")).ready
        return _json({"ready": ready}, 200 if ready else 400)

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = self.model(request)
        rpc = self.rpcs[f"/{SERVICE}/ModelReady"]
        ready = (await self.call(request, "ModelReady", rpc.request(name=name, version=version))).ready
        return _json({"name": name, "ready": ready}, 200 if ready else 400)

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = self.model(request)
        rpc = self.rpcs[f"/{SERVICE}/ModelMetadata"]
        return _json(model_metadata(await self.call(request, "ModelMetadata", rpc.request(name=name, version=version))))

    async def infer(self, request: web.Request) -> web.Response:
        name, version = self.model(request)
        try:
            body = json.loads((await request.read()).decode("utf-8") or "null")
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, an integer past 4300 digits, too deep
            raise HttpError(
                grpc.StatusCode.INVALID_ARGUMENT, f"the JSON body is not valid: {error}", "INVALID_JSON"
            ) from None
        message = infer_request(self.rpcs[f"/{SERVICE}/ModelInfer"], body, name, version)
        return _json(infer_response(await self.call(request, "ModelInfer", message)))


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"x-request-id": REQUEST_ID.get()})


def _operation(summary: str, method: str, body: bool = False) -> dict[str, Any]:
    json_object = {"application/json": {"schema": {"type": "object"}}}
    operation: dict[str, Any] = {
        "summary": f"{summary} (Open Inference Protocol; gRPC /{SERVICE}/{method})",
        "tags": ["Open Inference Protocol"],
        "responses": {
            "200": {"description": "the reply", "content": json_object},
            "default": {
                "description": "the call failed",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
            },
        },
    }
    if body:
        operation["requestBody"] = {"required": True, "content": json_object}
    return operation


def oip_paths() -> dict[str, Any]:
    """The protocol's REST routes for the OpenAPI document."""
    paths: dict[str, Any] = {
        "/v2": {"get": _operation("server metadata", "ServerMetadata")},
        "/v2/health/live": {"get": _operation("live: 200 when true, 400 when false", "ServerLive")},
        "/v2/health/ready": {"get": _operation("ready: 200 when true, 400 when false", "ServerReady")},
    }
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        paths[model] = {"get": _operation("model metadata", "ModelMetadata")}
        paths[f"{model}/ready"] = {"get": _operation("model ready: 200 when true, 400 when false", "ModelReady")}
        paths[f"{model}/infer"] = {
            "post": _operation("inference: {inputs: [{name, shape, datatype, data}]}", "ModelInfer", True)
        }
    for path, item in paths.items():
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in ("name", "version")
            if "{" + p + "}" in path
        ]
        for operation in item.values():
            if parameters:
                operation["parameters"] = parameters
    return paths


def add_oip_routes(app: web.Application, gateway: Gateway, rpcs: Mapping[str, Rpc]) -> dict[str, str]:
    """The protocol's REST routes, when the server serves ``inference.GRPCInferenceService``.

    Returns each route's path with the RPC it calls (empty when the server
    does not serve the protocol). Errors of the translation (a tensor's
    size, ...) are `BertServeError`s, answered by the middleware.
    """
    if f"/{SERVICE}/ModelInfer" not in rpcs:
        return {}
    routes = _Routes(gateway, rpcs)
    table = [
        ("GET", "/v2", routes.server_metadata, "ServerMetadata"),
        ("GET", "/v2/health/live", routes.live, "ServerLive"),
        ("GET", "/v2/health/ready", routes.ready, "ServerReady"),
    ]
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        table += [
            ("GET", model, routes.model_metadata, "ModelMetadata"),
            ("GET", f"{model}/ready", routes.model_ready, "ModelReady"),
            ("POST", f"{model}/infer", routes.infer, "ModelInfer"),
        ]
    for verb, path, handler, _ in table:
        (app.router.add_get if verb == "GET" else app.router.add_post)(path, handler)
    return {path: f"/{SERVICE}/{method}" for _, path, _, method in table}
