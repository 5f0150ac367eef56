"""Benchmark: several heads on the same texts, one Analyze call vs one call per head.

On the real default encoder, three heads (sentiment, sentence embedding, token
classification; random head weights, since speed does not depend on them)
read the same texts. Printed side by side, in one run:

- Analyze with all three heads: each text goes through the encoder once;
- the same work as three Analyze calls, one head each (what a client without
  multi-head calls does): each text goes through the encoder three times.

Usage: python benchmarks/bench_analyze.py [--texts 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_throughput import write_head
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.default_model import default_model_path
from bertserve.model.encoder import SharedEncoder
from bertserve.model.plugins import discover_plugins
from bertserve_client import BertServeClient

EXAMPLES = Path(__file__).resolve().parents[1] / "plugins" / "examples" / "src"
WORDS = "the movie was a great fun and the plot kept me on the edge of my seat though paris felt long".split()
HEADS = ["sentiment", "sentence-embedding", "token-classification"]


def texts(count: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(count)]


def head_files(encoder: SharedEncoder, folder: Path) -> dict[str, Path]:
    token = importlib.import_module("bertserve_example_heads.token_classification")
    sentiment = write_head(encoder, folder / "sentiment.safetensors")
    labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    ner = token.save_token_classification_head(
        folder / "ner.safetensors",
        encoder,
        torch.randn(len(labels), encoder.hidden_size),
        torch.zeros(len(labels)),
        labels,
    )
    return {"sentiment": sentiment, "token-classification": ner}


def timed(server: BackgroundServer, call) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    stats = server.runtime.batcher.stats
    forwards, rows = stats.forwards, stats.rows
    started = time.perf_counter()
    call()
    return time.perf_counter() - started, stats.forwards - forwards, stats.rows - rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(EXAMPLES))
    model = str(default_model_path())
    encoder = SharedEncoder.load(model)
    batch = texts(args.texts)
    with tempfile.TemporaryDirectory() as folder:
        config = ServerConfig(model=model, head_files=head_files(encoder, Path(folder)), port=0)
        plugins = [p for p in discover_plugins("bertserve.heads") if p.package == "bertserve"]
        plugins += [
            (name, importlib.import_module(f"bertserve_example_heads.{module}"))
            for name, module in [("sentence-embedding", "embedding"), ("token-classification", "token_classification")]
        ]
        with (
            BackgroundServer(config, plugins=plugins) as server,
            BertServeClient(server.address, timeout=300) as client,
        ):
            client.analyze(batch[:4], HEADS)  # warm up
            together = [timed(server, lambda: client.analyze(batch, HEADS)) for _ in range(args.repeats)]
            apart = [
                timed(server, lambda: [client.analyze(batch, [head]) for head in HEADS]) for _ in range(args.repeats)
            ]
    best_together, best_apart = min(together), min(apart)
    print(
        f"{args.texts} texts x {len(HEADS)} heads on {encoder.device} ({encoder.dtype_name}), best of {args.repeats}:"
    )
    for label, (seconds, forwards, rows) in [
        ("one Analyze call, 3 heads", best_together),
        ("3 calls, 1 head each", best_apart),
    ]:
        print(f"  {label:<28} {seconds * 1000:8.1f} ms   {forwards:3d} forwards   {rows:4d} encoder rows")
    time_ratio, row_ratio = best_apart[0] / best_together[0], best_apart[2] / best_together[2]
    print(f"ratio: separate / shared = {time_ratio:.2f}x time, {row_ratio:.1f}x encoder rows")


if __name__ == "__main__":
    main()
