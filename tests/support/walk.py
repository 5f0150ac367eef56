"""Walking a server's whole surface: every gRPC method found through reflection, every HTTP route of the gateway.

`reflected_methods` asks the server's reflection service for its services and
builds their descriptors in a fresh pool, so the walk covers whatever the
server serves, not a list written down in a test. `grpc_outcome` calls any
method, of any of the four kinds, with an empty request and says how it ended.
`gateway_routes` turns the HTTP gateway's router into concrete requests, one
per method and path (path parameters filled in, the generic
``/{service}/{method}`` route expanded over every reflected method), and
`http_status` sends one. A route's `malformed` twin checks that nothing
reads the body before the token is checked.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

TIMEOUT = 10.0
Metadata = Sequence[tuple[str, str]]


def bearer(token: str) -> list[tuple[str, str]]:
    """gRPC metadata carrying `token` as a bearer token."""
    return [("authorization", f"Bearer {token}")]


# --- gRPC --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One RPC as reflection describes it."""

    path: str  # /package.Service/Method
    client_streaming: bool
    server_streaming: bool

    @property
    def service(self) -> str:
        return self.path.split("/")[1]

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def _reflect(channel: grpc.Channel, metadata: Metadata, **request: str) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    question = reflection_pb2.ServerReflectionRequest(**request)
    (answer,) = list(stub.ServerReflectionInfo(iter([question]), metadata=metadata, timeout=TIMEOUT))
    if answer.HasField("error_response"):
        raise AssertionError(f"reflection refused {request}: {answer.error_response.error_message}")
    return answer


def reflected_services(channel: grpc.Channel, metadata: Metadata) -> list[str]:
    """The full names of every service the server lists through reflection."""
    answer = _reflect(channel, metadata, list_services="")
    return [service.name for service in answer.list_services_response.service]


def _file_protos(channel: grpc.Channel, metadata: Metadata, services: Iterable[str]) -> dict[str, bytes]:
    """The serialized files defining `services`, and every file they import, by file name."""
    files: dict[str, bytes] = {}
    wanted: list[tuple[str, str]] = [("file_containing_symbol", name) for name in services]
    while wanted:
        kind, value = wanted.pop()
        answer = _reflect(channel, metadata, **{kind: value})
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if proto.name not in files:
                files[proto.name] = raw
                wanted += [("file_by_filename", dep) for dep in proto.dependency if dep not in files]
    return files


def _pool(files: dict[str, bytes]) -> descriptor_pool.DescriptorPool:
    """A fresh descriptor pool holding `files`, each added after its imports."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        proto = descriptor_pb2.FileDescriptorProto.FromString(files[name])
        for dependency in proto.dependency:
            add(dependency)
        pool.Add(proto)
        added.add(name)

    for name in files:
        add(name)
    return pool


def reflected_methods(channel: grpc.Channel, metadata: Metadata = ()) -> list[Method]:
    """Every method of every service the server lists through reflection (with `metadata` on each call)."""
    services = reflected_services(channel, metadata)
    pool = _pool(_file_protos(channel, metadata, services))
    methods = []
    for name in services:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            methods.append(Method(path, method.client_streaming, method.server_streaming))
    return methods


def grpc_outcome(channel: grpc.Channel, method: Method, metadata: Metadata = ()) -> grpc.StatusCode:
    """How a call of `method` with an empty request message (one, for a client stream) ended.

    OK when it answered (for a server stream: sent its first reply or ended
    cleanly; the rest of the stream is cancelled), else the error's code.
    """
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    multicallable = kinds[method.client_streaming, method.server_streaming](method.path)
    request = iter([b""]) if method.client_streaming else b""
    try:
        reply = multicallable(request, metadata=metadata, timeout=TIMEOUT)
        if method.server_streaming:
            try:
                next(reply, None)
            finally:
                reply.cancel()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


# --- HTTP --------------------------------------------------------------------------------------------------------

NDJSON = "application/x-ndjson"
GENERIC_RPC_ROUTE = "/{service}/{method}"
_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """One concrete HTTP request of the walk: a method, a path, and a minimal body for it."""

    method: str
    path: str
    template: str  # the router's path, parameters unfilled
    body: bytes | None = None
    content_type: str | None = None
    variant: str = ""  # what is odd about the body, if anything

    def __str__(self) -> str:
        return f"{self.method} {self.path}" + (f" ({self.variant})" if self.variant else "")

    def malformed(self) -> Route:
        """The same request with a body no route can parse (and, for a stream, the wrong content type)."""
        return dataclasses.replace(self, body=b"{not json", content_type="application/json", variant="malformed body")


def _minimal(method: str, template: str, path: str, streaming: bool = False) -> Route:
    """`path` with an empty message as its body when `method` takes one (JSON, or one NDJSON line for a stream)."""
    if method != "POST":
        return Route(method, path, template)
    return Route(method, path, template, b"{}\n", NDJSON if streaming else "application/json")


def gateway_routes(app: web.Application, methods: Iterable[Method], values: dict[str, str]) -> list[Route]:
    """One request per method and path the gateway's router serves.

    The generic ``/{service}/{method}`` route is expanded over every method
    in `methods` and one that does not exist; other path parameters take
    their value from `values` (a parameter without one fails the walk, so a
    new route cannot be skipped quietly).
    """
    routes: list[Route] = []
    for route in app.router.routes():
        template = route.resource.canonical if route.resource is not None else ""
        if template == GENERIC_RPC_ROUTE:
            routes += [_minimal(route.method, template, m.path, m.streaming) for m in methods]
            routes.append(_minimal(route.method, template, "/no.such.v1.Service/Nothing"))
            continue
        missing = set(_PARAMETER.findall(template)) - set(values)
        assert not missing, f"no value for the path parameters {sorted(missing)} of route {template}: add one"
        path = _PARAMETER.sub(lambda match: values[match.group(1)], template)
        routes.append(_minimal(route.method, template, path))
    return routes


def http_status(base: str, route: Route, token: str | None = None) -> tuple[int, bytes]:
    """The status and body of `route` on the server at `base` (``http://host:port``), with `token` if given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if route.content_type is not None:
        headers["Content-Type"] = route.content_type
    request = urllib.request.Request(base + route.path, data=route.body, headers=headers, method=route.method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
