"""Shared parts of the reliability scripts: a server process, its resident memory, and a mixed load.

`ServerUnderTest` starts ``bertserve serve`` on a free port and reads its
resident memory from ``/proc``. `Mix` makes one request of a random kind
per call: short texts, 512-token texts, batches of mixed lengths, question
answering, sentence pairs, several heads at once, streams, and malformed
requests (fuzzed) that must be refused with a client-error status. Each call
returns the gRPC status code name it ended with.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from bertserve_client import BertServeClient, BertServeError, StreamInput
from bertserve_client.v1 import inference_pb2, inference_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc
from google.protobuf import struct_pb2

_LISTENING = re.compile(r"listening on \S+:(\d+) \(loading")
WORDS = (
    "the film was a quiet study of grief and hope told with warmth and wit though its middle drags "
    "actors carry scenes that the script leaves thin music swells camera lingers on faces rain city night "
    "morning river train letter mother brother friend war peace village market teacher doctor storm summer "
    "garden memory promise journey ending beginning laughter silence anger kindness courage fear love loss"
).split()
# Status codes a malformed request may get; anything else from one is a failure.
CLIENT_ERRORS = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE", "RESOURCE_EXHAUSTED"}


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class ServerUnderTest:
    """``bertserve serve`` on a free loopback port; `rss()` is its resident memory in MiB."""

    def __init__(self, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "bertserve", "serve", "--host", "127.0.0.1", "--port", "0", "--no-metrics"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BERTSERVE_")}
        self.process = subprocess.Popen(
            [*command, *args], stderr=subprocess.PIPE, text=True, env={**environment, **(env or {})}
        )
        self.lines: list[str] = []
        port = self._read_until_listening()
        threading.Thread(target=self._drain, daemon=True).start()
        self.address = f"127.0.0.1:{port}"
        with BertServeClient(self.address) as client:
            client.wait_until_ready(timeout=300)

    def _read_until_listening(self) -> int:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())
            if match := _LISTENING.search(line):
                return int(match.group(1))
        raise RuntimeError("the server exited before listening:\n" + "\n".join(self.lines[-20:]))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())

    def rss(self) -> float:
        """Resident memory of the server process, MiB (VmRSS)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return int(self.process.wait())


@dataclass
class Mix:
    """One request of a random kind per `call`; `weights` says how often each kind comes."""

    client: BertServeClient
    channel: grpc.Channel
    rng: random.Random
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "short": 4,
            "long": 1,
            "batch": 2,
            "qa": 1,
            "pair": 1,
            "analyze": 1,
            "stream": 1,
            "fuzzed": 2,
        }
    )

    def call(self) -> tuple[str, str]:
        """Make one request; returns (kind, status code name)."""
        kind = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
        run: Callable[[], object] = getattr(self, f"_{kind}")
        try:
            run()
        except BertServeError as error:
            return kind, error.code.name
        except grpc.RpcError as error:
            return kind, error.code().name
        return kind, "OK"

    def _short(self) -> None:
        self.client.sentiment(text(self.rng, self.rng.randint(2, 15)))

    def _long(self) -> None:
        words = text(self.rng, 700)
        if self.rng.random() < 0.5:
            self.client.sentiment(words, truncate=True)
        else:
            self.client.fill_mask("[MASK] " + words, truncate=True)

    def _batch(self) -> None:
        texts = [text(self.rng, self.rng.choice((3, 20, 60, 200))) for _ in range(self.rng.randint(2, 32))]
        self.client.sentiment(texts, truncate=True)

    def _qa(self) -> None:
        self.client.answer("what was the film about?", text(self.rng, self.rng.randint(20, 300)))

    def _pair(self) -> None:
        self.client.next_sentence(text(self.rng, 12), text(self.rng, self.rng.randint(3, 40)))

    def _analyze(self) -> None:
        self.client.analyze(text(self.rng, self.rng.randint(3, 80)), heads=["sentiment", "fill-mask"])

    def _stream(self) -> None:
        inputs = [StreamInput("sentiment", {"text": text(self.rng, self.rng.randint(2, 50))}) for _ in range(12)]
        for result in self.client.predict_stream(inputs):
            if result.error is not None:
                raise result.error

    def _fuzzed(self) -> None:
        """A malformed request on one of the doors, sent raw so the client checks nothing first."""
        choice = self.rng.randrange(5)
        sentiment = sentiment_pb2_grpc.SentimentServiceStub(self.channel).ClassifySentiment
        predict = inference_pb2_grpc.InferenceServiceStub(self.channel).Predict
        if choice == 0:
            sentiment(sentiment_pb2.ClassifySentimentRequest(texts=["", "fine"]), timeout=30)
        elif choice == 1:
            sentiment(sentiment_pb2.ClassifySentimentRequest(texts=[text(self.rng, 900)]), timeout=30)
        elif choice == 2:
            sentiment(sentiment_pb2.ClassifySentimentRequest(texts=["x"], head="no-such-head"), timeout=30)
        elif choice == 3:
            garbage = struct_pb2.Struct()
            garbage.update({"text": self.rng.random(), "top_k": "many", "zzz": [1, {"a": None}]})
            predict(inference_pb2.PredictRequest(head="fill-mask", input=garbage), timeout=30)
        else:
            junk = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 200)))
            raw = self.channel.unary_unary("/bertserve.v1.InferenceService/Predict")
            raw(junk, timeout=30)


def run_load(address: str, threads: int, seconds: float, seed: int, on_tick: Callable[[], None]) -> Counter[str]:
    """`threads` callers making `Mix` requests for `seconds`; `on_tick` runs once a second. Counts kind/code."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def caller(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with BertServeClient(address, timeout=60, retry=None) as client, grpc.insecure_channel(address) as channel:
            mix = Mix(client, channel, rng)
            while time.monotonic() < stop:
                kind, code = mix.call()
                with lock:
                    counts[f"{kind}/{code}"] += 1

    workers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        time.sleep(1.0)
        on_tick()
    return counts


def unexpected(counts: Counter[str]) -> dict[str, int]:
    """Outcomes that should not happen: a valid request that failed, or a malformed one not refused as such."""
    bad = {}
    for key, count in counts.items():
        kind, code = key.split("/")
        expected = CLIENT_ERRORS if kind == "fuzzed" else {"OK"}
        if code not in expected:
            bad[key] = count
    return bad
