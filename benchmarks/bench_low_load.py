"""Benchmark: latency at low load, bertserve against the naive server, calls alternating.

Two servers answer the same `bertserve.v1.SentimentService/ClassifySentiment`
calls with the same weights (the real default encoder and one random
pooled-linear sentiment head file):

- naive: a plain grpcio server with one worker thread that tokenizes, runs the
  `transformers` BertModel and the classifier for each call (what a user
  writes first; the peer kit's naive server, on bertserve's own proto);
- bertserve: `bertserve serve` in its own process, every default setting.

One caller sends one sentence at a time, alternating between the two servers,
so both see the same machine state (this machine is noisy; alternating makes
the difference robust where separate runs are not). --gap-ms pauses after
every call (not timed), to measure servers that sit idle between requests:
waking idle threads costs more than keeping them busy. Sentences are 5-100 words
(the peer kit's pool when it is at ../shared/peers, else a seeded word list).
Prints p50 / p90 / mean per server and the p50 difference. Usage:

    python benchmarks/bench_low_load.py [--requests 400] [--gap-ms 20] [--server-arg=--max-delay-ms=0 ...]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import torch
from bench_throughput import write_head
from bertserve.model.default_model import default_model_path
from bertserve.model.encoder import SharedEncoder
from bertserve_client.v1 import sentiment_pb2, sentiment_pb2_grpc
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"
WORDS = "the movie was a great fun and the plot kept me on the edge of my seat though some scenes dragged".split()


def sentences(count: int = 512) -> list[str]:
    """The peer kit's seeded pool of 5-100-word sentences, or a seeded stand-in."""
    if (PEERS / "sentences.py").exists():
        sys.path.insert(0, str(PEERS))
        from sentences import make_sentences  # type: ignore[import-not-found]

        return list(make_sentences())[:count]
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 100))) for _ in range(count)]


class NaiveSentiment(sentiment_pb2_grpc.SentimentServiceServicer):
    """Tokenize, `BertModel`, classifier: one call at a time."""

    def __init__(self, head_file: Path) -> None:
        path = str(default_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = BertModel.from_pretrained(path).eval()
        weights = load_file(str(head_file))
        self.weight, self.bias = weights["classifier.weight"], weights["classifier.bias"]

    def ClassifySentiment(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        batch = self.tokenizer(list(request.texts), truncation=True, padding=True, return_tensors="pt")
        with torch.inference_mode():
            pooled = self.model(**batch).pooler_output
            probabilities = (pooled @ self.weight.T + self.bias).softmax(-1)
        labels = ("negative", "positive")
        results = []
        for row in probabilities:
            best = int(row.argmax())
            results.append(sentiment_pb2.SentimentResult(label=labels[best], score=float(row[best])))
        return sentiment_pb2.ClassifySentimentResponse(results=results)


def start_naive(head_file: Path) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(NaiveSentiment(head_file), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def start_bertserve(head_file: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = 50000 + os.getpid() % 10000
    command = [sys.executable, "-m", "bertserve", "serve", "--port", str(port), "--no-metrics"]
    command += ["--head-file", f"sentiment={head_file}", *extra]
    env = dict(os.environ, **dict(item.split("=", 1) for item in os.environ.get("BENCH_SERVER_ENV", "").split()))
    log = open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "wb")  # noqa: SIM115 (lives as long as the server)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, f"127.0.0.1:{port}"


def wait_ready(stub: Any, process: subprocess.Popen[bytes] | None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stub.ClassifySentiment(sentiment_pb2.ClassifySentimentRequest(texts=["ready?"]), timeout=5)
            return
        except grpc.RpcError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"bertserve exited with {process.returncode}; set BENCH_SERVER_LOG=FILE") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `bertserve serve` argument")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="idle pause after each call (not timed)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # what a naive server gets by default
    pool = sentences()
    with tempfile.TemporaryDirectory() as folder:
        encoder = SharedEncoder.load(str(default_model_path()), device="cpu")
        head_file = write_head(encoder, Path(folder) / "sentiment.safetensors")
        del encoder
        naive_server, naive_address = start_naive(head_file)
        process, address = start_bertserve(head_file, args.server_arg)
        try:
            with grpc.insecure_channel(naive_address) as naive_channel, grpc.insecure_channel(address) as channel:
                stubs = {
                    "naive": sentiment_pb2_grpc.SentimentServiceStub(naive_channel),
                    "bertserve": sentiment_pb2_grpc.SentimentServiceStub(channel),
                }
                wait_ready(stubs["bertserve"], process)
                times = run(stubs, pool, args.requests, args.gap_ms / 1000)
        finally:
            process.terminate()
            process.wait(30)
            naive_server.stop(None)
    print(f"{args.requests} sequential sentiment calls per server, alternating (ms):")
    print(f"{'server':<10} {'p50':>7} {'p90':>7} {'mean':>7}")
    for name, values in times.items():
        print(
            f"{name:<10} {percentile(values, 0.5):7.2f} {percentile(values, 0.9):7.2f} {statistics.mean(values):7.2f}"
        )
    delta = percentile(times["bertserve"], 0.5) - percentile(times["naive"], 0.5)
    print(f"bertserve - naive, p50: {delta:+.2f} ms")


def run(stubs: dict[str, Any], pool: list[str], requests: int, gap: float) -> dict[str, list[float]]:
    """Warm both up, then alternate one call to each per sentence; milliseconds per call."""
    for stub in stubs.values():
        for text in pool[:32]:
            stub.ClassifySentiment(sentiment_pb2.ClassifySentimentRequest(texts=[text]))
    times: dict[str, list[float]] = {name: [] for name in stubs}
    for i in range(requests):
        request = sentiment_pb2.ClassifySentimentRequest(texts=[pool[i % len(pool)]])
        order = list(stubs.items()) if i % 2 == 0 else list(reversed(stubs.items()))
        for name, stub in order:
            started = time.perf_counter()
            stub.ClassifySentiment(request)
            times[name].append(1000 * (time.perf_counter() - started))
            time.sleep(gap)
    return times


if __name__ == "__main__":
    main()
