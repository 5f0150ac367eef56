"""Exercise every part of bertserve-client against a running server, with whatever grpcio and protobuf are installed.

CI runs it under the oldest grpcio, protobuf and googleapis-common-protos that
clients/python/pyproject.toml allows (tests/client/test_oldest_dependencies.py);
run it yourself to try the client with the versions your application pins:

    python -m venv /tmp/pinned && /tmp/pinned/bin/pip install grpcio==1.XX protobuf==X.Y googleapis-common-protos==1.Z
    /tmp/pinned/bin/pip install --no-deps ./clients/python
    /tmp/pinned/bin/python tests/client/oldest/exercise_client.py 127.0.0.1:50051

The server needs the built-in heads (fill-mask, next-sentence, sentiment,
question-answering). `--tls-target` with `--ca`, `--cert`, `--key` and
`--token` adds calls over mutual TLS with a bearer token; `--flaky-target`
names a ModelService that fails GetServerInfo with UNAVAILABLE (and a
google.rpc.RetryInfo of 50 ms) except on every third call, to see gRPC core
retry. `--expect grpcio==1.49.1` (repeatable) fails the run unless that is the
version imported. It needs only the standard library and the client; it prints
one line per check.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import sys
from typing import Any

import grpc
from bertserve_client import (
    AsyncBertServeClient,
    BertServeClient,
    HeadOutputError,
    HeadState,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    StreamInput,
    UnavailableError,
)
from google import protobuf
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]

MASKED = "the [MASK] was good ."
CONTEXT = "john went home at night . mary went to school in the day ."
STREAM = [StreamInput("fill-mask", {"text": MASKED}, id="a"), StreamInput("fill-mask", {"text": "no mask"}, id="b")]


def check(what: str, ok: bool, detail: Any = "") -> None:
    if not ok:
        raise SystemExit(f"FAILED: {what} {detail}")
    print(f"ok: {what}")


def versions(expected: list[str]) -> None:
    import bertserve_client

    print(f"grpcio {grpc.__version__}, protobuf {protobuf.__version__}, client from {bertserve_client.__file__}")
    # What is imported, not only what pip's metadata says is installed.
    imported = {"grpcio": grpc.__version__, "protobuf": protobuf.__version__}
    for requirement in expected:
        name, _, version = requirement.partition("==")
        found = imported.get(name) or importlib.metadata.version(name)
        check(f"{name} is {version}", found == version, f"but {found}")
    check(
        "google.rpc.Status parses",
        status_pb2.Status.FromString(status_pb2.Status(code=3).SerializeToString()).code == 3,
    )


def sync_calls(target: str) -> None:
    # The default RetryPolicy puts a retry policy in the channel's service config.
    with BertServeClient(target, timeout=30, retry=RetryPolicy(max_attempts=3)) as client:
        client.wait_until_ready(timeout=30)
        info = client.server_info()
        check("sync ServerInfo", bool(info.model) and info.mask_token == "[MASK]", info)
        check("sync ListHeads", all(head.state is HeadState.LOADED for head in client.list_heads()))
        head = client.get_head("sentiment")
        check("sync GetHead (JSON Schema as a Struct)", head.input_schema["required"] == ["text"], head)
        check("sync FillMask", len(client.fill_mask(MASKED, top_k=2).masks[0].predictions) == 2)
        check("sync NextSentence", 0.0 <= client.next_sentence("a b .", "c d .").is_next_probability <= 1.0)
        check("sync Sentiment (a list)", len(client.sentiment(["good", "bad"])) == 2)
        answer = client.answer("who went home ?", CONTEXT, top_k=2)
        check("sync Answer", all(CONTEXT[a.start : a.end] == a.text for a in answer.answers), answer)
        predicted = client.predict("sentiment", {"text": "a great movie"})
        check("sync Predict", predicted["label"] == client.sentiment("a great movie").label, predicted)
        outputs = client.analyze("no mask", ["fill-mask", "sentiment"])
        failed = outputs["fill-mask"]
        check("sync Analyze, one head failing", isinstance(failed, HeadOutputError) and failed.field == "inputs[0]")
        results = {result.id: result for result in client.predict_stream(STREAM)}
        check("sync PredictStream", results["a"].ok and results["b"].error is not None, results)
        try:
            client.fill_mask(["the [MASK] .", "no mask"])
        except InvalidArgumentError as err:  # google.rpc.Status from the trailing metadata
            fields = [violation.field for violation in err.field_violations]
            check(
                "sync error details (ErrorInfo, BadRequest)",
                err.reason == "INVALID_ARGUMENT" and fields == ["texts[1]"],
            )
        else:
            check("sync error raised", False)
        try:
            client.sentiment("good", head="nope")
        except NotFoundError as err:
            check("sync NOT_FOUND", err.code is grpc.StatusCode.NOT_FOUND)
        else:
            check("sync NOT_FOUND raised", False)


def timed_calls(target: str) -> None:
    """on_timings reads trailing metadata: with_call (blocking) and trailing_metadata() (asyncio)."""
    seen: list[Any] = []
    with BertServeClient(target, timeout=30, on_timings=seen.append) as client:
        client.sentiment("good")

    async def scenario() -> None:
        async with AsyncBertServeClient(target, timeout=30, on_timings=seen.append) as aclient:
            await aclient.sentiment("good")

    asyncio.run(scenario())
    check("server timings (sync and asyncio)", len(seen) == 2 and all(t.total_ms > 0 for t in seen), seen)


def retried_calls(target: str) -> None:
    # gRPC core retries, from the service config the RetryPolicy becomes: two UNAVAILABLE, then an answer.
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with BertServeClient(target, timeout=10, retry=policy) as client:
        check("retried UNAVAILABLE until an answer", bool(client.server_info().model))
    with BertServeClient(target, timeout=10, retry=None) as client:
        try:
            client.server_info()
        except UnavailableError as err:
            check("google.rpc.RetryInfo read without retries", err.retry_delay == 0.05, err.retry_delay)
        else:
            check("UNAVAILABLE raised without retries", False)


def balanced_calls(target: str) -> None:
    # Several targets: round_robin with grpc.health.v1 watching in the service config.
    _, port = target.rsplit(":", 1)
    with BertServeClient([target, f"localhost:{port}"], timeout=30) as client:
        client.wait_until_ready(timeout=30)
        check("round-robin with health checks", all(client.sentiment(["good"] * 2) for _ in range(3)))


async def async_calls(target: str) -> None:
    async with AsyncBertServeClient(target, timeout=30) as client:
        await client.wait_until_ready(timeout=30)
        fill, nsp, sentiment, answer, info, heads, head, predicted, analyzed = await asyncio.gather(
            client.fill_mask(MASKED),
            client.next_sentence("a b .", "c d ."),
            client.sentiment("good"),
            client.answer("where did mary go ?", CONTEXT),
            client.server_info(),
            client.list_heads(),
            client.get_head("fill-mask"),
            client.predict("sentiment", {"text": "fine"}),
            client.analyze(["a [MASK] day"], ["sentiment", ("fill-mask", {"top_k": 1})]),
        )
        check(
            "async FillMask, NextSentence, Sentiment, Answer", fill.masks and nsp and sentiment.label and answer.answers
        )
        check("async ServerInfo, ListHeads, GetHead", info.model and heads and head.name == "fill-mask")
        check(
            "async Predict, Analyze",
            predicted["label"] and len(analyzed[0]["fill-mask"]["masks"][0]["predictions"]) == 1,
        )
        results = {result.id: result async for result in client.predict_stream(STREAM)}
        check("async PredictStream", results["a"].ok and results["b"].error is not None, results)
        try:
            await client.predict("sentiment", {"text": 5})
        except InvalidArgumentError as err:
            check("async error details", [violation.field for violation in err.field_violations] == ["input.text"])
        else:
            check("async error raised", False)


def tls_calls(target: str, ca: str, cert: str, key: str, token: str) -> None:
    tls = {"root_certificates": ca, "client_certificate": cert, "client_key": key, "token": token}
    with BertServeClient(target, timeout=30, **tls) as client:  # type: ignore[arg-type]
        check("mutual TLS and a token (sync)", bool(client.sentiment("a fine film").label))

    async def scenario() -> None:
        async with AsyncBertServeClient(target, timeout=30, **tls) as client:  # type: ignore[arg-type]
            check("mutual TLS and a token (async)", bool((await client.server_info()).model))

    asyncio.run(scenario())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("target", help="host:port of a server with the built-in heads")
    parser.add_argument("--tls-target", help="host:port of a server with mutual TLS and tokens")
    parser.add_argument("--ca", help="PEM file of the CA that signed the TLS server's certificate")
    parser.add_argument("--cert", help="PEM file of the client certificate")
    parser.add_argument("--key", help="PEM file of the client key")
    parser.add_argument("--token", help="bearer token the TLS server accepts")
    parser.add_argument("--flaky-target", help="host:port of a ModelService failing two calls in three")
    parser.add_argument("--expect", action="append", default=[], metavar="NAME==VERSION", help="fail unless imported")
    args = parser.parse_args(argv)
    versions(args.expect)
    sync_calls(args.target)
    timed_calls(args.target)
    if args.flaky_target:
        retried_calls(args.flaky_target)
    balanced_calls(args.target)
    asyncio.run(async_calls(args.target))
    if args.tls_target:
        tls_calls(args.tls_target, args.ca, args.cert, args.key, args.token)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
