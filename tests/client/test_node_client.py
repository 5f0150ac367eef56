"""Cross-language interop: a Node.js gRPC client (tests/client/node/call_server.mjs) against the server.

The Node program uses @grpc/grpc-js and @grpc/proto-loader, either with the
.proto files from protos/ or with nothing but server reflection. Its results
must match what the Python client library gets for the same calls.

Needs `node` on PATH and the Node packages installed first:
``npm ci --prefix tests/client/node`` (otherwise these tests are skipped).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import SecurityConfig, ServerConfig
from bertserve_client import BertServeClient, InvalidArgumentError
from bertserve_client.v1 import (
    fill_mask_pb2,
    inference_pb2,
    model_pb2,
    next_sentence_pb2,
    question_answering_pb2,
    sentiment_pb2,
)
from interop import MULTIBYTE_QA_INPUTS, assert_matches, python_head

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "client" / "node"
SCRIPT = NODE_DIR / "call_server.mjs"
PROTO_ROOT = REPO / "protos"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node (Node.js) is not on PATH"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir()
        or not (NODE_DIR / "node_modules" / "@grpc" / "proto-loader").is_dir(),
        reason="Node packages not installed: run `npm ci --prefix tests/client/node`",
    ),
]

# The same inputs call_server.mjs sends.
FILL_MASK_TEXT = "the [MASK] was good ."
SENTIMENT_TEXT = "a great movie"
QUESTION, CONTEXT = "who went home ?", "john went home at night ."
SENTENCE_PAIR = ("john went home .", "he slept .")
PREDICT_HEAD, PREDICT_INPUT = "sentiment", {"text": SENTIMENT_TEXT}


BERTSERVE_SERVICES = {
    service.full_name: sorted(f"/{service.full_name}/{method.name}" for method in service.methods)
    for module in (fill_mask_pb2, inference_pb2, model_pb2, next_sentence_pb2, question_answering_pb2, sentiment_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
}


def run_node(address: str, mode: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proto_root = "-" if mode == "reflection" else str(PROTO_ROOT)
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(SCRIPT), address, proto_root, mode],
        cwd=NODE_DIR,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"node {SCRIPT.name} {mode} exited {done.returncode}:\n{done.stderr}{done.stdout}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def python_heads(client: BertServeClient) -> dict[str, Any]:
    return {"heads": [python_head(head) for head in client.list_heads()]}


@pytest.fixture(scope="module")
def python_results(server: BackgroundServer) -> dict[str, Any]:
    """The Python client's answers to the calls call_server.mjs makes, shaped like the proto responses."""
    with BertServeClient(server.address, timeout=10) as client:
        client.wait_until_ready(timeout=30)

        def results(items: list[Any]) -> dict[str, Any]:
            return {"results": [dataclasses.asdict(item) for item in items]}

        with pytest.raises(InvalidArgumentError) as bad:
            client.fill_mask(["no mask"])
        return {
            "fill_mask": results(client.fill_mask([FILL_MASK_TEXT], top_k=3)),
            "sentiment": results(client.sentiment([SENTIMENT_TEXT])),
            "answer": results(client.answer([(QUESTION, CONTEXT)])),
            "next_sentence": results(client.next_sentence([SENTENCE_PAIR])),
            "list_heads": python_heads(client),
            "get_head": python_head(client.get_head(PREDICT_HEAD)),
            "predict": client.predict(PREDICT_HEAD, PREDICT_INPUT),
            "analyze": [
                [{"head": name, "output": output} for name, output in result.items()]
                for result in client.analyze([SENTIMENT_TEXT], [PREDICT_HEAD])
            ],
            "bad_fill_mask": bad.value,
        }


@pytest.fixture(scope="module")
def node_protos(server: BackgroundServer) -> dict[str, Any]:
    return run_node(server.address, "protos")


@pytest.fixture(scope="module")
def node_reflection(server: BackgroundServer) -> dict[str, Any]:
    return run_node(server.address, "reflection")


def test_node_loads_every_proto_file(node_protos: dict[str, Any]) -> None:
    expected = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    assert node_protos["proto_files"] == expected


@pytest.mark.parametrize(
    "call", ["fill_mask", "sentiment", "answer", "next_sentence", "list_heads", "get_head", "predict", "analyze"]
)
def test_node_results_match_python_client(
    call: str, node_protos: dict[str, Any], python_results: dict[str, Any]
) -> None:
    assert_matches(node_protos[call], python_results[call], call)


def test_node_results_are_not_empty(node_protos: dict[str, Any], python_results: dict[str, Any]) -> None:
    # Guards against both clients agreeing on nothing.
    predictions = node_protos["fill_mask"]["results"][0]["masks"][0]["predictions"]
    assert len(predictions) == 3 and all(isinstance(p["token_id"], int) for p in predictions)
    best = node_protos["answer"]["results"][0]["answers"][0]
    assert CONTEXT[best["start"] : best["end"]] == best["text"] != ""
    sentiment = node_protos["sentiment"]["results"][0]
    assert sentiment["label"] in {s["label"] for s in sentiment["scores"]}
    assert {h["state"] for h in node_protos["list_heads"]["heads"]} == {"HEAD_STATE_LOADED"}
    heads = {h["name"]: h for h in node_protos["list_heads"]["heads"]}
    assert all(h["input_schema"]["type"] == h["output_schema"]["type"] == "object" for h in heads.values())
    assert all(h["package"] and h["version"] for h in heads.values())
    assert heads["sentiment"]["text_fields"] == ["text"]
    assert heads["next-sentence"]["text_fields"] == ["first", "second"]
    # A JSON Schema integer keyword reads as an int on both sides, not as the Struct's double.
    assert heads["sentiment"]["input_schema"]["properties"]["text"]["minLength"] == 1
    python_head = next(h for h in python_results["list_heads"]["heads"] if h["name"] == "sentiment")
    assert type(python_head["input_schema"]["properties"]["text"]["minLength"]) is int
    assert node_protos["get_head"]["name"] == PREDICT_HEAD
    # Predict on the sentiment head answers what ClassifySentiment does.
    assert node_protos["predict"]["label"] in heads["sentiment"]["labels"]
    assert_matches(node_protos["predict"], python_results["sentiment"]["results"][0], "predict vs sentiment")
    assert node_protos["analyze"][0][0]["output"]["label"] == node_protos["predict"]["label"]


def test_node_sees_invalid_argument_with_rich_details(
    node_protos: dict[str, Any], python_results: dict[str, Any]
) -> None:
    bad = node_protos["bad_fill_mask"]
    assert bad["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] == 3
    assert bad["code_name"] == "INVALID_ARGUMENT"
    assert "[MASK]" in bad["details"]

    python_error: InvalidArgumentError = python_results["bad_fill_mask"]
    assert bad["details"] == python_error.message

    status = bad["status_details"]
    assert status is not None, "no grpc-status-details-bin trailer reached the Node client"
    assert status["byte_length"] > 0
    assert status["code"] == 3 and status["message"] == bad["details"]
    by_type = {detail["type_url"].rsplit("/", 1)[-1]: detail for detail in status["details"]}
    assert by_type["google.rpc.ErrorInfo"]["reason"] == python_error.reason
    assert by_type["google.rpc.ErrorInfo"]["domain"] == python_error.domain == "bertserve"
    assert by_type["google.rpc.ErrorInfo"]["metadata"] == python_error.metadata
    violations = by_type["google.rpc.BadRequest"]["field_violations"]
    assert [(v["field"], v["description"]) for v in violations] == [
        (v.field, v.description) for v in python_error.field_violations
    ]
    assert [v["field"] for v in violations] == ["texts[0]"]


def test_node_reflection_lists_every_service(node_reflection: dict[str, Any]) -> None:
    services = set(node_reflection["services"])
    missing = (set(BERTSERVE_SERVICES) | {"grpc.health.v1.Health"}) - services
    assert not missing, f"reflection did not list {sorted(missing)}; it listed {sorted(services)}"
    assert node_reflection["errors"] == {}


def test_node_reflection_describes_the_methods(node_reflection: dict[str, Any]) -> None:
    for service, methods in BERTSERVE_SERVICES.items():
        assert node_reflection["methods"][service] == methods, service
    assert "/grpc.health.v1.Health/Check" in node_reflection["methods"]["grpc.health.v1.Health"]


def test_node_calls_through_reflected_descriptors(
    node_reflection: dict[str, Any], python_results: dict[str, Any]
) -> None:
    assert_matches(node_reflection["list_heads"], python_results["list_heads"], "list_heads")
    assert_matches(node_reflection["predict"], python_results["predict"], "predict")


def test_node_client_authenticates_with_a_bearer_token(tiny_config: ServerConfig) -> None:
    """Another language's gRPC stack: refused without the token, answered with it, with the request id echoed."""
    config = dataclasses.replace(tiny_config, security=SecurityConfig(tokens=("node-client-token-1",)))
    with BackgroundServer(config) as running:
        result = run_node(running.address, "token", {"NODE_CLIENT_TOKEN": "node-client-token-1"})
    assert result["anonymous"]["code"] == "UNAUTHENTICATED"
    assert "requires a bearer token" in result["anonymous"]["details"]
    assert result["authorized"]["code"] == "OK" and result["authorized"]["label"]
    assert result["authorized"]["request_id"] == "node-call-1"


def test_node_slices_answers_by_utf8_byte_offsets(server: BackgroundServer) -> None:
    """In JavaScript, a Buffer of the context's UTF-8 bytes sliced by start_byte/end_byte is the
    answer. The string itself counts UTF-16 units: sliced by the code-point offsets it misses
    the answer once a character outside the BMP (an emoji) comes first, which is why the
    byte offsets exist."""
    results = run_node(server.address, "offsets", {"NODE_QA_INPUTS": json.dumps(MULTIBYTE_QA_INPUTS)})
    assert [r["context"] for r in results] == [context for _, context in MULTIBYTE_QA_INPUTS]
    misplaced = []
    with BertServeClient(server.address, timeout=10) as client:
        for (question, context), result in zip(MULTIBYTE_QA_INPUTS, results, strict=True):
            answers = result["answers"]
            assert answers and all(a["by_bytes"] == a["by_code_points"] == a["text"] != "" for a in answers), answers
            misplaced += [(context, a) for a in answers if a["by_utf16_index"] != a["text"]]
            expected = client.answer(question, context, top_k=10).answers
            keys = ("text", "start", "end", "start_byte", "end_byte")
            assert [{k: a[k] for k in keys} for a in answers] == [{k: getattr(a, k) for k in keys} for a in expected]
    assert misplaced, "no answer that UTF-16 indices miss: the test proves nothing"
    # Only characters outside the BMP (two UTF-16 units, one code point) move UTF-16 indices.
    assert all(any(ord(char) > 0xFFFF for char in context[: a["end"]]) for context, a in misplaced), misplaced
    assert any(a["by_utf16_index"] != a["text"] for a in results[2]["answers"]), "the emoji context"
