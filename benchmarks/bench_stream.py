"""Benchmark: many small inputs over one PredictStream against the same inputs as concurrent unary calls.

One `bertserve serve` on the offline default model (its packaged sentiment
head). The same N short sentences (5-12 words, seeded) go to the sentiment
head two ways, alternating in one sitting so both see the same machine:

- stream: one `InferenceService/PredictStream`, every input on it (the Python
  async client's `predict_stream`);
- unary: one `InferenceService/Predict` call per input, `--concurrency` calls
  in flight at once (the async client, one channel).

Prints each round's inputs per second and the median ratio stream / unary (the
issue's target: at least 1.0). Usage:

    python benchmarks/bench_stream.py [--inputs 2000] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import time

from bertserve_client import AsyncBertServeClient, BertServeClient, StreamInput

WORDS = "the movie was a great fun and the plot kept me on the edge of my seat though some scenes dragged".split()


def sentences(count: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for _ in range(count)]


async def over_one_stream(address: str, texts: list[str]) -> float:
    async with AsyncBertServeClient(address, timeout=600) as client:
        started = time.perf_counter()
        inputs = [StreamInput("sentiment", {"text": text}, id=str(i)) for i, text in enumerate(texts)]
        results = [result async for result in client.predict_stream(inputs)]
        seconds = time.perf_counter() - started
    assert len(results) == len(texts) and all(result.ok for result in results)
    return len(texts) / seconds


async def as_unary_calls(address: str, texts: list[str], concurrency: int) -> float:
    async with AsyncBertServeClient(address, timeout=600) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(text: str) -> dict[str, object]:
            async with slots:
                return await client.predict("sentiment", {"text": text})

        started = time.perf_counter()
        outputs = await asyncio.gather(*(one(text) for text in texts))
        seconds = time.perf_counter() - started
    assert len(outputs) == len(texts)
    return len(texts) / seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bertserve", "serve", "--port", str(port), "--log-level", "WARNING"]
    )
    address = f"127.0.0.1:{port}"
    try:
        with BertServeClient(address) as client:
            client.wait_until_ready(timeout=300)
        texts = sentences(args.inputs)
        asyncio.run(over_one_stream(address, texts[:200]))  # warm both paths up
        asyncio.run(as_unary_calls(address, texts[:200], args.concurrency))
        ratios = []
        for round_number in range(1, args.rounds + 1):
            stream = asyncio.run(over_one_stream(address, texts))
            unary = asyncio.run(as_unary_calls(address, texts, args.concurrency))
            ratios.append(stream / unary)
            print(
                f"round {round_number}: stream {stream:.1f} inputs/s, unary (C={args.concurrency}) {unary:.1f} "
                f"inputs/s, ratio {stream / unary:.2f}"
            )
        print(
            f"median ratio stream / unary over {args.rounds} rounds: {statistics.median(ratios):.2f} "
            f"({args.inputs} inputs of 5-12 words)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
