"""Every example of docs/other-languages.md, run against a live server, checked against the Python client.

Each example is the fenced block after a ``<!-- run: NAME -->`` marker, run as
written with the server's address in place of ``localhost:50051`` (gRPC) or
``localhost:8080`` (HTTP). grpcurl cannot be installed here (no Debian package,
and its npm wrapper downloads from the network), so its commands are replayed
through server reflection with Python, as grpcurl does it, and run as written
wherever grpcurl is on PATH.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, ServerConfig
from bertserve_client import BertServeClient
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "other-languages.md"
NODE_DIR = REPO / "tests" / "client" / "node"


def example(name: str) -> str:
    """The code block after ``<!-- run: NAME -->``."""
    text = PAGE.read_text()
    marker = f"<!-- run: {name} -->"
    assert marker in text, f"docs/other-languages.md has no {marker}"
    block = text.split(marker, 1)[1].split("```", 2)[1]
    return block.split("\n", 1)[1]  # drop the language tag


def commands(name: str, address: str, placeholder: str = "localhost:50051") -> list[list[str]]:
    lines = [line for line in example(name).splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line.replace(placeholder, address)) for line in lines]


def test_every_language_section_has_a_run_example() -> None:
    text = PAGE.read_text()
    for name in ("grpcurl", "node", "go", "tritonclient", "curl", "curl-stream", "python-stream"):
        assert f"<!-- run: {name} -->" in text


# --- grpcurl --------------------------------------------------------------------------------------------------------


def _json_messages(text: str) -> list[dict[str, Any]]:
    decoder, messages, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        message, at = decoder.raw_decode(text, at)
        messages.append(message)
    return messages


def _replay(channel: grpc.Channel, args: list[str]) -> list[dict[str, Any]]:
    """What grpcurl would do with `args`: resolve the method by reflection, send the -d JSON message(s)."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service_name, method_name = args[-1].rsplit("/", 1)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    requests = [json_format.ParseDict(m, request_class()) for m in _json_messages(args[args.index("-d") + 1])]
    path = f"/{service_name}/{method_name}"
    codec = {"request_serializer": request_class.SerializeToString, "response_deserializer": response_class.FromString}
    if method.server_streaming or method.client_streaming:
        responses = list(channel.stream_stream(path, **codec)(iter(requests), timeout=30))
    else:
        (request,) = requests
        responses = [channel.unary_unary(path, **codec)(request, timeout=30)]
    return [json_format.MessageToDict(response, preserving_proto_field_name=True) for response in responses]


def test_grpcurl_examples(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel, BertServeClient(server.address) as client:
        for args in commands("grpcurl", server.address):
            assert args[:2] == ["grpcurl", "-plaintext"]
            if shutil.which("grpcurl"):
                done = subprocess.run(args, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
            if args[-1] == "list":
                services = ProtoReflectionDescriptorDatabase(channel).get_services()
                assert {"bertserve.v1.SentimentService", "bertserve.v1.InferenceService"} <= set(services)
                continue
            responses = _replay(channel, args)
            if args[-1].endswith("/ClassifySentiment"):
                expected = [r.label for r in client.sentiment(["A great film.", "A dull film."])]
                assert [r["label"] for r in responses[0]["results"]] == expected
            elif args[-1].endswith("/PredictStream"):
                assert sorted(r["id"] for r in responses) == ["a", "b"]
                assert all("output" in r and "error" not in r for r in responses)
            else:
                assert responses and responses[0]


# --- Node.js --------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not on PATH")
@pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="Node packages not installed: run `npm ci --prefix tests/client/node`",
)
def test_node_example(server: BackgroundServer, tmp_path: Path) -> None:
    (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules")
    (tmp_path / "example.mjs").write_text(example("node"))
    env = {**os.environ, "BERTSERVE_TARGET": server.address, "BERTSERVE_PROTOS": str(REPO / "protos")}
    done = subprocess.run(["node", "example.mjs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    unary, *stream = [json.loads(line) for line in done.stdout.splitlines()]
    with BertServeClient(server.address) as client:
        expected = client.sentiment("A great film.")
        streamed = client.sentiment("Great.").label
    assert unary["label"] == expected.label and unary["score"] == pytest.approx(expected.score, abs=1e-5)
    by_id = {result["id"]: result for result in stream}
    assert by_id["1"]["label"] == streamed and by_id["1"]["error"] is None
    assert by_id["2"]["label"] is None and "input.text" in by_id["2"]["error"]


# --- Go -------------------------------------------------------------------------------------------------------------


def test_go_example(server: BackgroundServer, tmp_path: Path) -> None:
    build, *calls = commands("go", server.address)
    assert " ".join(build).startswith("clients/go/generate.sh")
    missing = [tool for tool in ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH (see clients/go/README.md)")
    work = tmp_path / "repo"
    shutil.copytree(REPO / "clients" / "go", work / "clients" / "go", ignore=shutil.ignore_patterns("gen", "vendor"))
    shutil.copytree(REPO / "protos", work / "protos")
    env = {**os.environ, "GOPROXY": "off", "GOSUMDB": "off", "GOTOOLCHAIN": "local"}
    built = subprocess.run(
        ["bash", "-c", shlex.join(build[:1]) + " && " + " ".join(build[2:])], cwd=work, env=env, capture_output=True
    )
    if built.returncode == 3:  # generate.sh: a Debian package is missing
        pytest.skip(built.stderr.decode().strip())
    assert built.returncode == 0, built.stderr.decode()
    outputs = []
    for args in calls:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    with BertServeClient(server.address) as client:
        labels = [r.label for r in client.sentiment(["A great film.", "A dull film."])]
        fill_mask = client.predict("fill-mask", {"text": "Paris is the [MASK] of France."})
    assert [r["label"] for r in outputs[0]["results"]] == labels
    assert outputs[1]["output"]["masks"]
    assert outputs[2]["code_name"] == "INVALID_ARGUMENT" or outputs[2].get("code") == 3
    good, bad = outputs[3]["results"]  # --mode stream: one result per --text, sorted by id
    assert (good["id"], good["head"], good["error"]) == ("0", "fill-mask", None)
    tokens = [p["token"] for p in good["output"]["masks"][0]["predictions"]]
    assert tokens == [p["token"] for p in fill_mask["masks"][0]["predictions"]]
    assert (bad["id"], bad["output"], bad["error"]["code"]) == ("1", None, 3)


# --- tritonclient ---------------------------------------------------------------------------------------------------


def test_tritonclient_example(server: BackgroundServer, triton_python: Path) -> None:
    code = example("tritonclient").replace("localhost:50051", server.address)
    done = subprocess.run([str(triton_python), "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    health, labels_and_scores, tokens = done.stdout.splitlines()
    assert health == "True True"
    labels = json.loads(labels_and_scores.split("] [", 1)[0].replace("'", '"') + "]")
    with BertServeClient(server.address) as client:
        expected = client.sentiment(["A great film.", "A dull film."])
        fill_mask = client.fill_mask("Paris is the [MASK] of France.", top_k=3)
    assert labels == [r.label for r in expected]
    assert json.loads(tokens.replace("'", '"')) == [p.token for p in fill_mask.masks[0].predictions]


# --- curl -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    with BackgroundServer(dataclasses.replace(tiny_config, http=HttpConfig(host="127.0.0.1", port=0))) as running:
        yield running


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not on PATH")
def test_curl_examples(http_server: BackgroundServer) -> None:
    address = http_server.http_address
    assert address is not None
    replies = []
    for args in commands("curl", address, placeholder="localhost:8080"):
        args[1:1] = ["--write-out", "\\n%{http_code}"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        body, status = done.stdout.rsplit("\n", 1)
        replies.append((int(status), json.loads(body)))
    with BertServeClient(http_server.address) as client:
        expected = client.sentiment("A great film.")
        fill_mask = client.predict("fill-mask", {"text": "Paris is the [MASK] of France.", "top_k": 3})
    (s1, sentiment), (s2, predict), (s3, infer), (s4, error) = replies
    assert (s1, s2, s3, s4) == (200, 200, 200, 400)
    assert sentiment["results"][0]["label"] == expected.label
    assert predict["output"]["masks"][0]["predictions"][0]["token"] == fill_mask["masks"][0]["predictions"][0]["token"]
    label = next(output for output in infer["outputs"] if output["name"] == "label")
    assert label["data"] == [expected.label]
    assert error["code"] == 3 and "texts[0]" in json.dumps(error["details"])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not on PATH")
def test_curl_stream_example(http_server: BackgroundServer, tmp_path: Path) -> None:
    address = http_server.http_address
    assert address is not None
    script = example("curl-stream").replace("localhost:8080", address)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    by_id = {line["id"]: line for line in map(json.loads, done.stdout.splitlines())}
    with BertServeClient(http_server.address) as client:
        label = client.sentiment("Great.").label
    assert by_id["1"]["output"]["label"] == label and not by_id["1"].get("error")
    assert by_id["2"]["error"]["code"] == 3 and not by_id["2"].get("output")


# --- Python stream --------------------------------------------------------------------------------------------------


def test_python_stream_example(server: BackgroundServer) -> None:
    code = example("python-stream").replace("localhost:50051", server.address)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    with BertServeClient(server.address) as client:
        labels = [r.label for r in client.sentiment(["A great film.", "A dull film.", "It was fine."])]
    assert [printed[str(n)] for n in range(3)] == labels
    assert printed["bad"] == "error: INVALID_ARGUMENT"
