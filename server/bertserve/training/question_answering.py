"""Train the question-answering span head on SQuAD-format data.

Each question is cut into overlapping context windows as the served head
cuts it; the head scores every token as the answer's start and end, and
only context tokens may be chosen. Dev exact-span accuracy decides early
stopping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.modules import HeadArchitecture
from bertserve.plugin.text import context_room
from bertserve.training.data import QuestionExample, read_squad
from bertserve.training.examples import SpanWindow, question_windows
from bertserve.training.loop import Objective, TrainingOptions, fit
from bertserve.training.shared import (
    FeatureOptions,
    TrainedHead,
    chunks,
    collate_inputs,
    encoder_head,
    encoder_head_samples,
    head_metadata,
    split_dev,
)

QA_WINDOW = 384  # the question-answering head's window
QA_STRIDE = 128

Sample = tuple[torch.Tensor, SpanWindow]  # a window's cached token states and the window
Batch = tuple[Any, torch.Tensor, torch.Tensor]  # inputs, allowed tokens, (start, end) targets


def train_span_head(
    encoder: SharedEncoder, data: Path, arch: HeadArchitecture, options: TrainingOptions, features: FeatureOptions
) -> TrainedHead:
    """Train a question-answering head on the SQuAD file `data`."""
    if arch.pooling != "tokens":
        raise ValueError("a question-answering head scores every token: use --pooling tokens")
    examples = read_squad(data)
    train_examples, dev_examples = split_dev(examples, options)
    window = min(encoder.max_sequence_length, QA_WINDOW)
    train_windows = span_windows(encoder.tokenizer, train_examples, window)
    dev_windows = span_windows(encoder.tokenizer, dev_examples, window)
    module = encoder_head(encoder, arch, 2)
    train = encoder_head_samples(encoder, module, [w.row for w in train_windows], train_windows, features, "train")
    dev = encoder_head_samples(encoder, module, [w.row for w in dev_windows], dev_windows, features, "dev")
    report = fit(module, train, dev, span_objective(encoder.device), options)
    metadata = head_metadata("question-answering", encoder, ("start", "end"), arch)
    metadata.extra["supports_no_answer"] = any(example.is_impossible for example in examples)
    counts = {
        "train_examples": len(train_examples),
        "dev_examples": len(dev_examples),
        "train_windows": len(train),
        "dev_windows": len(dev),
    }
    return TrainedHead("question-answering", module, metadata, report, counts)


def span_windows(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[QuestionExample], window: int
) -> list[SpanWindow]:
    """The context windows of every question that leaves room for at least two context tokens."""
    found = []
    for example in examples:
        room = context_room(tokenizer, example.question, window=window)
        if room < 2:
            continue  # the served head refuses such a question too
        found.extend(question_windows(tokenizer, example, window=window, stride=min(QA_STRIDE, window // 2, room - 1)))
    return found


def span_objective(device: torch.device) -> Objective[Sample, Batch]:
    """Mean of the start and end cross-entropies over allowed tokens; dev exact-span accuracy."""

    def collate(batch: Sequence[Sample]) -> Batch:
        inputs = collate_inputs([f for f, _ in batch], True, device)
        width = inputs[0].shape[1]
        allowed = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (_, w) in enumerate(batch):
            allowed[i, : len(w.allowed)] = torch.tensor(w.allowed)
        targets = torch.tensor([[w.start, w.end] for _, w in batch])
        return inputs, allowed.to(device), targets.to(device)

    def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs, allowed, targets = batch
        logits = allowed_logits(model, inputs, allowed)
        start = torch.nn.functional.cross_entropy(logits[..., 0], targets[:, 0])
        end = torch.nn.functional.cross_entropy(logits[..., 1], targets[:, 1])
        return (start + end) / 2

    def evaluate(model: torch.nn.Module, samples: Sequence[Sample]) -> dict[str, float]:
        exact = 0
        for chunk in chunks(samples, 64):
            inputs, allowed, targets = collate(chunk)
            predicted = allowed_logits(model, inputs, allowed).argmax(dim=1)  # (rows, 2)
            exact += int((predicted == targets).all(dim=1).sum())
        return {"span_exact": exact / max(len(samples), 1)}

    return Objective(collate, loss, evaluate)


def allowed_logits(model: torch.nn.Module, inputs: Any, allowed: torch.Tensor) -> torch.Tensor:
    """Start and end logits, (rows, tokens, 2), pushed far down where a token may not be chosen."""
    logits = model(inputs).float()
    return logits.masked_fill(~allowed.unsqueeze(-1), -1e4)
