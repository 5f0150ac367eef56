"""Train the one-vector classification heads: sentiment and next-sentence.

Sentiment-style tasks read labeled texts; next-sentence builds sentence pairs
from documents. Either way each row is one pooled vector, and the head
learns its label with cross-entropy; dev accuracy decides early stopping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow
from bertserve.plugin.modules import HeadArchitecture
from bertserve.training.data import read_documents, read_labeled_texts
from bertserve.training.examples import classification_row, next_sentence_pairs, pair_row
from bertserve.training.loop import Objective, TrainingOptions, fit
from bertserve.training.shared import (
    FeatureOptions,
    TrainedHead,
    chunks,
    collate_inputs,
    encoder_head,
    encoder_head_samples,
    head_metadata,
    reads_tokens,
    split_dev,
)

NEXT_SENTENCE_LABELS = ("is_next", "not_next")

Sample = tuple[torch.Tensor, int]  # a row's cached features and its label index
Batch = tuple[Any, torch.Tensor]


@dataclass
class LabeledRows:
    """Encoder rows and their label indices, for the train and dev parts."""

    labels: tuple[str, ...]
    train_rows: list[EncodedRow]
    dev_rows: list[EncodedRow]
    train_targets: list[int]
    dev_targets: list[int]


def train_classifier(
    task: str,
    encoder: SharedEncoder,
    data: Path,
    arch: HeadArchitecture,
    options: TrainingOptions,
    features: FeatureOptions,
    copies: int,
) -> TrainedHead:
    """Train a `task` head (next-sentence, or labeled texts) on `data`."""
    if task == "next-sentence":
        rows = next_sentence_rows(encoder, data, arch, options, copies)
    else:
        rows = labeled_text_rows(encoder, data, arch, options)
    module = encoder_head(encoder, arch, len(rows.labels))
    train = encoder_head_samples(encoder, module, rows.train_rows, rows.train_targets, features, "train")
    dev = encoder_head_samples(encoder, module, rows.dev_rows, rows.dev_targets, features, "dev")
    report = fit(module, train, dev, classification_objective(reads_tokens(arch), encoder.device), options)
    metadata = head_metadata(task, encoder, rows.labels, arch)
    return TrainedHead(task, module, metadata, report, {"train_examples": len(train), "dev_examples": len(dev)})


def next_sentence_rows(
    encoder: SharedEncoder, data: Path, arch: HeadArchitecture, options: TrainingOptions, copies: int
) -> LabeledRows:
    """Sentence pairs from the documents in `data`: `copies` pairings of the train part, one of dev."""
    if arch.pooling == "tokens":
        raise ValueError("next-sentence reads one vector per pair: use first, mean or pooled pooling")
    tokenizer, limit = encoder.tokenizer, encoder.max_sequence_length
    train_docs, dev_docs = split_dev(read_documents(data), options)
    train_pairs = [
        pair for copy in range(copies) for pair in next_sentence_pairs(train_docs, seed=options.seed + 100 * copy)
    ]
    dev_pairs = next_sentence_pairs(dev_docs, seed=options.seed + 1)
    return LabeledRows(
        labels=NEXT_SENTENCE_LABELS,
        train_rows=[pair_row(tokenizer, p.first, p.second, limit) for p in train_pairs],
        dev_rows=[pair_row(tokenizer, p.first, p.second, limit) for p in dev_pairs],
        train_targets=[p.label for p in train_pairs],
        dev_targets=[p.label for p in dev_pairs],
    )


def labeled_text_rows(
    encoder: SharedEncoder, data: Path, arch: HeadArchitecture, options: TrainingOptions
) -> LabeledRows:
    """One row per labeled text in `data`; the labels are the sorted set of those found."""
    if arch.pooling == "tokens":
        raise ValueError("a classification head reads one vector per text: use first, mean or pooled pooling")
    tokenizer, limit = encoder.tokenizer, encoder.max_sequence_length
    examples = read_labeled_texts(data)
    labels = tuple(sorted({example.label for example in examples}))
    if len(labels) < 2:
        raise ValueError(f"{data}: needs at least two labels; found {list(labels)}")
    index = {label: i for i, label in enumerate(labels)}
    train_examples, dev_examples = split_dev(examples, options)
    return LabeledRows(
        labels=labels,
        train_rows=[classification_row(tokenizer, e.text, limit) for e in train_examples],
        dev_rows=[classification_row(tokenizer, e.text, limit) for e in dev_examples],
        train_targets=[index[e.label] for e in train_examples],
        dev_targets=[index[e.label] for e in dev_examples],
    )


def classification_objective(tokens: bool, device: torch.device) -> Objective[Sample, Batch]:
    """Cross-entropy over the labels; dev accuracy decides early stopping."""

    def collate(batch: Sequence[Sample]) -> Batch:
        inputs = collate_inputs([f for f, _ in batch], tokens, device)
        return inputs, torch.tensor([t for _, t in batch], device=device)

    def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(model(inputs).float(), targets)

    def evaluate(model: torch.nn.Module, samples: Sequence[Sample]) -> dict[str, float]:
        correct = 0
        for chunk in chunks(samples, 256):
            inputs, targets = collate(chunk)
            correct += int((model(inputs).argmax(dim=-1) == targets).sum())
        return {"accuracy": correct / max(len(samples), 1)}

    return Objective(collate, loss, evaluate)
