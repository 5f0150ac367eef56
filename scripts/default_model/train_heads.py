"""Train the default model's four heads and record their measured quality.

Usage: ``python scripts/default_model/train_heads.py [--data DIR] [--cache DIR] [--only HEAD ...]``

Prepares the data (``prepare_data.py``) when ``--data`` lacks it, trains each
head with ``bertserve train-head`` on the default encoder (the recipes below
are the whole recipe), writes the head files into the built-in heads
package, then measures every head through the served path with
``evaluate_head`` and writes ``metrics.json`` next to the head files: the
full held-out figures and those on the small fixed sample CI re-measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prepare_data import default_cache_dir, prepare

REPO = Path(__file__).resolve().parents[2]
HEADS_DIR = REPO / "plugins" / "bertserve_heads" / "default_heads"

# Per head: training data files (concatenated when several), held-out file, train-head options.
RECIPES: dict[str, dict[str, Any]] = {
    "sentiment": {
        "train": ["sentiment-train.csv"],
        "heldout": "sentiment-heldout.csv",
        "options": [
            *("--pooling", "mean", "--private-layers", "3", "--epochs", "5", "--patience", "2"),
            *("--schedule", "linear", "--layer-learning-rate", "1e-4", "--cache-dtype", "float16"),
        ],
    },
    "next-sentence": {
        "train": ["corpus-train.txt"],
        "heldout": "corpus-heldout.txt",
        "options": [
            *("--pooling", "first", "--private-layers", "1", "--copies", "2", "--epochs", "3", "--patience", "2"),
            *("--schedule", "linear", "--layer-learning-rate", "1e-4", "--cache-dtype", "float16"),
        ],
    },
    "fill-mask": {
        "train": ["corpus-train.txt", "corpus-snippets-train.txt"],
        "heldout": "corpus-heldout.txt",
        "options": [
            *("--private-layers", "2", "--epochs", "2", "--patience", "2", "--schedule", "linear"),
            *("--layer-learning-rate", "1e-4", "--cache-dtype", "float16"),
        ],
    },
    "question-answering": {
        "train": ["qa-train.json"],
        "heldout": "qa-heldout.json",
        "options": [
            *("--private-layers", "2", "--epochs", "3", "--patience", "2"),
            *("--schedule", "linear", "--layer-learning-rate", "1e-4", "--cache-dtype", "float16"),
        ],
    },
}
# Examples of the held-out files that CI re-measures (N evenly spaced over the file).
CI_SAMPLE = {"sentiment": 400, "next-sentence": 300, "fill-mask": 400, "question-answering": 200}
SQUAD_FIXTURE = "qa-squad-fixture.json"


def training_file(data: Path, head: str) -> Path:
    """The recipe's training data as one file (several are concatenated)."""
    names = RECIPES[head]["train"]
    if len(names) == 1:
        return data / names[0]
    combined = data / f"{head}-combined{Path(names[0]).suffix}"
    parts = [(data / name).read_text(encoding="utf-8") for name in names]
    if combined.suffix == ".csv":  # keep one header
        parts = [parts[0], *("".join(part.splitlines(keepends=True)[1:]) for part in parts[1:])]
    else:
        parts = [part.rstrip("\n") + "\n\n" for part in parts]
    combined.write_text("".join(parts), encoding="utf-8")
    return combined


def train(head: str, data: Path, feature_cache: Path) -> None:
    """Run ``bertserve train-head`` for `head` with its recipe."""
    recipe = RECIPES[head]
    command = [
        sys.executable,
        "-m",
        "bertserve",
        "train-head",
        head,
        "--data",
        str(training_file(data, head)),
        "--eval-data",
        str(data / recipe["heldout"]),
        "--out",
        str(HEADS_DIR / f"{head}.safetensors"),
        "--device",
        "cpu",
        "--feature-cache-dir",
        str(feature_cache),
        "--save-dtype",
        "float16",
        *recipe["options"],
    ]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def measure(heads: Sequence[str], data: Path) -> dict[str, Any]:
    """Held-out and CI-sample metrics of the packaged heads, through the served path."""
    from bertserve.app import load_encoder
    from bertserve.config import ServerConfig
    from bertserve.training import evaluate_head, load_served_head

    config = ServerConfig(device="cpu", dtype="float32")
    encoder = load_encoder(config)
    results: dict[str, Any] = {}
    for head in heads:
        served = load_served_head(head, encoder, None, config)
        heldout = data / RECIPES[head]["heldout"]
        limit = CI_SAMPLE[head]
        results[head] = {
            "heldout": {"data": heldout.name, **evaluate_head(head, served, encoder, heldout)},
            "ci_sample": {
                "data": heldout.name,
                "limit": limit,
                **evaluate_head(head, served, encoder, heldout, limit=limit),
            },
        }
        if head == "question-answering":
            fixture = data / SQUAD_FIXTURE
            results[head]["squad_fixture"] = {"data": fixture.name, **evaluate_head(head, served, encoder, fixture)}
        print(head, json.dumps(results[head]), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=Path("default-model-data"), help="data folder (made if missing)")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="folder for the downloaded archives")
    parser.add_argument("--feature-cache", type=Path, default=Path("default-model-data") / "features")
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--measure-only", action="store_true", help="re-measure the packaged heads, train nothing")
    args = parser.parse_args(argv)
    if not all((args.data / RECIPES[head]["heldout"]).is_file() for head in RECIPES):
        prepare(args.data, args.cache)
    if not args.measure_only:
        for head in args.only:
            train(head, args.data, args.feature_cache)
    metrics_path = HEADS_DIR / "metrics.json"
    recorded = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    recorded.update(measure(args.only, args.data))
    metrics_path.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    print(f"wrote {metrics_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
