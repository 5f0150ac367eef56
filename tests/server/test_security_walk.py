"""The security walk: with bearer tokens on, every RPC and every HTTP route refuses a missing or wrong token.

Nothing here lists the server's methods: the gRPC walk takes them from the
server's own reflection service and the HTTP walk from the gateway's router,
so a method or route added later is walked without touching this file. The
few doors that are open by design are an explicit allow-list, each with its
reason, and the walk checks the server opens exactly those. A token limited
to some methods is refused (PERMISSION_DENIED, 403) on all the others. The
logs of calls with valid, wrong and restricted tokens, carrying input text
with a unique sentinel, hold neither the tokens nor the text.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, MetricsConfig, SecurityConfig, ServerConfig
from bertserve.settings_table import CONFIG_DEFAULTS
from bertserve.wire.logs import REQUEST_LOGGER, JsonFormatter
from bertserve_client.v1 import (
    inference_pb2 as inf,
    inference_pb2_grpc as inf_grpc,
    sentiment_pb2 as st,
    sentiment_pb2_grpc as st_grpc,
)
from google.protobuf import struct_pb2
from walk import (
    GENERIC_RPC_ROUTE,
    NDJSON,
    TIMEOUT,
    Method,
    Route,
    bearer,
    gateway_routes,
    grpc_outcome,
    http_status,
    reflected_methods,
)

FULL = "tok-walk-full-3b9e71c4"  # "ops": every method
RESTRICTED = "tok-walk-model-5e02d8af"  # "reader": ModelService only
ENV = "tok-walk-env-c4a1f7d2"  # from SecurityConfig.tokens: "env-1", every method
WRONG = "tok-walk-wrong-90d3e6b5"  # configured nowhere
RESTRICTED_TO = "/bertserve.v1.ModelService/"

#: Open on every server, whatever the tokens: the health checks of probes and load balancers,
#: which carry no credentials (README "Security", docs/kubernetes.md "Health checks need no token").
HEALTH_REASON = "grpc.health.v1 is always open: probes and load balancers carry no token"
ALWAYS_PUBLIC = {
    "/grpc.health.v1.Health/Check": HEALTH_REASON,
    "/grpc.health.v1.Health/Watch": HEALTH_REASON,
    "/grpc.health.v1.Health/List": HEALTH_REASON,  # not implemented by grpcio's servicer: UNIMPLEMENTED
}
#: Open only with `security.public_reflection`: the operator chose to publish the API's shape.
REFLECTION_REASON = "security.public_reflection serves reflection (and its HTTP twin) without a token"
PUBLIC_WITH_PUBLIC_REFLECTION = {
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": REFLECTION_REASON,
}
#: HTTP routes open only with `security.public_reflection`: /openapi.json describes the API as reflection does.
#: No other route of the gateway is open: each one is a call of a gRPC method that needs a token (the Open
#: Inference Protocol's /v2/health/* included; probes use grpc.health.v1 or the plaintext health port).
HTTP_PUBLIC_WITH_PUBLIC_REFLECTION = {"GET /openapi.json": REFLECTION_REASON, "HEAD /openapi.json": REFLECTION_REASON}

REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
#: gRPC metadata that carries no valid token: none, an unknown one, a near miss, no scheme, another scheme.
BAD_CREDENTIALS = {
    "none": [],
    "wrong": bearer(WRONG),
    "truncated": bearer(FULL[:-1]),
    "no-scheme": [("authorization", FULL)],
    "basic": [("authorization", f"Basic {FULL}")],
}
PATH_VALUES = {"name": "sentiment", "version": "1"}  # plausible values for the gateway's path parameters


@dataclass
class Served:
    """A running server with everything on, and what the walk found on it."""

    server: BackgroundServer
    public_reflection: bool
    methods: list[Method]

    @property
    def internals(self) -> Any:
        assert self.server._server is not None
        return self.server._server

    @property
    def http_base(self) -> str:
        return f"http://{self.server.http_address}"

    def public_methods(self) -> dict[str, str]:
        """The allow-list for this server: method path -> why it needs no token."""
        return {**ALWAYS_PUBLIC, **(PUBLIC_WITH_PUBLIC_REFLECTION if self.public_reflection else {})}

    def public_routes(self) -> dict[str, str]:
        return dict(HTTP_PUBLIC_WITH_PUBLIC_REFLECTION) if self.public_reflection else {}


def _tokens_file(folder: Path) -> Path:
    path = folder / "tokens"
    path.write_text(f"{FULL} ops\n{RESTRICTED} reader {RESTRICTED_TO}*\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["private-reflection", "public-reflection"])
def served(
    request: pytest.FixtureRequest, tiny_config: ServerConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Tokens on; every built-in service; the HTTP gateway, the metrics endpoint and the health port on."""
    security = SecurityConfig(
        tokens_file=_tokens_file(tmp_path_factory.mktemp("walk-tokens")),
        tokens=(ENV,),
        public_reflection=request.param,
        metrics_require_token=True,
    )
    config = dataclasses.replace(
        tiny_config, security=security, http=HttpConfig(port=0), metrics=MetricsConfig(port=0), health_port=0
    )
    with BackgroundServer(config) as running, grpc.insecure_channel(running.address) as channel:
        yield Served(running, request.param, reflected_methods(channel, bearer(FULL)))


@pytest.fixture
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.server.address) as opened:
        yield opened


def walk_grpc(channel: grpc.Channel, methods: list[Method], metadata: list[tuple[str, str]]) -> dict[str, str]:
    """Every method's outcome (a status code name) with `metadata`."""
    return {method.path: grpc_outcome(channel, method, metadata).name for method in methods}


# --- gRPC --------------------------------------------------------------------------------------------------------


def test_the_walk_finds_every_service_and_every_method_kind(served: Served) -> None:
    paths = {method.path for method in served.methods}
    services = {method.service for method in served.methods}
    assert len(paths) == len(served.methods) >= 19, sorted(paths)  # no method twice; not a vacuous walk
    assert services >= {
        "bertserve.v1.FillMaskService",
        "bertserve.v1.NextSentenceService",
        "bertserve.v1.SentimentService",
        "bertserve.v1.QuestionAnsweringService",
        "bertserve.v1.InferenceService",
        "bertserve.v1.ModelService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert {"/bertserve.v1.InferenceService/Predict", "/inference.GRPCInferenceService/ModelInfer"} <= paths
    kinds = {(method.client_streaming, method.server_streaming) for method in served.methods}
    assert kinds >= {(False, False), (False, True), (True, True)}  # unary, server stream, bidirectional
    assert set(served.public_methods()) <= paths  # every allow-list entry names a real method


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS), ids=list(BAD_CREDENTIALS))
def test_every_method_but_the_allow_list_refuses_a_missing_or_wrong_token(
    served: Served, channel: grpc.Channel, credentials: str
) -> None:
    outcomes = walk_grpc(channel, served.methods, BAD_CREDENTIALS[credentials])
    open_ = {path for path, code in outcomes.items() if code != "UNAUTHENTICATED"}
    assert open_ == set(served.public_methods()), {path: outcomes[path] for path in open_}
    for path in open_:  # the allow-list's methods work without a token
        assert grpc.StatusCode[outcomes[path]] not in REFUSED


@pytest.mark.parametrize("token", [FULL, ENV], ids=["file-token", "config-token"])
def test_a_valid_token_passes_every_method(served: Served, channel: grpc.Channel, token: str) -> None:
    outcomes = walk_grpc(channel, served.methods, bearer(token))
    refused = {path: code for path, code in outcomes.items() if grpc.StatusCode[code] in REFUSED}
    assert not refused


def test_a_restricted_token_is_denied_every_method_outside_its_patterns(served: Served, channel: grpc.Channel) -> None:
    outcomes = walk_grpc(channel, served.methods, bearer(RESTRICTED))
    allowed = {m.path for m in served.methods if m.path.startswith(RESTRICTED_TO) or m.path in served.public_methods()}
    assert any(path.startswith(RESTRICTED_TO) for path in allowed)
    denied = {path for path, code in outcomes.items() if code == "PERMISSION_DENIED"}
    assert denied == set(outcomes) - allowed, {path: outcomes[path] for path in denied ^ (set(outcomes) - allowed)}
    assert "UNAUTHENTICATED" not in outcomes.values()


def test_the_health_port_serves_health_and_nothing_else(served: Served, channel: grpc.Channel) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.internals.health_port}") as health_channel:
        outcomes = walk_grpc(health_channel, served.methods, bearer(FULL))
    health = [method for method in served.methods if method.path in ALWAYS_PUBLIC]
    expected = {path: "UNIMPLEMENTED" for path in outcomes} | walk_grpc(channel, health, [])
    assert outcomes == expected


# --- HTTP --------------------------------------------------------------------------------------------------------


def _app(served: Served) -> web.Application:
    runner = served.internals._http._runner
    assert runner is not None, "the HTTP gateway is not running"
    return runner.app  # type: ignore[no-any-return]


def _openapi(served: Served) -> dict[str, Any]:
    request = urllib.request.Request(f"{served.http_base}/openapi.json", headers={"Authorization": f"Bearer {FULL}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.load(response)  # type: ignore[no-any-return]


@pytest.fixture
def routes(served: Served) -> list[Route]:
    """Every route with an empty message, and every route that takes a body with a malformed one too."""
    walked = gateway_routes(_app(served), served.methods, PATH_VALUES)
    return walked + [route.malformed() for route in walked if route.body is not None]


def _rpc_of(route: Route, document: dict[str, Any]) -> str | None:
    """The gRPC method a route calls: its own path for RPC routes, else as its OpenAPI operation says."""
    if route.template == GENERIC_RPC_ROUTE:
        return route.path if route.path in document["paths"] else None
    operation = document["paths"].get(route.template, {}).get("get" if route.method == "HEAD" else route.method.lower())
    found = re.search(r"gRPC (/[\w.]+/\w+)", (operation or {}).get("summary", ""))
    return found.group(1) if found else None


def test_the_http_walk_covers_every_rpc_and_route_the_openapi_document_lists(
    served: Served, routes: list[Route]
) -> None:
    document = _openapi(served)
    walked = {(route.method, route.path if route.template == GENERIC_RPC_ROUTE else route.template) for route in routes}
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert listed <= walked, listed - walked
    assert len(routes) >= 30 and ("POST", "/bertserve.v1.InferenceService/Predict") in walked
    assert ("POST", "/v2/models/{name}/infer") in walked and ("GET", "/openapi.json") in walked
    for route in routes:  # every route but /openapi.json calls a gRPC method the document names
        if route.template not in (GENERIC_RPC_ROUTE, "/openapi.json"):
            assert _rpc_of(route, document), f"the OpenAPI document does not say which RPC {route} calls"
    assert set(served.public_routes()) <= {str(route) for route in routes}


@pytest.mark.parametrize("token", [None, WRONG, FULL[:-1]], ids=["none", "wrong", "truncated"])
def test_every_http_route_but_the_allow_list_refuses_a_missing_or_wrong_token(
    served: Served, routes: list[Route], token: str | None
) -> None:
    statuses = {str(route): http_status(served.http_base, route, token) for route in routes}
    open_ = {route: status for route, (status, _) in statuses.items() if status != 401}
    assert set(open_) == set(served.public_routes()), open_
    for route, status in open_.items():
        assert status not in (401, 403), route
    for route, (status, body) in statuses.items():
        if status == 401 and not route.startswith("HEAD "):
            assert json.loads(body)["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0], route


@pytest.mark.parametrize("token", [FULL, ENV], ids=["file-token", "config-token"])
def test_a_valid_token_passes_every_http_route(served: Served, routes: list[Route], token: str) -> None:
    statuses = {str(route): http_status(served.http_base, route, token)[0] for route in routes}
    assert not {route: status for route, status in statuses.items() if status in (401, 403)}


def test_a_restricted_token_is_denied_every_http_route_outside_its_patterns(
    served: Served, routes: list[Route]
) -> None:
    document = _openapi(served)
    statuses = {str(route): http_status(served.http_base, route, RESTRICTED)[0] for route in routes}
    denied = {
        str(route) for route in routes if not (_rpc_of(route, document) or RESTRICTED_TO).startswith(RESTRICTED_TO)
    }
    assert {route for route, status in statuses.items() if status == 403} == denied
    assert 401 not in statuses.values()
    assert any(RESTRICTED_TO in route and status == 200 for route, status in statuses.items())


@pytest.mark.parametrize("path", ["/metrics", "/"])
def test_the_metrics_endpoint_needs_a_token_when_configured(served: Served, path: str) -> None:
    base = f"http://127.0.0.1:{served.internals.metrics_port}"
    route = Route("GET", path, path)
    assert [http_status(base, route, token)[0] for token in (None, WRONG, FULL, RESTRICTED)] == [401, 401, 200, 200]


def test_public_reflection_and_metrics_tokens_are_off_by_default() -> None:
    assert CONFIG_DEFAULTS["security.public_reflection"] is False
    assert CONFIG_DEFAULTS["security.metrics_require_token"] is False  # documented: metrics are public by default
    assert SecurityConfig().public_reflection is False


# --- logs --------------------------------------------------------------------------------------------------------

SECRETS = (FULL, RESTRICTED, ENV, WRONG)


def _grpc_calls(address: str, text: str) -> None:
    """Calls carrying `text`: answered, refused (no, wrong, restricted token), invalid, unknown head, streamed."""
    sentence = f"The film {text} was a great film."
    with grpc.insecure_channel(address) as channel:
        sentiment = st_grpc.SentimentServiceStub(channel).ClassifySentiment
        inference = inf_grpc.InferenceServiceStub(channel)
        for metadata in ([], bearer(WRONG), bearer(RESTRICTED), bearer(FULL)):
            _quietly(sentiment, st.ClassifySentimentRequest(texts=[sentence]), metadata=metadata, timeout=TIMEOUT)
        for head, value in [
            ("sentiment", {"text": sentence}),  # answered
            ("question-answering", {"question": sentence}),  # invalid: no context
            ("sentiment", {"text": sentence, "bogus": text}),  # invalid: an unknown field
            ("no-such-head", {"text": sentence}),  # unknown head
        ]:
            request = inf.PredictRequest(head=head, input=_struct(value))
            _quietly(inference.Predict, request, metadata=bearer(FULL), timeout=TIMEOUT)
        stream = [
            inf.PredictStreamRequest(id=str(n), head=head, input=_struct({"text": sentence}))
            for n, head in enumerate(["sentiment", "no-such-head"])
        ]
        _quietly(lambda: list(inference.PredictStream(iter(stream), metadata=bearer(FULL), timeout=TIMEOUT)))


def _http_calls(base: str, text: str) -> None:
    """The same over HTTP: JSON, NDJSON (a bad line too) and the Open Inference Protocol."""
    sentence = f"The film {text} was a great film."
    rpc = "/bertserve.v1.SentimentService/ClassifySentiment"
    body = json.dumps({"texts": [sentence]}).encode()
    for token in (None, WRONG, RESTRICTED, FULL):
        http_status(base, Route("POST", rpc, rpc, body, "application/json"), token)
    lines = [{"id": "1", "head": "sentiment", "input": {"text": sentence}}, {"id": "2", "head": "nope", "input": {}}]
    stream = "/bertserve.v1.InferenceService/PredictStream"
    ndjson = "\n".join(json.dumps(line) for line in lines).encode() + f"\n{{not json {text}\n".encode()
    http_status(base, Route("POST", stream, stream, ndjson, NDJSON), FULL)
    infer = "/v2/models/sentiment/infer"
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [sentence]}
    for inputs in ([tensor], [{**tensor, "shape": [2]}]):  # answered, and a shape that does not fit
        http_status(
            base, Route("POST", infer, infer, json.dumps({"inputs": inputs}).encode(), "application/json"), FULL
        )


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _quietly(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Make a call that may fail; the logs are what is checked."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError:
        pass


def _settled(records: Callable[[], list[logging.LogRecord]], quiet: float = 0.3, limit: float = 5.0) -> None:
    """Wait until no record has come for `quiet` seconds (the server logs on its own thread)."""
    deadline, count = time.monotonic() + limit, -1
    while count != len(records()) and time.monotonic() < deadline:
        count = len(records())
        time.sleep(quiet)


def _rendered(record: logging.LogRecord) -> list[str]:
    """Everything a record could write: its fields (message, args, extras), and its plain and JSON lines."""
    return [repr(vars(record)), logging.Formatter().format(record), JsonFormatter().format(record)]


def _leaks(records: list[logging.LogRecord], secrets: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(r.name, secret) for r in records for secret in secrets if any(secret in text for text in _rendered(r))]


def test_the_log_check_sees_messages_args_extra_fields_and_exceptions() -> None:
    def record(**changes: Any) -> logging.LogRecord:
        made = logging.LogRecord(REQUEST_LOGGER, logging.INFO, __file__, 1, "plain", (), None)
        made.__dict__.update(changes)
        return made

    try:
        raise ValueError("in an exception: s4")
    except ValueError as error:
        exc_info = (type(error), error, error.__traceback__)
    found = [record(msg="s1"), record(msg="%s", args=("s2",)), record(extra_field="s3"), record(exc_info=exc_info)]
    assert [secret for _, secret in _leaks(found, ("s1", "s2", "s3", "s4"))] == ["s1", "s2", "s3", "s4"]


def test_no_setting_logs_request_payloads() -> None:
    """bertserve has no switch that logs input text; one added later must be off by default and tested here."""
    assert {key for key in CONFIG_DEFAULTS if key.startswith("logging.")} == {"logging.level", "logging.format"}


@pytest.mark.parametrize("served", [False], ids=["private-reflection"], indirect=True)
def test_logs_never_hold_a_token_or_the_input_text(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=REQUEST_LOGGER)
    sentinel = f"sentinel{uuid.uuid4().hex}"
    _grpc_calls(served.server.address, sentinel)
    _http_calls(served.http_base, sentinel)
    _settled(lambda: caplog.records)
    assert not _leaks(caplog.records, (*SECRETS, sentinel))
    requests = [record for record in caplog.records if record.name == REQUEST_LOGGER]
    codes = {(getattr(record, "code", None), getattr(record, "principal", None)) for record in requests}
    # The calls were logged (so the check above is not vacuous), naming the token, never showing it.
    assert {
        ("OK", "ops"),
        ("UNAUTHENTICATED", ""),
        ("PERMISSION_DENIED", ""),
        ("INVALID_ARGUMENT", "ops"),
    } <= codes
    assert any("ClassifySentiment" in record.getMessage() for record in requests)
    # HTTP calls refused for their token are refused, logged and counted by the gRPC side (its Unix socket).
    assert any(r.code == "UNAUTHENTICATED" and r.peer.startswith("unix:") for r in requests)  # type: ignore[attr-defined]
