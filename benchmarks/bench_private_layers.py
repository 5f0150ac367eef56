"""Quality and compute of a sentiment head that owns k private encoder layers.

Usage: ``python benchmarks/bench_private_layers.py --data DIR [--ks 0 1 2 3] [--epochs 5]``

DIR holds ``sentiment-train.csv`` and ``sentiment-heldout.csv`` as written by
``scripts/default_model/prepare_data.py``. For each k the head (mean pooling,
linear) trains on the frozen default encoder with the default-model recipe,
then prints its held-out accuracy (k = 0 trains up to 30 cheap epochs) next to the time its forward adds to a
batch of 32 held-out sentences, measured side by side with the shared
encoder's forward on the same batch (k = 0 adds almost nothing; k = 6 would
be a whole private encoder).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bertserve.app import load_encoder
from bertserve.config import ServerConfig
from bertserve.head_modules import HeadArchitecture
from bertserve.training import FeatureOptions, TrainingOptions, evaluate_head, load_served_head, train_head
from bertserve.training.data import read_labeled_texts
from bertserve.training.examples import classification_row
from bertserve.training.features import run_encoder


def median_ms(function, repeats: int = 20) -> float:  # type: ignore[no-untyped-def]
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _head_forward(module: torch.nn.Module, outputs: object) -> None:
    with torch.inference_mode():
        module(module.select_features(outputs))  # type: ignore[operator]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bertserve-bench-features")
    args = parser.parse_args()
    config = ServerConfig(device="cpu", dtype="float32")
    encoder = load_encoder(config)
    held_out = args.data / "sentiment-heldout.csv"
    batch = [
        classification_row(encoder.tokenizer, example.text, encoder.max_sequence_length)
        for example in read_labeled_texts(held_out)[:32]
    ]
    encoder_ms = median_ms(lambda: run_encoder(encoder, batch))
    outputs = run_encoder(encoder, batch)
    print(f"shared encoder forward, batch of 32: {encoder_ms:.1f} ms", flush=True)
    print("| private layers k | held-out accuracy | head forward (ms / batch of 32) | vs. encoder forward |")
    print("| --- | --- | --- | --- |")
    for k in args.ks:
        # With no private layers an epoch costs milliseconds and a linear probe needs more of them.
        options = TrainingOptions(
            epochs=args.epochs if k else 30,
            patience=2 if k else 5,
            schedule="linear" if k else "constant",
            layer_learning_rate=1e-4,
        )
        trained = train_head(
            "sentiment",
            encoder,
            args.data / "sentiment-train.csv",
            architecture=HeadArchitecture(pooling="mean", private_layers=k),
            options=options,
            features=FeatureOptions(cache_dir=args.cache, store_dtype=torch.float16),
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sentiment.safetensors"
            trained.save(path)
            head = load_served_head("sentiment", encoder, path, config)
            accuracy = evaluate_head("sentiment", head, encoder, held_out)["accuracy"]
        head_ms = median_ms(functools.partial(_head_forward, trained.module.eval(), outputs))
        print(f"| {k} | {100 * accuracy:.1f}% | {head_ms:.2f} | {head_ms / encoder_ms:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
