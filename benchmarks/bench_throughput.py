"""Benchmark: served throughput as a fraction of the encoder's ceilings, on CPU or CUDA.

In one run, on the same mixed-length sentences (5-100 words, or 200-500
tokens with --long):

1. padded ceiling: the `transformers` BertModel forward on batches of
   --batch rows right-padded to their longest (what a padding server could reach);
2. unpadded ceiling: `SharedEncoder.forward_packed` on the same batches (the
   encoder alone, padding-free, no serving cost);
3. served: a bertserve server in this process with a pooled-linear sentiment
   head, driven closed-loop by --concurrency async callers, one sentence per
   request.

Prints real tokens/s for each and the served fraction of both ceilings.
`--random-base` serves a randomly initialised bert-base-sized encoder (12
layers, hidden 768) with the default tokenizer instead of the small default
model, so that GPU runs measure a model big enough to keep the device busy.
Usage:

    python benchmarks/bench_throughput.py [--device cpu|cuda] [--dtype float32|bfloat16|float16]
        [--requests 1000] [--concurrency 32] [--batch 32] [--long] [--random-base]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from bertserve.background import BackgroundServer
from bertserve.config import BatchingConfig, MetricsConfig, ServerConfig
from bertserve.model.default_model import default_model_path
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin import HeadFileMetadata, save_head_file
from bertserve.plugin.head import EncodedRow
from bertserve_client import AsyncBertServeClient
from transformers import AutoTokenizer, BertConfig, BertModel

WORDS = (
    "the movie was a great fun and the plot kept me on the edge of my seat though some scenes dragged "
    "on far too long while the acting felt honest and warm yet the ending left too many questions open"
).split()


def make_texts(count: int, low: int, high: int, seed: int = 0) -> list[str]:
    """`count` seeded texts of `low`-`high` words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) for _ in range(count)]


def random_base_checkpoint(folder: Path) -> Path:
    """A randomly initialised bert-base-sized checkpoint with the default model's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_head(encoder: SharedEncoder, path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "classifier.weight": 0.02 * torch.randn(2, encoder.hidden_size, generator=generator),
        "classifier.bias": torch.zeros(2),
    }
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


def timed(function: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median seconds of `function` (after one warm-up), synchronising CUDA."""
    function()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def ceilings(encoder: SharedEncoder, rows: Sequence[EncodedRow], batch: int) -> tuple[float, float]:
    """(padded, unpadded) real tokens per second of the bare encoder over `rows` in batches of `batch`."""
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    device = encoder.device
    padded_inputs = []
    for chunk in batches:
        width = max(len(row) for row in chunk)
        ids = torch.tensor([row.input_ids + [0] * (width - len(row)) for row in chunk], device=device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in chunk], device=device)
        padded_inputs.append((ids, torch.zeros_like(ids), mask))
    real = sum(len(row) for row in rows)
    padded = timed(lambda: [encoder.forward(*inputs) for inputs in padded_inputs], device)
    unpadded = timed(lambda: [encoder.forward_packed(chunk) for chunk in batches], device)
    return real / padded, real / unpadded


async def closed_loop(address: str, texts: Sequence[str], concurrency: int) -> tuple[float, list[float]]:
    """Seconds for all `texts`, one per request, and each request's latency."""
    pending = list(reversed(texts))
    latencies: list[float] = []
    async with AsyncBertServeClient(address, timeout=600) as client:

        async def caller() -> None:
            while pending:
                text = pending.pop()
                started = time.perf_counter()
                await client.sentiment(text, truncate=True)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="rows per ceiling batch and max_batch_size")
    parser.add_argument("--long", action="store_true", help="texts of 200-500 tokens instead of 5-100 words")
    parser.add_argument("--random-base", action="store_true", help="a random bert-base-sized encoder")
    args = parser.parse_args()
    low, high = (150, 380) if args.long else (5, 100)
    texts = make_texts(args.requests, low, high)
    with tempfile.TemporaryDirectory() as folder:
        model = str(random_base_checkpoint(Path(folder) / "base")) if args.random_base else str(default_model_path())
        encoder = SharedEncoder.load(model, device=args.device, dtype=args.dtype)
        rows = []
        for text in texts[: args.batch * 8]:
            encoded = encoder.tokenizer(text, truncation=True, max_length=encoder.max_sequence_length)
            rows.append(EncodedRow(encoded["input_ids"], encoded["token_type_ids"]))
        padded_rate, unpadded_rate = ceilings(encoder, rows, args.batch)
        mean_tokens = sum(len(row) for row in rows) / len(rows)
        config = ServerConfig(
            model=model,
            device=args.device,
            dtype=args.dtype,
            port=0,
            head_files={"sentiment": write_head(encoder, Path(folder) / "sentiment.safetensors")},
            batching=BatchingConfig(max_batch_size=args.batch),
            metrics=MetricsConfig(port=None),
        )
        del encoder
        with BackgroundServer(config) as server:
            asyncio.run(closed_loop(server.address, texts[: 2 * args.concurrency], args.concurrency))
            seconds, latencies = asyncio.run(closed_loop(server.address, texts, args.concurrency))
    served_rate = len(texts) * mean_tokens / seconds
    latencies.sort()
    print(
        f"model {'random bert-base' if args.random_base else 'default'} on {args.device} ({args.dtype}), "
        f"{len(texts)} requests of {mean_tokens:.0f} tokens on average, concurrency {args.concurrency}"
    )
    print(f"{'':<28} {'tokens/s':>10} {'req/s':>8}")
    for label, rate in (("padded ceiling", padded_rate), ("unpadded ceiling", unpadded_rate), ("served", served_rate)):
        print(f"{label:<28} {rate:10.0f} {rate / mean_tokens:8.1f}")
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]
    print(f"served latency p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms")
    print(f"served / padded ceiling   {served_rate / padded_rate:.2f}")
    print(f"served / unpadded ceiling {served_rate / unpadded_rate:.2f}")


if __name__ == "__main__":
    main()
