"""The Open Inference Protocol's REST routes on the HTTP door: the same answers as its gRPC service."""

from __future__ import annotations

import dataclasses
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, ServerConfig

pb = pytest.importorskip("bertserve_client.oip.grpc_service_pb2")
pb_grpc = pytest.importorskip("bertserve_client.oip.grpc_service_pb2_grpc")


def http(port: int, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.load(error)


def length_prefixed(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor: each a 4-byte little-endian length, then the bytes."""
    values, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return values


@pytest.fixture(scope="module")
def door(tiny_config: ServerConfig) -> Iterator[tuple[BackgroundServer, int]]:
    with BackgroundServer(dataclasses.replace(tiny_config, http=HttpConfig(port=0))) as running:
        assert running._server is not None and running._server.http_port is not None
        yield running, running._server.http_port


@pytest.fixture(scope="module")
def stub(door: tuple[BackgroundServer, int]) -> Iterator[Any]:
    with grpc.insecure_channel(door[0].address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_health_and_server_metadata(door: tuple[BackgroundServer, int], stub: Any) -> None:
    port = door[1]
    assert http(port, "/v2/health/live")[::2] == (200, {"live": True})
    assert http(port, "/v2/health/ready")[::2] == (200, {"ready": True})
    status, headers, body = http(port, "/v2")
    expected = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert status == 200 and headers["x-request-id"]
    assert body == {"name": expected.name, "version": expected.version, "extensions": list(expected.extensions)}


@pytest.mark.parametrize("head", ["sentiment", "fill-mask", "question-answering"])
def test_model_metadata_and_ready_match_grpc(door: tuple[BackgroundServer, int], stub: Any, head: str) -> None:
    expected = stub.ModelMetadata(pb.ModelMetadataRequest(name=head), timeout=10)
    status, _, body = http(door[1], f"/v2/models/{head}")
    assert status == 200 and body["name"] == head and body["versions"] == ["1"]
    assert body["inputs"] == [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in expected.inputs]
    assert [t["name"] for t in body["outputs"]] == [t.name for t in expected.outputs]
    assert http(door[1], f"/v2/models/{head}/ready")[::2] == (200, {"name": head, "ready": True})
    assert http(door[1], f"/v2/models/{head}/versions/1/ready")[0] == 200


def test_infer_matches_grpc_model_infer(door: tuple[BackgroundServer, int], stub: Any) -> None:
    texts = ["a great film", "a dull film"]
    body = {
        "id": "req-7",
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}],
        "outputs": [{"name": "label"}, {"name": "scores.score"}],
    }
    status, _, reply = http(door[1], "/v2/models/sentiment/infer", body)
    assert status == 200, reply
    request = pb.ModelInferRequest(model_name="sentiment", id="req-7")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend(text.encode() for text in texts)
    request.outputs.add(name="label")
    request.outputs.add(name="scores.score")
    expected = stub.ModelInfer(request, timeout=30)
    assert (reply["model_name"], reply["model_version"], reply["id"]) == ("sentiment", "1", "req-7")
    label, scores = reply["outputs"]
    assert (label["name"], label["datatype"], label["shape"]) == ("label", "BYTES", [2])
    assert label["data"] == [value.decode() for value in length_prefixed(expected.raw_output_contents[0])]
    assert scores["shape"] == list(expected.outputs[1].shape) and scores["datatype"] == "FP64"
    count = len(expected.raw_output_contents[1]) // 8
    assert scores["data"] == list(struct.unpack(f"<{count}d", expected.raw_output_contents[1]))


def test_infer_parameters_are_the_heads_options(door: tuple[BackgroundServer, int]) -> None:
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the [MASK] film"]}],
        "parameters": {"top_k": 2},
    }
    status, _, reply = http(door[1], "/v2/models/fill-mask/infer", body)
    assert status == 200
    tokens = next(t for t in reply["outputs"] if t["name"] == "masks.predictions.token")
    assert tokens["shape"] == [1, 1, 2]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
            400,
            "inputs[0].data",
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": ["a"]}]},
            400,
            "inputs[0].data",
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "TEXT", "data": ["a"]}]},
            400,
            "inputs[0].datatype",
        ),
        ("/v2/models/sentiment/infer", {"inputs": "a"}, 400, "inputs"),
        ("/v2/models/nope", None, 404, None),
        ("/v2/models/sentiment/versions/2", None, 404, None),
    ],
    ids=["shape", "datatype-mismatch", "unknown-datatype", "no-inputs", "unknown-model", "unknown-version"],
)
def test_errors_are_status_json_with_the_protocols_error(
    door: tuple[BackgroundServer, int], path: str, body: Any, status: int, field: str | None
) -> None:
    got, headers, reply = http(door[1], path, body)
    assert got == status and reply["error"] == reply["message"] and headers["x-request-id"]
    if field is not None:
        violations = [d for d in reply["details"] if d["@type"].endswith("BadRequest")][0]["fieldViolations"]
        assert violations[0]["field"] == field


def test_openapi_lists_the_protocols_routes(door: tuple[BackgroundServer, int]) -> None:
    paths = http(door[1], "/openapi.json")[2]["paths"]
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/infer"} <= set(paths)
    assert "/inference.GRPCInferenceService/ModelInfer" in paths
