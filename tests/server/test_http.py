"""The HTTP/JSON gateway over real HTTP: every unary RPC as POST with JSON, errors as google.rpc.Status, OpenAPI.

Security (tokens, TLS) and the body limit: `test_http_security.py`; streaming RPCs as NDJSON: `test_http_stream.py`.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, ServerConfig
from bertserve.wire.http.errors import HTTP_STATUS, error_response, status_from_call
from bertserve.wire.http.gateway import rpc_table
from bertserve.wire.status import to_status
from bertserve_client import BertServeClient
from bertserve_client.v1 import (
    fill_mask_pb2,
    inference_pb2,
    model_pb2,
    next_sentence_pb2,
    question_answering_pb2,
    sentiment_pb2,
)
from google.protobuf import json_format

SENTIMENT = "/bertserve.v1.SentimentService/ClassifySentiment"
PB2_MODULES = [fill_mask_pb2, inference_pb2, model_pb2, next_sentence_pb2, question_answering_pb2, sentiment_pb2]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def http(
    port: int,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    context: ssl.SSLContext | None = None,
) -> Reply:
    """One HTTP(S) call; JSON `body` (or raw `data`) is POSTed, no body is a GET."""
    if data is None and body is not None:
        data = json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    scheme = "https" if context is not None else "http"
    host = "localhost" if context is not None else "127.0.0.1"
    request = urllib.request.Request(
        f"{scheme}://{host}:{port}{path}", data=data, headers={**sent, **(headers or {})}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, json.load(response))
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, json.load(error))


def http_port(server: BackgroundServer) -> int:
    port = server._server.http_port if server._server is not None else None
    assert port is not None
    return port


@pytest.fixture(scope="module")
def gateway(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    with BackgroundServer(dataclasses.replace(tiny_config, http=HttpConfig(port=0))) as running:
        yield running


def bertserve_rpcs() -> dict[str, Any]:
    """Every RPC of every bertserve.v1 service, by path, from the generated modules' descriptors."""
    return {
        f"/{service.full_name}/{method.name}": method
        for module in PB2_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("/bertserve.v1.FillMaskService/FillMask", {"texts": ["paris is the [MASK] of france"], "topK": 3}),
    (
        "/bertserve.v1.NextSentenceService/PredictNextSentence",
        {"pairs": [{"first": "he went home", "second": "he slept"}]},
    ),
    (SENTIMENT, {"texts": ["a great film", "a dull film"]}),
    (
        "/bertserve.v1.QuestionAnsweringService/AnswerQuestion",
        {"inputs": [{"question": "who went home", "context": "john went home at night"}], "top_k": 2},
    ),
    ("/bertserve.v1.InferenceService/Predict", {"head": "sentiment", "input": {"text": "a great film"}}),
    (
        "/bertserve.v1.InferenceService/Analyze",
        {"inputs": [{"text": "the film was [MASK]"}], "heads": [{"head": "sentiment"}, {"head": "fill-mask"}]},
    ),
    ("/bertserve.v1.ModelService/ListHeads", {}),
    ("/bertserve.v1.ModelService/GetHead", {"name": "question-answering"}),
    ("/bertserve.v1.ModelService/GetServerInfo", {}),
]


def test_the_calls_cover_every_unary_rpc() -> None:
    unary = {path for path, m in bertserve_rpcs().items() if not (m.client_streaming or m.server_streaming)}
    assert {path for path, _ in CALLS} == unary


@pytest.mark.parametrize(("path", "body"), CALLS, ids=[path.rsplit("/", 1)[1] for path, _ in CALLS])
def test_every_unary_rpc_answers_as_over_grpc(gateway: BackgroundServer, path: str, body: dict[str, Any]) -> None:
    rpc = rpc_table([path.split("/")[1]])[path]
    with grpc.insecure_channel(gateway.address) as channel:
        call = channel.unary_unary(
            path, request_serializer=rpc.request.SerializeToString, response_deserializer=rpc.response.FromString
        )
        expected = call(json_format.ParseDict(body, rpc.request()), timeout=30)
    reply = http(http_port(gateway), path, body)
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    assert reply.body == json_format.MessageToDict(expected, always_print_fields_with_no_presence=True)


def test_answers_match_the_python_client(gateway: BackgroundServer) -> None:
    with BertServeClient(gateway.address) as client:
        expected = client.sentiment(["a great film", "a dull film"])
    reply = http(http_port(gateway), SENTIMENT, {"texts": ["a great film", "a dull film"]})
    got = [(r["label"], pytest.approx(r["score"])) for r in reply.body["results"]]
    assert got == [(result.label, result.score) for result in expected]


def test_fields_with_default_values_are_sent(gateway: BackgroundServer) -> None:
    reply = http(http_port(gateway), "/bertserve.v1.ModelService/GetHead", {"name": "fill-mask"})
    assert reply.body["head"]["labels"] == [] and reply.body["head"]["state"] == "HEAD_STATE_LOADED"


def test_bad_input_is_400_with_the_field_violations(gateway: BackgroundServer) -> None:
    reply = http(http_port(gateway), SENTIMENT, {"texts": ["fine", ""]})
    assert reply.status == 400
    assert reply.body["code"] == 3 and reply.body["message"]
    info, bad_request = reply.body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["domain"] == "bertserve"
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["texts[1]"]


def test_unknown_head_is_404(gateway: BackgroundServer) -> None:
    reply = http(http_port(gateway), "/bertserve.v1.InferenceService/Predict", {"head": "nope", "input": {}})
    assert reply.status == 404 and reply.body["code"] == 5
    assert reply.body["details"][0]["reason"] == "HEAD_NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "reason"),
    [
        (SENTIMENT, {"data": b"{not json"}, 400, "INVALID_JSON"),
        (SENTIMENT, {"body": {"txts": ["a"]}}, 400, "INVALID_JSON"),
        (SENTIMENT, {"data": b"texts=a", "headers": {"Content-Type": "text/plain"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("/bertserve.v1.NoSuchService/Call", {"body": {}}, 404, "RPC_NOT_FOUND"),
        ("/no/such/route", {"body": {}}, 404, "ROUTE_NOT_FOUND"),
        (SENTIMENT, {"method": "GET"}, 405, "METHOD_NOT_ALLOWED"),
        (SENTIMENT, {"body": {"texts": ["a"]}, "headers": {"Connect-Timeout-Ms": "soon"}}, 400, "BAD_TIMEOUT"),
    ],
    ids=["broken-json", "unknown-field", "not-json", "unknown-rpc", "unknown-route", "get", "bad-timeout"],
)
def test_http_level_errors_are_status_json(
    gateway: BackgroundServer, path: str, kwargs: dict[str, Any], status: int, reason: str
) -> None:
    reply = http(http_port(gateway), path, **kwargs)
    assert reply.status == status, reply.body
    assert reply.body["details"][0]["reason"] == reason and reply.body["message"]
    assert reply.headers["x-request-id"]


def test_streaming_rpcs_answer_json_with_a_pointer_to_ndjson(gateway: BackgroundServer) -> None:
    streaming = [path for path, m in bertserve_rpcs().items() if m.client_streaming or m.server_streaming]
    assert streaming and rpc_table(["grpc.health.v1.Health"])["/grpc.health.v1.Health/Watch"].streaming
    for path in streaming:
        reply = http(http_port(gateway), path, {})
        assert reply.status == 400 and reply.body["details"][0]["reason"] == "STREAMING_RPC"
        assert "application/x-ndjson" in reply.body["message"] and "gRPC" in reply.body["message"]


def test_request_id_is_echoed_or_made(gateway: BackgroundServer) -> None:
    port = http_port(gateway)
    ok = http(port, SENTIMENT, {"texts": ["a"]}, headers={"X-Request-Id": "http-test-1"})
    failed = http(port, SENTIMENT, {"texts": [""]}, headers={"X-Request-Id": "http-test-2"})
    assert (ok.status, ok.headers["x-request-id"]) == (200, "http-test-1")
    assert (failed.status, failed.headers["x-request-id"]) == (400, "http-test-2")
    made = http(port, SENTIMENT, {"texts": ["a"]}, headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces" and len(made.headers["x-request-id"]) == 32


def test_metrics_count_http_calls_under_the_grpc_method(gateway: BackgroundServer) -> None:
    assert gateway._server is not None
    registry = gateway._server.metrics.registry
    method = SENTIMENT.lstrip("/")

    def count(code: str) -> float:
        labels = {"method": method, "head": "sentiment", "code": code}
        return registry.get_sample_value("bertserve_requests_total", labels) or 0.0

    before_ok, before_bad = count("OK"), count("INVALID_ARGUMENT")
    http(http_port(gateway), SENTIMENT, {"texts": ["a"]})
    http(http_port(gateway), SENTIMENT, {"texts": [""]})
    deadline = time.monotonic() + 5  # a failed call is counted just after its status goes out
    while count("INVALID_ARGUMENT") == before_bad and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (count("OK") - before_ok, count("INVALID_ARGUMENT") - before_bad) == (1, 1)


def test_a_deadline_header_is_the_calls_deadline(gateway: BackgroundServer) -> None:
    reply = http(http_port(gateway), SENTIMENT, {"texts": ["a"]}, headers={"Connect-Timeout-Ms": "0"})
    assert reply.status == 504 and reply.body["code"] == 4
    assert http(http_port(gateway), SENTIMENT, {"texts": ["a"]}, headers={"Connect-Timeout-Ms": "30000"}).status == 200


def test_openapi_lists_every_rpc_of_every_service(gateway: BackgroundServer) -> None:
    document = http(http_port(gateway), "/openapi.json").body
    assert document["openapi"].startswith("3.")
    for path, method in bertserve_rpcs().items():
        operation = document["paths"][path]["post"]
        media = "application/x-ndjson" if method.client_streaming or method.server_streaming else "application/json"
        request = operation["requestBody"]["content"][media]["schema"]["$ref"]
        assert request == f"#/components/schemas/{method.input_type.full_name}"
        reply = operation["responses"]["200"]["content"][media]["schema"]
        assert f"#/components/schemas/{method.output_type.full_name}" in json.dumps(reply)
        error = operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
        assert error == "#/components/schemas/google.rpc.Status"
    stream = document["paths"]["/bertserve.v1.InferenceService/PredictStream"]["post"]
    end_line = stream["responses"]["200"]["content"]["application/x-ndjson"]["schema"]["anyOf"][1]
    assert end_line["properties"]["error"] == {"$ref": "#/components/schemas/google.rpc.Status"}
    schemas = document["components"]["schemas"]
    refs = json.dumps(document).split('"$ref": "#/components/schemas/')[1:]
    assert {ref.split('"')[0] for ref in refs} <= set(schemas)  # every reference resolves
    qa = schemas["bertserve.v1.AnswerQuestionRequest"]["properties"]
    assert qa["topK"] == {"type": "integer", "format": "int64", "minimum": 0}
    assert qa["noAnswerPolicy"]["enum"][0] == "NO_ANSWER_POLICY_UNSPECIFIED"
    assert schemas["bertserve.v1.PredictRequest"]["properties"]["input"]["type"] == "object"  # a Struct


def test_status_codes_map_to_the_standard_http_statuses() -> None:
    expected = {
        "INVALID_ARGUMENT": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
        "INTERNAL": 500,
        "UNIMPLEMENTED": 501,
        "CANCELLED": 499,
    }
    assert {code.name: HTTP_STATUS[code] for code in HTTP_STATUS if code.name in expected} == expected
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


def test_a_retry_delay_becomes_retry_after() -> None:
    from bertserve.plugin.errors import QueueFull

    status = to_status(QueueFull("the queue is full", retry_delay=1.2))
    rich = status_from_call(status.code, status.details, status.trailing_metadata)
    response = error_response(rich, "rid-1")
    assert response.status == 429 and response.headers["Retry-After"] == "2"
    body = json.loads(response.text or "")
    assert [detail["@type"].rsplit(".", 1)[1] for detail in body["details"]] == ["ErrorInfo", "RetryInfo"]
