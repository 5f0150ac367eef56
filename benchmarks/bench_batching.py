"""Benchmark: cross-head dynamic batching on the real default encoder (CPU or GPU).

Runs the same workloads side by side in one process and prints numbers:

1. low load: sequential requests, server latency vs. a bare encoder forward
   on the same input (the server's own overhead);
2. a concurrent mixed-length burst with (a) dynamic batching grouped by
   length, (b) dynamic batching in arrival order (FIFO, no length grouping),
   (c) no batching (max_batch_size=1): throughput, latency, forwards, padding.

Heads: a randomly initialised sentiment head file for the default encoder
(speed does not depend on head quality). Usage:

    python benchmarks/bench_batching.py [--requests 300] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bertserve.batcher as batcher_module
import torch
from bertserve import HeadFileMetadata, SharedEncoder, save_head_file
from bertserve.background import BackgroundServer
from bertserve.config import BatchingConfig, ServerConfig
from bertserve.default_model import default_model_path
from bertserve_client import AsyncBertServeClient, BertServeClient

WORDS = (
    "the movie was a great fun and the plot kept me on the edge of my seat though some scenes dragged "
    "on far too long while the acting felt honest and warm yet the ending left too many questions open"
).split()


def make_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([4, 8, 16, 32, 64, 120]))) for _ in range(count)]


def make_sentiment_head(encoder: SharedEncoder, folder: Path) -> Path:
    path = folder / "sentiment.safetensors"
    tensors = {"classifier.weight": torch.randn(2, encoder.hidden_size) * 0.02, "classifier.bias": torch.zeros(2)}
    metadata = HeadFileMetadata(
        task="sentiment",
        architecture="pooled-linear",
        encoder_name=encoder.model_name,
        encoder_fingerprint=encoder.fingerprint,
        hidden_size=encoder.hidden_size,
        labels=("negative", "positive"),
    )
    save_head_file(path, tensors, metadata)
    return path


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def low_load(config: ServerConfig, encoder: SharedEncoder, text: str, repeats: int) -> None:
    ids = encoder.tokenizer(text, return_tensors="pt")
    for _ in range(3):
        encoder.forward(ids["input_ids"], ids["token_type_ids"], ids["attention_mask"])
    bare = []
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.forward(ids["input_ids"], ids["token_type_ids"], ids["attention_mask"])
        bare.append(time.perf_counter() - started)
    with BackgroundServer(config) as server, BertServeClient(server.address) as client:
        for _ in range(3):
            client.sentiment(text)
        served = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.sentiment(text)
            served.append(time.perf_counter() - started)
    b, s = statistics.median(bare) * 1000, statistics.median(served) * 1000
    print(f"low load ({len(ids['input_ids'][0])} tokens, {repeats} sequential requests):")
    print(f"  bare encoder forward  p50 {b:7.2f} ms")
    print(f"  server round trip     p50 {s:7.2f} ms   overhead {s - b:+.2f} ms")


async def burst(address: str, texts: list[str], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(texts)

    async with AsyncBertServeClient(address, timeout=120) as client:

        async def worker() -> None:
            while queue:
                text = queue.pop()
                started = time.perf_counter()
                await client.sentiment(text)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def run_burst(label: str, config: ServerConfig, texts: list[str], concurrency: int) -> float:
    with BackgroundServer(config) as server:
        asyncio.run(burst(server.address, texts[:concurrency], concurrency))  # warm up
        stats = server.runtime.batcher.stats
        forwards0, rows0, real0, padded0 = stats.forwards, stats.rows, stats.real_tokens, stats.padded_tokens
        elapsed, latencies = asyncio.run(burst(server.address, texts, concurrency))
        forwards, rows = stats.forwards - forwards0, stats.rows - rows0
        efficiency = (stats.real_tokens - real0) / max(1, stats.padded_tokens - padded0)
    throughput = len(texts) / elapsed
    print(
        f"  {label:<32} {throughput:7.1f} req/s   p50 {percentile(latencies, 0.5) * 1000:7.1f} ms   "
        f"p95 {percentile(latencies, 0.95) * 1000:7.1f} ms   {forwards:4d} forwards   "
        f"{rows / max(1, forwards):5.1f} rows/forward   {efficiency:4.0%} real tokens"
    )
    return throughput


def fifo_select(rows, max_batch_size, max_batch_tokens, max_added_padding=None):  # type: ignore[no-untyped-def]
    """Arrival order, no length grouping or padding limit: the baseline."""
    ordered = sorted(rows, key=lambda row: row.order)
    batch = [ordered[0]]
    for row in ordered[1:]:
        width = max(r.length for r in [*batch, row])
        if len(batch) >= max_batch_size or (len(batch) + 1) * width > max_batch_tokens:
            break
        batch.append(row)
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    model = str(default_model_path())
    encoder = SharedEncoder.load(model, device=args.device)
    print(f"encoder {model} on {encoder.device} ({encoder.dtype_name}), torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        head = make_sentiment_head(encoder, Path(folder))
        config = ServerConfig(model=model, head_files={"sentiment": head}, device=args.device, port=0)
        low_load(config, encoder, make_texts(1, seed=1)[0], repeats=30)

        texts = make_texts(args.requests)
        print(f"burst: {args.requests} sentiment requests of 4-120 words, concurrency {args.concurrency}:")
        grouped = run_burst("batched, length-grouped, cost model", config, texts, args.concurrency)
        original = batcher_module.select_batch
        batcher_module.select_batch = fifo_select
        try:
            fifo = run_burst("batched, arrival order (FIFO)", config, texts, args.concurrency)
        finally:
            batcher_module.select_batch = original
        unbatched_config = ServerConfig(
            model=model,
            head_files={"sentiment": head},
            device=args.device,
            port=0,
            batching=BatchingConfig(max_batch_size=1),
        )
        single = run_burst("no batching (max_batch_size=1)", unbatched_config, texts, args.concurrency)
    print(f"ratios: grouped / arrival order = {grouped / fifo:.2f}x, grouped / no batching = {grouped / single:.2f}x")


if __name__ == "__main__":
    main()
