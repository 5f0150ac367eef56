"""Train a head of each built-in task on the frozen shared encoder.

Each task reads its data format, builds encoder rows the way its head
serves them, caches the encoder's features once, then trains the head
module (`EncoderHead` or `MaskedLMModule`) on the cache with early stopping
on a dev split. The result is a head file the server loads.

`train_head` checks the request, hands it to the task's recipe
(`classification`, `question_answering` or `masked_lm`) and records how the
head was trained in its metadata; the recipes share `shared`'s pieces.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.modules import HeadArchitecture
from bertserve.training.classification import NEXT_SENTENCE_LABELS, train_classifier
from bertserve.training.loop import TrainingOptions, seed_everything
from bertserve.training.masked_lm import masked_lm_architecture, train_masked_lm
from bertserve.training.question_answering import QA_STRIDE, QA_WINDOW, train_span_head
from bertserve.training.shared import FeatureOptions, TrainedHead

__all__ = [
    "NEXT_SENTENCE_LABELS",
    "QA_STRIDE",
    "QA_WINDOW",
    "TASKS",
    "FeatureOptions",
    "TrainedHead",
    "train_head",
]

TASKS = ("sentiment", "next-sentence", "fill-mask", "question-answering")


def train_head(
    task: str,
    encoder: SharedEncoder,
    data: Path,
    *,
    architecture: HeadArchitecture | None = None,
    options: TrainingOptions | None = None,
    features: FeatureOptions | None = None,
    copies: int = 1,
) -> TrainedHead:
    """Train a `task` head on `data` with the encoder frozen.

    Fill-mask takes only `layer_mix` or `private_layers` from `architecture`:
    its head is BERT's MLM transform with the decoder tied to the word
    embeddings. `copies` is how many different random maskings (fill-mask)
    or pairings (next-sentence) of the text training sees, BERT's "dupe
    factor".
    """
    options = options or TrainingOptions()
    features = features or FeatureOptions()
    _check_request(task, options, copies)
    seed_everything(options.seed)  # the head's initial weights too
    trained = _train_task(task, encoder, data, architecture, options, features, copies)
    trained.metadata.extra["training"] = _training_record(trained, data, options)
    return trained


def _check_request(task: str, options: TrainingOptions, copies: int) -> None:
    options.check()
    if copies < 1:
        raise ValueError("copies must be at least 1")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")


def _train_task(
    task: str,
    encoder: SharedEncoder,
    data: Path,
    architecture: HeadArchitecture | None,
    options: TrainingOptions,
    features: FeatureOptions,
    copies: int,
) -> TrainedHead:
    """Run `task`'s recipe, with its default architecture when none is given."""
    if task == "fill-mask":
        arch = masked_lm_architecture(architecture, encoder)
        return train_masked_lm(encoder, data, options, features, copies, arch)
    arch = architecture or HeadArchitecture(pooling="tokens" if task == "question-answering" else "first")
    arch.check(encoder.config, has_pooler=encoder.has_pooler)
    if task == "question-answering":
        return train_span_head(encoder, data, arch, options, features)
    return train_classifier(task, encoder, data, arch, options, features, copies)


def _training_record(trained: TrainedHead, data: Path, options: TrainingOptions) -> dict[str, Any]:
    """How the head was trained, as its file's ``training`` metadata."""
    return {
        "data": data.name,
        "data_sha256": _file_digest(data),
        **trained.counts,
        "options": asdict(options),
        "best_epoch": trained.report.best_epoch,
        "epochs_run": trained.report.epochs_run,
        "seconds": round(trained.report.seconds, 1),
        "dev_metrics": trained.report.dev_metrics,
    }


def _file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
