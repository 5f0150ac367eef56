"""Cross-language interop: the Go client example (clients/go/cmd/bertserve-call) against the server.

The Go program is built once per module from Debian's packages only (golang-go, protobuf-compiler,
protoc-gen-go, protoc-gen-go-grpc and the golang-*-dev libraries; see clients/go/README.md):
clients/go/generate.sh makes the stubs from protos/bertserve/v1 and a vendor/ tree of links to
/usr/share/gocode/src, and `go build` runs offline in -mod=vendor mode. Each mode's JSON must match
what the Python client library gets for the same call on the same server.

Skipped, with the reason, where `go`, `protoc`, the protoc plugins or the Go library packages are missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from interop import MULTIBYTE_QA_INPUTS, assert_matches, python_head

REPO = Path(__file__).resolve().parents[2]
GO_DIR = REPO / "clients" / "go"
PROTO_ROOT = REPO / "protos"
GO_PACKAGES = "golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev"
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
MISSING_TOOLS = [tool for tool in TOOLS if shutil.which(tool) is None]
BUILD_OUTPUTS = ["gen", "vendor", "bertserve-call"]  # git-ignored, made by generate.sh and go build
GENERATE_MISSING = 3  # generate.sh's exit status when a Debian package is missing

pytestmark = pytest.mark.skipif(
    bool(MISSING_TOOLS), reason=f"{', '.join(MISSING_TOOLS)} not on PATH (Debian packages: {GO_PACKAGES})"
)

# The inputs of each call, the same on the Go and the Python side.
FILL_MASK_TEXT = "the [MASK] was good ."
FILL_MASK_TOP_K = 3
SENTIMENT_TEXT = "a great movie"
QUESTION, CONTEXT = "who went home ?", "john went home at night ."
SENTENCE_PAIR = ("john went home .", "he slept .")
PREDICT_HEAD, PREDICT_INPUT = "sentiment", {"text": SENTIMENT_TEXT}
# One PredictStream call: a text per input, the second one bad for the head (no mask token).
STREAM_HEAD = "fill-mask"
STREAM_TEXTS = [FILL_MASK_TEXT, "no mask here .", "a [MASK] movie .", "john went [MASK] at night ."]
STREAM_BAD = {"1"}  # the ids (positions) of the texts the head refuses

MODE_ARGS: dict[str, list[str]] = {
    "fill-mask": ["--text", FILL_MASK_TEXT, "--top-k", str(FILL_MASK_TOP_K)],
    "next-sentence": ["--first", SENTENCE_PAIR[0], "--second", SENTENCE_PAIR[1]],
    "sentiment": ["--text", SENTIMENT_TEXT],
    "answer": ["--question", QUESTION, "--context", CONTEXT],
    "predict": ["--head", PREDICT_HEAD, "--input", json.dumps(PREDICT_INPUT)],
    "stream": ["--head", STREAM_HEAD, *(arg for text in STREAM_TEXTS for arg in ("--text", text))],
    "list-heads": [],
    "error": [],
}
COMPARED_MODES = ["fill-mask", "next-sentence", "sentiment", "answer", "predict", "list-heads"]


def go_env() -> dict[str, str]:
    """Offline: no proxy, no checksum database, no toolchain download, the vendor/ tree only."""
    return {
        **os.environ,
        "GO111MODULE": "on",
        "GOFLAGS": "-mod=vendor",
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
    }


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bertserve-call, built from a copy of clients/go (so the build writes nothing into the checkout)."""
    work = tmp_path_factory.mktemp("go-client")
    source = work / "src"
    # Only the sources: not the checkout's own gen/, vendor/ or built program, if any.
    shutil.copytree(GO_DIR, source, ignore=lambda folder, _: BUILD_OUTPUTS if Path(folder) == GO_DIR else [])
    generated = subprocess.run(
        ["bash", str(source / "generate.sh")],
        env={**go_env(), "BERTSERVE_PROTOS": str(PROTO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if generated.returncode == GENERATE_MISSING:
        pytest.skip(generated.stderr.strip())
    assert generated.returncode == 0, f"generate.sh exited {generated.returncode}:\n{generated.stderr}"
    binary = work / "bertserve-call"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "./cmd/bertserve-call"],
        cwd=source,
        env=go_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, f"go build exited {built.returncode}:\n{built.stderr}{built.stdout}"
    return binary


def run_go(binary: Path, address: str, mode: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(binary), "--target", address, "--mode", mode, *MODE_ARGS.get(mode, []), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"bertserve-call --mode {mode} exited {done.returncode}:\n{done.stderr}{done.stdout}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"--mode {mode} printed {len(lines)} lines, not one JSON object:\n{done.stdout}"
    result: dict[str, Any] = json.loads(lines[0])
    return result


@pytest.fixture(scope="module")
def go_results(go_client: Path, server: BackgroundServer) -> dict[str, dict[str, Any]]:
    return {mode: run_go(go_client, server.address, mode) for mode in MODE_ARGS}


@pytest.fixture(scope="module")
def python_results(server: BackgroundServer) -> dict[str, Any]:
    """The Python client's answers to the calls bertserve-call makes, shaped like the proto responses."""
    with BertServeClient(server.address, timeout=10) as client:
        client.wait_until_ready(timeout=30)

        def results(items: list[Any]) -> dict[str, Any]:
            return {"results": [dataclasses.asdict(item) for item in items]}

        with pytest.raises(InvalidArgumentError) as bad:
            client.fill_mask(["no mask"])
        return {
            "fill-mask": results(client.fill_mask([FILL_MASK_TEXT], top_k=FILL_MASK_TOP_K)),
            "next-sentence": results(client.next_sentence([SENTENCE_PAIR])),
            "sentiment": results(client.sentiment([SENTIMENT_TEXT])),
            "answer": results(client.answer([(QUESTION, CONTEXT)])),
            "predict": {"output": client.predict(PREDICT_HEAD, PREDICT_INPUT)},
            "list-heads": {"heads": [python_head(head) for head in client.list_heads()]},
            "error": bad.value,
        }


@pytest.mark.parametrize("mode", COMPARED_MODES)
def test_go_results_match_python_client(
    mode: str, go_results: dict[str, dict[str, Any]], python_results: dict[str, Any]
) -> None:
    assert_matches(go_results[mode], python_results[mode], mode)


@pytest.mark.parametrize("mode", COMPARED_MODES)
def test_go_results_are_not_empty(mode: str, go_results: dict[str, dict[str, Any]]) -> None:
    """Guards against both clients agreeing on nothing."""
    result = go_results[mode]
    if mode == "fill-mask":
        predictions = result["results"][0]["masks"][0]["predictions"]
        assert len(predictions) == FILL_MASK_TOP_K
        assert all(isinstance(p["token_id"], int) and p["token"] for p in predictions)
        assert all(p["sequence"] and "[MASK]" not in p["sequence"] for p in predictions)
    elif mode == "next-sentence":
        verdict = result["results"][0]
        assert verdict["is_next"] == (verdict["is_next_probability"] >= 0.5)
    elif mode == "sentiment":
        sentiment = result["results"][0]
        assert sentiment["label"] in {s["label"] for s in sentiment["scores"]}
        assert math.isclose(sum(s["score"] for s in sentiment["scores"]), 1.0, abs_tol=1e-4)
    elif mode == "answer":
        best = result["results"][0]["answers"][0]
        assert CONTEXT[best["start"] : best["end"]] == best["text"] != ""
    elif mode == "predict":
        assert_matches(result["output"], go_results["sentiment"]["results"][0], "predict vs sentiment")
    elif mode == "list-heads":
        heads = {h["name"]: h for h in result["heads"]}
        assert {"fill-mask", "next-sentence", "sentiment", "question-answering"} <= set(heads)
        assert {h["state"] for h in heads.values()} == {"HEAD_STATE_LOADED"}
        # A JSON Schema integer keyword arrives as a JSON integer, not as the Struct's double.
        assert heads["sentiment"]["input_schema"]["properties"]["text"]["minLength"] == 1


def test_go_sees_invalid_argument_with_rich_details(
    go_results: dict[str, dict[str, Any]], python_results: dict[str, Any]
) -> None:
    bad = go_results["error"]
    python_error: InvalidArgumentError = python_results["error"]
    assert bad["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] == 3
    assert bad["code_name"] == "INVALID_ARGUMENT"
    assert "[MASK]" in bad["message"] and bad["message"] == python_error.message
    by_type = {detail["type_url"].rsplit("/", 1)[-1]: detail for detail in bad["details"]}
    assert "google.rpc.ErrorInfo" in by_type, f"no ErrorInfo among the details: {bad['details']}"
    info = by_type["google.rpc.ErrorInfo"]
    assert info["reason"] == python_error.reason != ""
    assert info["domain"] == python_error.domain == "bertserve"
    assert info["metadata"] == python_error.metadata
    violations = by_type["google.rpc.BadRequest"]["field_violations"]
    assert [(v["field"], v["description"]) for v in violations] == [
        (v.field, v.description) for v in python_error.field_violations
    ]
    assert [v["field"] for v in violations] == ["texts[0]"]


def test_go_stream_matches_python_predict_per_id(
    go_results: dict[str, dict[str, Any]], server: BackgroundServer
) -> None:
    """--mode stream: one result per --text, sorted by id, each what Predict gives; the bad text fails alone."""
    results = go_results["stream"]["results"]  # run_go checked the exit status: the stream as a whole succeeded
    assert [r["id"] for r in results] == [str(i) for i in range(len(STREAM_TEXTS))]
    assert {r["head"] for r in results} == {STREAM_HEAD}
    with BertServeClient(server.address, timeout=10) as client:
        for result, text in zip(results, STREAM_TEXTS):
            if result["id"] in STREAM_BAD:
                with pytest.raises(InvalidArgumentError) as bad:
                    client.predict(STREAM_HEAD, {"text": text})
                assert result["output"] is None, result
                error = result["error"]
                assert error["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] == bad.value.code.value[0] == 3
                assert error["reason"] == bad.value.reason != ""
                assert "[MASK]" in error["message"], error
                continue
            assert result["error"] is None, result
            expected = client.predict(STREAM_HEAD, {"text": text})
            assert_matches(result["output"], expected, f"stream[{result['id']}].output")
            predictions = result["output"]["masks"][0]["predictions"]
            assert predictions and all(p["token"] for p in predictions)


def test_go_stream_sends_input_once_to_sentiment_by_default(go_client: Path, server: BackgroundServer) -> None:
    """--input instead of --text: that input, once, as id "0"; --head defaults to sentiment in stream mode."""
    done = subprocess.run(
        [str(go_client), "--target", server.address, "--mode", "stream", "--input", json.dumps(PREDICT_INPUT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["id"] == "0" and result["head"] == "sentiment" and result["error"] is None
    with BertServeClient(server.address, timeout=10) as client:
        assert_matches(result["output"], client.predict("sentiment", PREDICT_INPUT), "stream[0].output")


def test_go_client_authenticates_with_a_bearer_token(go_client: Path, tiny_config: ServerConfig) -> None:
    """--token sends `authorization: Bearer ...`: refused without it, answered with it."""
    config = dataclasses.replace(tiny_config, security=SecurityConfig(tokens=("go-client-token-1",)))
    with BackgroundServer(config) as running:
        refused = subprocess.run(
            [str(go_client), "--target", running.address, "--mode", "sentiment", *MODE_ARGS["sentiment"]],
            env={key: value for key, value in os.environ.items() if key != "BERTSERVE_TOKEN"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        answered = run_go(go_client, running.address, "sentiment", "--token", "go-client-token-1")
    assert refused.returncode == 1 and "Unauthenticated" in refused.stderr, refused.stderr
    assert answered["results"][0]["label"]


def test_go_slices_answers_by_utf8_byte_offsets(go_client: Path, server: BackgroundServer) -> None:
    """In Go, context[start_byte:end_byte] (a string is UTF-8 bytes) is the answer, as is
    []rune(context)[start:end]; start/end used as string indices are not, once a multi-byte
    character comes first. The Python client sees the same offsets."""
    misplaced = 0
    with BertServeClient(server.address, timeout=10) as client:
        for question, context in MULTIBYTE_QA_INPUTS:
            args = ["--question", question, "--context", context, "--top-k", "10"]
            result = run_go(go_client, server.address, "answer-spans", *args)
            assert result["context"] == context
            answers = result["answers"]
            assert answers and all(a["by_bytes"] == a["by_runes"] == a["text"] != "" for a in answers), answers
            misplaced += sum(a["code_points_as_bytes"] != a["text"] for a in answers)
            expected = [dataclasses.asdict(a) for a in client.answer(question, context, top_k=10).answers]
            keys = ("text", "score", "start", "end", "start_byte", "end_byte", "no_answer")
            assert_matches([{k: a[k] for k in keys} for a in answers], expected, question)
    assert misplaced > 0, "no answer where code-point offsets differ from byte offsets: the test proves nothing"
