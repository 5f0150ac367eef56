"""Property-based fuzzing of every door: native, generic, streaming, Open Inference Protocol, gRPC's own, HTTP.

One in-process server (the tiny checkpoint, the HTTP gateway on) takes
generated requests for every RPC its reflection lists and every route its
OpenAPI document lists, valid-looking and malformed. After each one: no
INTERNAL or UNKNOWN status (HTTP: no 500, no such code in a reply body or a
per-input error), an error small enough for a client to read, grpc.health.v1
SERVING; every 25 examples and at the end of every test, the sentinel
requests answer exactly as before any fuzzing.
Strategies and checks: `tests/support/fuzzing.py`. ``HYPOTHESIS_PROFILE=long``
runs thousands of examples per test (`scripts/reliability/fuzz_long.sh`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, ServerConfig
from bertserve.plugin.errors import FieldViolation, InvalidArgument
from bertserve.wire.status import to_status
from fuzzing import (
    FUZZ_SEED,
    TRAILER_BUDGET,
    Guard,
    Rpc,
    Vocabulary,
    binaries,
    call_rpc,
    discover_rpcs,
    door,
    fuzz_settings,
    gather_vocabulary,
    http_call,
    http_headers,
    infer_json,
    infer_requests,
    json_bodies,
    malformed,
    ndjson_bodies,
    quote,
    raw_json,
    requests,
    sentinel_answers,
    texts,
    trailer_bytes,
)
from hypothesis import given, seed, strategies as st
from tiny_models import SPECIAL_TOKENS, WORDS

DOORS = ("native", "generic", "streaming", "oip", "grpc")
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Route:
    """One route of the HTTP door's OpenAPI document: method, path template, body type and its RPC, if any."""

    method: str
    template: str
    content_type: str | None
    rpc: Rpc | None


@dataclass(frozen=True)
class Fuzzed:
    server: BackgroundServer
    channel: grpc.Channel
    vocabulary: Vocabulary
    rpcs: list[Rpc]
    routes: list[Route]
    guard: Guard

    @property
    def http(self) -> str:
        assert self.server.http_address is not None
        return self.server.http_address

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # short in hypothesis's reports
        printer.text(f"Fuzzed(gRPC {self.server.address}, HTTP {self.server.http_address})")

    def of(self, *doors: str) -> list[Rpc]:
        return [rpc for rpc in self.rpcs if door(rpc) in doors]


def openapi_routes(address: str, rpcs: list[Rpc]) -> list[Route]:
    """Every operation of the gateway's ``GET /openapi.json``, with the RPC a ``POST /Service/Method`` calls."""
    reply = http_call(address, "GET", "/openapi.json")
    assert reply.status == 200, reply.body[:300]
    by_path = {rpc.path: rpc for rpc in rpcs}
    routes = []
    for template, item in json.loads(reply.body)["paths"].items():
        for method, operation in item.items():
            content = (operation.get("requestBody") or {}).get("content") or {}
            routes.append(Route(method.upper(), template, next(iter(content), None), by_path.get(template)))
    return routes


@pytest.fixture(scope="module")
def fuzzed(tiny_config: ServerConfig) -> Iterator[Fuzzed]:
    config = dataclasses.replace(tiny_config, http=HttpConfig(port=0))
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with BackgroundServer(config) as server, grpc.insecure_channel(server.address, options=options) as channel:
        rpcs = discover_rpcs(channel)
        assert server.http_address is not None
        routes = openapi_routes(server.http_address, rpcs)
        vocabulary = gather_vocabulary(channel, extra_words=[*SPECIAL_TOKENS, *WORDS], markers=["[MASK]"])
        yield Fuzzed(server, channel, vocabulary, rpcs, routes, Guard(channel, sentinel_answers(channel)))


@pytest.fixture(autouse=True)
def _sentinel_unchanged(fuzzed: Fuzzed) -> Iterator[None]:
    """After each test (all its examples): the sentinel requests answer exactly as before any fuzzing."""
    yield
    fuzzed.guard.check_sentinel()


def test_every_registered_service_and_route_is_fuzzed(fuzzed: Fuzzed) -> None:
    services = {rpc.service for rpc in fuzzed.rpcs}
    for expected in ("FillMask", "NextSentence", "Sentiment", "QuestionAnswering", "Inference", "Model"):
        assert f"bertserve.v1.{expected}Service" in services
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    assert {door(rpc) for rpc in fuzzed.rpcs} == set(DOORS)
    routed = {route.rpc.path for route in fuzzed.routes if route.rpc is not None}
    assert routed == {rpc.path for rpc in fuzzed.rpcs if door(rpc) != "grpc"}  # every RPC served over HTTP too
    assert any(route.template.startswith("/v2/") and route.method == "POST" for route in fuzzed.routes)


@fuzz_settings()
@seed(FUZZ_SEED)
@given(
    message=st.text(),
    metadata=st.dictionaries(st.text(max_size=16), st.text(), max_size=4),
    violations=st.lists(st.tuples(st.text(), st.text()), max_size=40),
    retry=st.none() | st.floats(0, 1e6),
)
def test_an_error_status_fits_in_the_trailers_a_client_reads(
    message: str, metadata: dict[str, str], violations: list[tuple[str, str]], retry: float | None
) -> None:
    """Any error, however much of the request it quotes, stays within gRPC's default 8 KiB of trailers
    (beyond, a client drops the status for a RESOURCE_EXHAUSTED of its own, and the gateway answers 429)."""
    fields = [FieldViolation(field, description) for field, description in violations]
    error = InvalidArgument(message, metadata=metadata, field_violations=fields, retry_delay=retry)
    assert trailer_bytes(to_status(error)) <= TRAILER_BUDGET


def _unary_door(fuzzed: Fuzzed, data: st.DataObject, *doors: str) -> None:
    """One generated request to one RPC of `doors`."""
    rpc = data.draw(st.sampled_from(fuzzed.of(*doors)), label="rpc")
    request = data.draw(requests(rpc.request, fuzzed.vocabulary), label="request")
    fuzzed.guard.rpc(rpc, call_rpc(fuzzed.channel, rpc, [request.SerializeToString()]), request)


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_native_task_services(fuzzed: Fuzzed, data: st.DataObject) -> None:
    _unary_door(fuzzed, data, "native")


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_generic_and_model_services(fuzzed: Fuzzed, data: st.DataObject) -> None:
    _unary_door(fuzzed, data, "generic")


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_grpc_health_and_reflection(fuzzed: Fuzzed, data: st.DataObject) -> None:
    _unary_door(fuzzed, data, "grpc")


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_streams(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """A random list of random requests on a stream, every reply read: per-input errors are fine, no bad status."""
    rpc = data.draw(st.sampled_from(fuzzed.of("streaming")), label="rpc")
    batch = data.draw(st.lists(requests(rpc.request, fuzzed.vocabulary), max_size=8), label="requests")
    outcome = call_rpc(fuzzed.channel, rpc, [request.SerializeToString() for request in batch])
    fuzzed.guard.rpc(rpc, outcome, batch)


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_open_inference_protocol(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Every RPC of inference.GRPCInferenceService; ModelInfer mostly with tensors shaped for the models."""
    rpc = data.draw(st.sampled_from(fuzzed.of("oip")), label="rpc")
    strategy = requests(rpc.request, fuzzed.vocabulary)
    if rpc.method.name == "ModelInfer" and data.draw(st.integers(0, 3), label="tensors for the models"):
        strategy = infer_requests(fuzzed.vocabulary)
    request = data.draw(strategy, label="request")
    fuzzed.guard.rpc(rpc, call_rpc(fuzzed.channel, rpc, [request.SerializeToString()]), request)


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_malformed_protobuf_on_every_rpc(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Bytes that are not the request message (random, or a valid one cut or flipped), on any RPC."""
    rpc = data.draw(st.sampled_from(fuzzed.rpcs), label="rpc")
    valid = requests(rpc.request, fuzzed.vocabulary).map(lambda m: m.SerializeToString())
    payload = st.one_of(malformed(valid), valid)
    count = (0, 6) if rpc.method.client_streaming else (1, 1)
    payloads = data.draw(st.lists(payload, min_size=count[0], max_size=count[1]), label="payloads")
    fuzzed.guard.rpc(rpc, call_rpc(fuzzed.channel, rpc, payloads), payloads)


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_unknown_methods(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """A method no service has, on a served service or none: never INTERNAL or UNKNOWN."""
    service = data.draw(st.sampled_from(sorted({rpc.service for rpc in fuzzed.rpcs})) | st.text(min_size=1))
    name = data.draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20))
    path = f"/{quote(service)}/{quote(name)}"
    if path in {rpc.path for rpc in fuzzed.rpcs}:
        return
    payload = data.draw(binaries())
    try:
        fuzzed.channel.unary_unary(path)(payload, timeout=60)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        assert code is grpc.StatusCode.UNIMPLEMENTED, f"{code.name} for {path}: {error.details()!r}"  # type: ignore[attr-defined]
    fuzzed.guard.after()


# --- the HTTP door --------------------------------------------------------------------------------------------------


def _content_type(data: st.DataObject, declared: str | None) -> str | None:
    """Mostly the declared content type, else another (or none)."""
    others = st.sampled_from(["application/json", NDJSON, None, "text/plain"])
    return data.draw(st.one_of(st.just(declared), others), label="content type")


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_http_native_routes(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """``POST /Service/Method`` for every RPC: its JSON (NDJSON for streams), edited, broken or anything."""
    route = data.draw(st.sampled_from([r for r in fuzzed.routes if r.rpc is not None and door(r.rpc) != "oip"]))
    assert route.rpc is not None
    streaming = route.content_type == NDJSON
    bodies = (ndjson_bodies if streaming else json_bodies)(route.rpc.request, fuzzed.vocabulary)
    body = data.draw(bodies, label="body")
    content_type = _content_type(data, route.content_type)
    reply = http_call(fuzzed.http, route.method, route.template, body, content_type)
    fuzzed.guard.http(route.method, route.template, reply, (content_type, body))


def _oip_path(data: st.DataObject, template: str, vocabulary: Vocabulary) -> tuple[str, str]:
    """The route's path with a model (and version) filled in; the model's name."""
    model = data.draw(st.sampled_from(sorted(vocabulary.models)) | texts(vocabulary), label="model")
    version = data.draw(st.sampled_from(["1", "", "0", "2"]) | texts(vocabulary), label="version")
    return template.replace("{name}", quote(model)).replace("{version}", quote(version)), model


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_http_open_inference_protocol_routes(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Every ``/v2`` route, any model and version; inference bodies with tensors, edited or broken."""
    route = data.draw(st.sampled_from([r for r in fuzzed.routes if r.template.startswith("/v2")]), label="route")
    path, model = _oip_path(data, route.template, fuzzed.vocabulary)
    body: bytes | None = None
    if route.method == "POST":
        body = data.draw(infer_json(fuzzed.vocabulary, model), label="body")
    content_type = _content_type(data, route.content_type) if body is not None else None
    reply = http_call(fuzzed.http, route.method, path, body, content_type)
    fuzzed.guard.http(route.method, path, reply, (content_type, body))


@fuzz_settings()
@seed(FUZZ_SEED)
@given(data=st.data())
def test_http_any_method_and_path(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Any method on a documented path or a made-up one, with any body and odd optional headers."""
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), label="method")
    documented = st.sampled_from(sorted({route.template for route in fuzzed.routes}))
    made_up = st.lists(texts(fuzzed.vocabulary).map(quote), min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
    path = data.draw(documented | made_up, label="path")
    body: Any = data.draw(st.none() | raw_json(fuzzed.vocabulary), label="body")
    content_type = _content_type(data, "application/json")
    headers = data.draw(http_headers(), label="headers")
    reply = http_call(fuzzed.http, method, path, body, content_type, headers)
    fuzzed.guard.http(method, path, reply, (content_type, headers, body))
