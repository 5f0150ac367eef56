"""Quality and compute of a sentiment head that owns k private encoder layers.

Usage: ``python benchmarks/bench_private_layers.py --data DIR [--ks 0 1 2 3] [--epochs 5] [--timing-only]``

DIR holds ``sentiment-train.csv`` and ``sentiment-heldout.csv`` as written by
``scripts/default_model/prepare_data.py``. For each k the head (mean pooling,
linear) trains on the frozen default encoder with the default-model recipe,
then prints its held-out accuracy (k = 0 trains up to 30 cheap epochs) and
the time its forward adds to a batch of 32 held-out sentences. That time is
measured side by side with the shared encoder's forward on the same batch,
alternating one run of each. ``--timing-only`` skips training: a head's cost
does not depend on its weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bertserve.app import load_encoder
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow
from bertserve.plugin.modules import EncoderHead, HeadArchitecture
from bertserve.training import FeatureOptions, TrainingOptions, evaluate_head, load_served_head, train_head
from bertserve.training.data import read_labeled_texts
from bertserve.training.examples import classification_row
from bertserve.training.features import run_encoder


def _ms(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return 1000 * (time.perf_counter() - started)


def side_by_side(
    encoder: SharedEncoder, batch: list[EncodedRow], module: torch.nn.Module, rounds: int = 21
) -> tuple[float, float]:
    """Median ms of the shared encoder's forward and of the head's forward, alternating."""
    outputs = run_encoder(encoder, batch)
    select = module.select_features  # type: ignore[operator]

    def head() -> None:
        with torch.inference_mode():
            module(select(outputs))

    head()  # warm-up
    encoder_ms, head_ms = [], []
    for _ in range(rounds):
        encoder_ms.append(_ms(lambda: run_encoder(encoder, batch)))
        head_ms.append(_ms(head))
    return statistics.median(encoder_ms), statistics.median(head_ms)


def held_out_accuracy(
    encoder: SharedEncoder, data: Path, k: int, epochs: int, cache: Path, config: ServerConfig
) -> tuple[float, torch.nn.Module]:
    """Train the k-private-layer head and measure it through the served path."""
    # With no private layers an epoch costs milliseconds and a linear probe needs more of them.
    options = TrainingOptions(
        epochs=epochs if k else 30,
        patience=2 if k else 5,
        schedule="linear" if k else "constant",
        layer_learning_rate=1e-4,
    )
    trained = train_head(
        "sentiment",
        encoder,
        data / "sentiment-train.csv",
        architecture=HeadArchitecture(pooling="mean", private_layers=k),
        options=options,
        features=FeatureOptions(cache_dir=cache, store_dtype=torch.float16),
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sentiment.safetensors"
        trained.save(path)
        head = load_served_head("sentiment", encoder, path, config)
        accuracy = evaluate_head("sentiment", head, encoder, data / "sentiment-heldout.csv")["accuracy"]
    return accuracy, trained.module.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timing-only", action="store_true", help="untrained heads: compute cost only")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bertserve-bench-features")
    args = parser.parse_args()
    config = ServerConfig(device="cpu", dtype="float32")
    encoder = load_encoder(config)
    batch = [
        classification_row(encoder.tokenizer, example.text, encoder.max_sequence_length)
        for example in read_labeled_texts(args.data / "sentiment-heldout.csv")[:32]
    ]
    print(f"torch threads: {torch.get_num_threads()}, batch: 32 sentences, {max(len(r) for r in batch)} tokens max")
    print("| private layers k | held-out accuracy | encoder forward (ms) | head forward (ms) | head / encoder |")
    print("| --- | --- | --- | --- | --- |")
    for k in args.ks:
        if args.timing_only:
            accuracy = float("nan")
            module: torch.nn.Module = EncoderHead(
                HeadArchitecture(pooling="mean", private_layers=k),
                encoder.config,
                2,
                private_layer_init=list(encoder.bert.encoder.layer),
            ).eval()
        else:
            accuracy, module = held_out_accuracy(encoder, args.data, k, args.epochs, args.cache, config)
        encoder_ms, head_ms = side_by_side(encoder, batch, module)
        shown = "-" if args.timing_only else f"{100 * accuracy:.1f}%"
        print(f"| {k} | {shown} | {encoder_ms:.1f} | {head_ms:.2f} | {head_ms / encoder_ms:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
