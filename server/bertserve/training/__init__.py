"""Train and evaluate heads on the frozen shared encoder.

`train_head` reads a task's data, caches the encoder's features once and
trains a head module on them; `evaluate_head` measures a head as the server
runs it. The CLI wraps both as ``bertserve train-head`` and ``eval-head``.
"""

from __future__ import annotations

from bertserve.training.evaluate import evaluate_head, load_served_head, run_head
from bertserve.training.loop import FitReport, TrainingOptions
from bertserve.training.trainers import TASKS, FeatureOptions, TrainedHead, train_head

__all__ = [
    "TASKS",
    "FeatureOptions",
    "FitReport",
    "TrainedHead",
    "TrainingOptions",
    "evaluate_head",
    "load_served_head",
    "run_head",
    "train_head",
]
