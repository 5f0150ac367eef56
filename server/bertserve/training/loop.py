"""The training loop on cached features: AdamW, dev split, early stopping."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "linear")  # linear: 6% warm-up, then decay to 0 at the end of `epochs`
WARMUP_FRACTION = 0.06
MAX_GRAD_NORM = 1.0
SampleT = TypeVar("SampleT")
BatchT = TypeVar("BatchT")


@dataclass(frozen=True)
class TrainingOptions:
    """Optimisation settings. `layer_learning_rate` is for private encoder layers."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    layer_learning_rate: float = 5e-5
    weight_decay: float = 0.01
    patience: int = 3
    dev_fraction: float = 0.1
    seed: int = 0
    schedule: str = "constant"

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.patience < 1:
            raise ValueError("patience must be at least 1")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError("dev_fraction must be between 0 and 1")
        if self.learning_rate <= 0 or self.layer_learning_rate <= 0:
            raise ValueError("learning rates must be positive")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")


@dataclass
class FitReport:
    """What training did: the kept epoch, its dev metrics, every epoch's record."""

    best_epoch: int
    epochs_run: int
    dev_metrics: dict[str, float]
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Objective(Generic[SampleT, BatchT]):
    """How to batch samples, the loss of a batch, and the dev metrics
    (the first metric decides early stopping; higher is better)."""

    collate: Callable[[Sequence[SampleT]], BatchT]
    loss: Callable[[torch.nn.Module, BatchT], torch.Tensor]
    evaluate: Callable[[torch.nn.Module, Sequence[SampleT]], dict[str, float]]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def fit(
    module: torch.nn.Module,
    train: Sequence[SampleT],
    dev: Sequence[SampleT],
    objective: Objective[SampleT, BatchT],
    options: TrainingOptions,
) -> FitReport:
    """Train `module` on `train`, keep the state of its best dev epoch."""
    options.check()
    seed_everything(options.seed)
    shuffler = random.Random(options.seed)
    optimizer = torch.optim.AdamW(_parameter_groups(module, options))
    total_steps = options.epochs * math.ceil(len(train) / options.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(options.schedule, total_steps))
    best_score, best_epoch, best_state = -float("inf"), 0, copy.deepcopy(module.state_dict())
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    stale = 0
    for epoch in range(1, options.epochs + 1):
        module.train()
        order = list(range(len(train)))
        shuffler.shuffle(order)
        total, batches = 0.0, 0
        for start in tqdm(range(0, len(order), options.batch_size), desc=f"epoch {epoch}", leave=False):
            batch = objective.collate([train[i] for i in order[start : start + options.batch_size]])
            loss = objective.loss(module, batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            total, batches = total + float(loss.detach()), batches + 1
        module.eval()
        with torch.no_grad():
            metrics = objective.evaluate(module, dev)
        score = next(iter(metrics.values()))
        history.append({"epoch": epoch, "train_loss": total / max(batches, 1), **metrics})
        log.info("epoch %d: train loss %.4f, dev %s", epoch, total / max(batches, 1), _format(metrics))
        if score > best_score:
            best_score, best_epoch, best_metrics, stale = score, epoch, metrics, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if stale >= options.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return FitReport(best_epoch, len(history), best_metrics, time.perf_counter() - started, history)


def _schedule(name: str, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step."""
    if name == "constant":
        return lambda step: 1.0
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    return lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))


def _parameter_groups(module: torch.nn.Module, options: TrainingOptions) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        is_layer = name.startswith("private_layers.")
        decays = parameter.ndim > 1
        groups.setdefault((is_layer, decays), []).append(parameter)
    return [
        {
            "params": parameters,
            "lr": options.layer_learning_rate if is_layer else options.learning_rate,
            "weight_decay": options.weight_decay if decays else 0.0,
        }
        for (is_layer, decays), parameters in groups.items()
    ]


def _format(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
