"""The `bertserve train-head` and `eval-head` commands.

Where they overlap with `serve` (the encoder, its revision and cache, the
device, the log level, and for eval-head the head files and plugins), they
take the same settings from the same sources: flag, ``BERTSERVE_*``
variable, ``--config`` TOML file, default. The encoder always runs in float32.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import torch

from bertserve.app import load_encoder
from bertserve.config import ServerConfig
from bertserve.plugin.headfile import read_head_metadata
from bertserve.plugin.modules import POOLINGS, HeadArchitecture
from bertserve.settings import add_setting_flags, config_or_exit
from bertserve.training.evaluate import evaluate_head, load_served_head
from bertserve.training.loop import SCHEDULES, TrainingOptions
from bertserve.training.trainers import TASKS, FeatureOptions, train_head

log = logging.getLogger(__name__)

# The settings the training commands share with `serve`, read from the same sources.
TRAIN_SETTINGS = (
    "model.name",
    "model.revision",
    "model.cache_dir",
    "model.device",
    "model.max_sequence_length",
    "logging.level",
)
EVAL_SETTINGS = (*TRAIN_SETTINGS, "model.head_files", "plugins.allow", "plugins.deny")

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bertserve" / "features"


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``train-head`` and ``eval-head`` on the CLI's subcommands."""
    train = commands.add_parser("train-head", help="train a head on the frozen encoder and write a head file")
    train.add_argument("task", choices=TASKS)
    train.add_argument("--data", type=Path, required=True, help="training data (CSV/TSV/JSONL, text, SQuAD JSON)")
    train.add_argument("--out", type=Path, required=True, help="head file to write")
    train.add_argument("--eval-data", type=Path, default=None, help="held-out data; its metrics go into the file")
    train.add_argument(
        "--save-dtype", choices=["float32", "float16"], default="float32", help="weights in the file (float16: half)"
    )
    add_setting_flags(train, TRAIN_SETTINGS)
    arch = train.add_argument_group("architecture (fill-mask takes only --layer-mix or --private-layers)")
    arch.add_argument("--pooling", choices=POOLINGS, default=None, help="default: first; tokens for QA")
    arch.add_argument(
        "--layer-mix", action="store_true", help="learned mix of all layers (first/mean pooling, fill-mask)"
    )
    arch.add_argument("--mlp-hidden", type=int, default=0, help="hidden units of an MLP (default 0: linear)")
    arch.add_argument("--private-layers", type=int, default=0, help="trainable copies of the top k encoder layers")
    arch.add_argument("--dropout", type=float, default=0.1)
    opt = train.add_argument_group("optimisation")
    defaults = TrainingOptions()
    opt.add_argument("--epochs", type=int, default=defaults.epochs)
    opt.add_argument("--batch-size", type=int, default=defaults.batch_size)
    opt.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    opt.add_argument("--layer-learning-rate", type=float, default=defaults.layer_learning_rate)
    opt.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    opt.add_argument("--patience", type=int, default=defaults.patience, help="epochs without dev gain before stop")
    opt.add_argument("--dev-fraction", type=float, default=defaults.dev_fraction)
    opt.add_argument("--seed", type=int, default=defaults.seed)
    opt.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule, help="learning-rate schedule")
    opt.add_argument(
        "--copies", type=int, default=1, help="fill-mask, next-sentence: different random maskings / pairings"
    )
    cache = train.add_argument_group("feature cache")
    cache.add_argument(
        "--feature-cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"encoder features of the training data (default: {DEFAULT_CACHE})",
    )
    cache.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    cache.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32", help="(default: float32)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "eval-head",
        help="held-out accuracy / F1 / exact match of a head",
        description="Measure a head on held-out data, loaded as `serve` would load it. "
        "--head-file also takes a bare PATH: the file of the head evaluated.",
    )
    evaluate.add_argument("task", choices=TASKS)
    evaluate.add_argument("--data", type=Path, required=True, help="held-out data in the task's training format")
    evaluate.add_argument("--head", default=None, help="head name (default: the built-in head of TASK)")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate N evenly spaced examples")
    evaluate.add_argument("--seed", type=int, default=0, help="pair / mask sampling for text corpora")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    add_setting_flags(evaluate, EVAL_SETTINGS)
    evaluate.set_defaults(handler=_evaluate)


def _encoder_config(args: argparse.Namespace) -> ServerConfig:
    """The settings `serve` would use (flag > env > TOML file > default), with the encoder in float32."""
    head_files = getattr(args, "setting__model__head_files", None)
    if head_files is not None:  # eval-head also takes --head-file PATH: the file of the head it evaluates
        args.setting__model__head_files = [spec if "=" in spec else f"{_head_name(args)}={spec}" for spec in head_files]
    config = config_or_exit(args, os.environ)
    logging.getLogger().setLevel(config.logging.level)
    return replace(config, dtype="float32")


def _head_name(args: argparse.Namespace) -> str:
    return str(getattr(args, "head", None) or args.task)


def _train(args: argparse.Namespace) -> int:
    config = _encoder_config(args)
    encoder = load_encoder(config)
    # fill-mask reads only these two settings
    architecture = HeadArchitecture(pooling="tokens", layer_mix=args.layer_mix, private_layers=args.private_layers)
    if args.task != "fill-mask":
        architecture = HeadArchitecture(
            pooling=args.pooling or ("tokens" if args.task == "question-answering" else "first"),
            layer_mix=args.layer_mix,
            mlp_hidden=args.mlp_hidden,
            private_layers=args.private_layers,
            dropout=args.dropout,
        )
    options = TrainingOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        layer_learning_rate=args.layer_learning_rate,
        weight_decay=args.weight_decay,
        patience=args.patience,
        dev_fraction=args.dev_fraction,
        seed=args.seed,
        schedule=args.schedule,
    )
    features = FeatureOptions(
        cache_dir=None if args.no_cache else args.feature_cache_dir,
        store_dtype=torch.float16 if args.cache_dtype == "float16" else torch.float32,
    )
    try:
        trained = train_head(
            args.task,
            encoder,
            args.data,
            architecture=architecture,
            options=options,
            features=features,
            copies=args.copies,
        )
    except ValueError as error:
        raise SystemExit(f"train-head: {error}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_dtype = torch.float16 if args.save_dtype == "float16" else torch.float32
    trained.save(args.out, dtype=save_dtype)
    report = trained.report
    print(f"trained {args.task} head: best epoch {report.best_epoch} of {report.epochs_run} in {report.seconds:.0f} s")
    print(f"dev: {json.dumps(report.dev_metrics)}")
    if args.eval_data is not None:
        head = load_served_head(args.task, encoder, args.out, config)
        metrics = evaluate_head(args.task, head, encoder, args.eval_data, seed=args.seed)
        trained.metadata.extra["metrics"] = {"data": args.eval_data.name, **metrics}
        trained.save(args.out, dtype=save_dtype)
        print(f"held-out ({args.eval_data.name}): {json.dumps(metrics)}")
    print(f"wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    config = _encoder_config(args)
    encoder = load_encoder(config)
    name = _head_name(args)
    try:
        head = load_served_head(name, encoder, None, config)
    except ValueError as error:
        raise SystemExit(f"eval-head: {error}") from None
    metrics = evaluate_head(args.task, head, encoder, args.data, seed=args.seed, limit=args.limit)
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    head_file = config.head_files.get(name)
    if head_file is not None:
        recorded = read_head_metadata(head_file)
        if recorded is not None and "metrics" in recorded.extra:
            log.info("metrics recorded in the head file: %s", recorded.extra["metrics"])
    return 0
