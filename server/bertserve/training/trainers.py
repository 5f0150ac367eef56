"""Train a head of each built-in task on the frozen shared encoder.

Each task reads its data format, builds encoder rows the way its head
serves them, caches the encoder's features once, then trains the head
module (`EncoderHead` or `MaskedLMModule`) on the cache with early stopping
on a dev split. The result is a head file the server loads.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow, EncoderOutputs
from bertserve.plugin.headfile import HeadFileMetadata, save_head_file
from bertserve.plugin.modules import EncoderHead, HeadArchitecture, MaskedLMModule
from bertserve.plugin.text import context_room
from bertserve.plugin.trained import ENCODER_HEAD, MASKED_LM
from bertserve.training.data import Document, read_documents, read_labeled_texts, read_squad
from bertserve.training.examples import (
    classification_row,
    masked_lm_rows,
    next_sentence_pairs,
    pair_row,
    question_windows,
)
from bertserve.training.features import RaggedFeatures, extract_features
from bertserve.training.loop import FitReport, Objective, TrainingOptions, fit, seed_everything

TASKS = ("sentiment", "next-sentence", "fill-mask", "question-answering")
NEXT_SENTENCE_LABELS = ("is_next", "not_next")
QA_WINDOW = 384  # the question-answering head's window
QA_STRIDE = 128

T = TypeVar("T")


@dataclass(frozen=True)
class FeatureOptions:
    """How features are computed and kept: cache folder, stored dtype, batch size."""

    cache_dir: Path | None = None
    store_dtype: torch.dtype = torch.float32
    batch_size: int = 64


@dataclass
class TrainedHead:
    """A trained head module with its file metadata and training report."""

    task: str
    module: torch.nn.Module
    metadata: HeadFileMetadata
    report: FitReport
    counts: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        """Write the head file the server loads, floating-point weights as `dtype`
        (float16 halves the file; the server casts to its own dtype on load)."""
        tensors = {
            name: tensor.to(dtype) if tensor.is_floating_point() else tensor
            for name, tensor in self.module.state_dict().items()
        }
        self.metadata.extra["training"]["saved_dtype"] = str(dtype).removeprefix("torch.")
        save_head_file(path, tensors, self.metadata)


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
    options.check()
    if copies < 1:
        raise ValueError("copies must be at least 1")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    seed_everything(options.seed)  # the head's initial weights too
    if task == "fill-mask":
        arch = architecture or HeadArchitecture(pooling="tokens")
        if arch.layer_mix and arch.private_layers:
            raise ValueError("a masked-LM head takes --layer-mix or --private-layers, not both")
        if not 0 <= arch.private_layers <= int(encoder.config.num_hidden_layers):
            raise ValueError(f"private_layers must be between 0 and {encoder.config.num_hidden_layers}")
        trained = _train_masked_lm(encoder, read_documents(data), options, features, copies, arch)
    else:
        arch = architecture or HeadArchitecture(pooling="tokens" if task == "question-answering" else "first")
        arch.check(encoder.config, has_pooler=encoder.has_pooler)
        if task == "question-answering":
            trained = _train_span_head(encoder, data, arch, options, features)
        else:
            trained = _train_classifier(task, encoder, data, arch, options, features, copies)
    trained.metadata.extra["training"] = {
        "data": data.name,
        "data_sha256": _file_digest(data),
        **trained.counts,
        "options": asdict(options),
        "best_epoch": trained.report.best_epoch,
        "epochs_run": trained.report.epochs_run,
        "seconds": round(trained.report.seconds, 1),
        "dev_metrics": trained.report.dev_metrics,
    }
    return trained


def _train_classifier(
    task: str,
    encoder: SharedEncoder,
    data: Path,
    arch: HeadArchitecture,
    options: TrainingOptions,
    features: FeatureOptions,
    copies: int,
) -> TrainedHead:
    tokenizer, limit = encoder.tokenizer, encoder.max_sequence_length
    if task == "next-sentence":
        if arch.pooling == "tokens":
            raise ValueError("next-sentence reads one vector per pair: use first, mean or pooled pooling")
        documents = read_documents(data)
        train_docs, dev_docs = _split(documents, options)
        train_pairs = [
            pair for copy in range(copies) for pair in next_sentence_pairs(train_docs, seed=options.seed + 100 * copy)
        ]
        dev_pairs = next_sentence_pairs(dev_docs, seed=options.seed + 1)
        labels: tuple[str, ...] = NEXT_SENTENCE_LABELS
        train_rows = [pair_row(tokenizer, p.first, p.second, limit) for p in train_pairs]
        dev_rows = [pair_row(tokenizer, p.first, p.second, limit) for p in dev_pairs]
        train_targets = [p.label for p in train_pairs]
        dev_targets = [p.label for p in dev_pairs]
    else:
        if arch.pooling == "tokens":
            raise ValueError("a classification head reads one vector per text: use first, mean or pooled pooling")
        examples = read_labeled_texts(data)
        labels = tuple(sorted({example.label for example in examples}))
        if len(labels) < 2:
            raise ValueError(f"{data}: needs at least two labels; found {list(labels)}")
        index = {label: i for i, label in enumerate(labels)}
        train_examples, dev_examples = _split(examples, options)
        train_rows = [classification_row(tokenizer, e.text, limit) for e in train_examples]
        dev_rows = [classification_row(tokenizer, e.text, limit) for e in dev_examples]
        train_targets = [index[e.label] for e in train_examples]
        dev_targets = [index[e.label] for e in dev_examples]
    module = _encoder_head(encoder, arch, len(labels))
    train_features = _features(encoder, module, train_rows, features, "train")
    dev_features = _features(encoder, module, dev_rows, features, "dev")
    train = [(train_features.row(i), target) for i, target in enumerate(train_targets)]
    dev = [(dev_features.row(i), target) for i, target in enumerate(dev_targets)]
    tokens = _reads_tokens(arch)
    device = encoder.device

    def collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[Any, torch.Tensor]:
        inputs = _collate_inputs([f for f, _ in batch], tokens, device)
        return inputs, torch.tensor([t for _, t in batch], device=device)

    def loss(model: torch.nn.Module, batch: tuple[Any, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(model(inputs).float(), targets)

    def evaluate(model: torch.nn.Module, samples: Sequence[tuple[torch.Tensor, int]]) -> dict[str, float]:
        correct = 0
        for chunk in _chunks(samples, 256):
            inputs, targets = collate(chunk)
            correct += int((model(inputs).argmax(dim=-1) == targets).sum())
        return {"accuracy": correct / max(len(samples), 1)}

    report = fit(module, train, dev, Objective(collate, loss, evaluate), options)
    metadata = _metadata(task, encoder, labels, arch)
    return TrainedHead(task, module, metadata, report, {"train_examples": len(train), "dev_examples": len(dev)})


def _train_span_head(
    encoder: SharedEncoder, data: Path, arch: HeadArchitecture, options: TrainingOptions, features: FeatureOptions
) -> TrainedHead:
    if arch.pooling != "tokens":
        raise ValueError("a question-answering head scores every token: use --pooling tokens")
    examples = read_squad(data)
    train_examples, dev_examples = _split(examples, options)
    window = min(encoder.max_sequence_length, QA_WINDOW)
    tokenizer = encoder.tokenizer

    def windows(chosen: Sequence[Any]) -> list[Any]:
        found = []
        for example in chosen:
            room = context_room(tokenizer, example.question, window=window)
            if room < 2:
                continue  # the served head refuses such a question too
            found.extend(
                question_windows(tokenizer, example, window=window, stride=min(QA_STRIDE, window // 2, room - 1))
            )
        return found

    train_windows, dev_windows = windows(train_examples), windows(dev_examples)
    module = _encoder_head(encoder, arch, 2)
    train_features = _features(encoder, module, [w.row for w in train_windows], features, "train")
    dev_features = _features(encoder, module, [w.row for w in dev_windows], features, "dev")
    train = [(train_features.row(i), w) for i, w in enumerate(train_windows)]
    dev = [(dev_features.row(i), w) for i, w in enumerate(dev_windows)]
    device = encoder.device

    def collate(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        inputs = _collate_inputs([f for f, _ in batch], True, device)
        width = inputs[0].shape[1]
        allowed = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (_, w) in enumerate(batch):
            allowed[i, : len(w.allowed)] = torch.tensor(w.allowed)
        targets = torch.tensor([[w.start, w.end] for _, w in batch])
        return inputs, allowed.to(device), targets.to(device)

    def logits_of(model: torch.nn.Module, inputs: Any, allowed: torch.Tensor) -> torch.Tensor:
        logits = model(inputs).float()  # (rows, tokens, 2)
        return logits.masked_fill(~allowed.unsqueeze(-1), -1e4)

    def loss(model: torch.nn.Module, batch: tuple[Any, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, allowed, targets = batch
        logits = logits_of(model, inputs, allowed)
        start = torch.nn.functional.cross_entropy(logits[..., 0], targets[:, 0])
        end = torch.nn.functional.cross_entropy(logits[..., 1], targets[:, 1])
        return (start + end) / 2

    def evaluate(model: torch.nn.Module, samples: Sequence[tuple[torch.Tensor, Any]]) -> dict[str, float]:
        exact = 0
        for chunk in _chunks(samples, 64):
            inputs, allowed, targets = collate(chunk)
            predicted = logits_of(model, inputs, allowed).argmax(dim=1)  # (rows, 2)
            exact += int((predicted == targets).all(dim=1).sum())
        return {"span_exact": exact / max(len(samples), 1)}

    report = fit(module, train, dev, Objective(collate, loss, evaluate), options)
    metadata = _metadata("question-answering", encoder, ("start", "end"), arch)
    metadata.extra["supports_no_answer"] = any(example.is_impossible for example in examples)
    counts = {
        "train_examples": len(train_examples),
        "dev_examples": len(dev_examples),
        "train_windows": len(train),
        "dev_windows": len(dev),
    }
    return TrainedHead("question-answering", module, metadata, report, counts)


def _train_masked_lm(
    encoder: SharedEncoder,
    documents: list[Document],
    options: TrainingOptions,
    features: FeatureOptions,
    copies: int,
    arch: HeadArchitecture,
) -> TrainedHead:
    train_docs, dev_docs = _split(documents, options)
    tokenizer, limit = encoder.tokenizer, min(encoder.max_sequence_length, 128)
    train_rows = masked_lm_rows(tokenizer, train_docs, max_length=limit, seed=options.seed, copies=copies)
    dev_rows = masked_lm_rows(tokenizer, dev_docs, max_length=limit, seed=options.seed + 1)
    embeddings = encoder.word_embeddings.detach().to(torch.float32)
    module = MaskedLMModule(
        encoder.config,
        embeddings,
        layer_mix=arch.layer_mix,
        private_layers=arch.private_layers,
        private_layer_init=list(encoder.bert.encoder.layer),
    ).to(device=encoder.device, dtype=torch.float32)
    device = encoder.device
    private = arch.private_layers > 0

    def select(outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[torch.Tensor]:
        if private:  # whole rows: the private layers attend over every token
            assert outputs.hidden_states is not None
            below = outputs.hidden_states[-(arch.private_layers + 1)]
            return [below[i, : len(row)] for i, row in enumerate(rows)]
        found = []
        for i, row in enumerate(rows):
            tokens = torch.tensor(row.data, device=device)
            found.append(module.select_features(outputs, torch.full_like(tokens, i), tokens))
        return found

    def cached(masked: list[Any], name: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rows = [EncodedRow(m.row.input_ids, m.row.token_type_ids, data=m.positions) for m in masked]
        found = extract_features(
            encoder,
            rows,
            select,
            selector_name=f"mask-positions|mix={arch.layer_mix}|private={arch.private_layers}",
            cache_dir=features.cache_dir,
            batch_size=features.batch_size,
            store_dtype=features.store_dtype,
            description=f"encoding {name}",
        )
        return [(found.row(i), torch.tensor(m.positions), torch.tensor(m.targets)) for i, m in enumerate(masked)]

    train, dev = cached(train_rows, "train"), cached(dev_rows, "dev")
    with torch.no_grad():  # start from the unigram distribution: a zero bias takes thousands of steps to learn it
        seen = torch.bincount(torch.cat([t for _, _, t in train]), minlength=module.bias.numel()).float()
        module.bias.copy_(torch.log((seen + 0.1) / (seen.sum() + 0.1 * seen.numel())))

    def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[Any, torch.Tensor]:
        targets = torch.cat([t for _, _, t in batch]).to(device)
        if not private:
            return torch.cat([h for h, _, _ in batch]).to(device=device, dtype=torch.float32), targets
        hidden, mask = _collate_inputs([h for h, _, _ in batch], True, device)
        row_index = torch.cat([torch.full((len(p),), i) for i, (_, p, _) in enumerate(batch)]).to(device)
        token_index = torch.cat([p for _, p, _ in batch]).to(device)
        return (hidden, mask, row_index, token_index), targets

    def loss(model: torch.nn.Module, batch: tuple[Any, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(model(inputs), targets)

    def evaluate(model: torch.nn.Module, samples: Sequence[Any]) -> dict[str, float]:
        top1 = top5 = total = 0
        for chunk in _chunks(samples, 64 if private else 256):
            inputs, targets = collate(chunk)
            best = model(inputs).topk(5, dim=-1).indices
            top1 += int((best[:, 0] == targets).sum())
            top5 += int((best == targets[:, None]).any(dim=1).sum())
            total += len(targets)
        return {"masked_top1": top1 / max(total, 1), "masked_top5": top5 / max(total, 1)}

    report = fit(module, train, dev, Objective(collate, loss, evaluate), options)
    metadata = HeadFileMetadata(
        task="fill-mask",
        architecture=MASKED_LM,
        encoder_name=Path(encoder.model_name).name,
        encoder_fingerprint=encoder.fingerprint,
        hidden_size=encoder.hidden_size,
        extra={
            "head": {
                "layer_mix": arch.layer_mix,
                "private_layers": arch.private_layers,
                "decoder": "tied to the encoder's word embeddings",
            }
        },
    )
    counts = {
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs),
        "train_rows": len(train_rows),
        "train_masked_tokens": sum(len(m.positions) for m in train_rows),
    }
    return TrainedHead("fill-mask", module, metadata, report, counts)


def _encoder_head(encoder: SharedEncoder, arch: HeadArchitecture, outputs: int) -> EncoderHead:
    layers = list(encoder.bert.encoder.layer)
    module = EncoderHead(arch, encoder.config, outputs, pooler=encoder.bert.pooler, private_layer_init=layers)
    return module.to(device=encoder.device, dtype=torch.float32)


def _features(
    encoder: SharedEncoder, module: EncoderHead, rows: list[EncodedRow], options: FeatureOptions, name: str
) -> RaggedFeatures:
    tokens = _reads_tokens(module.architecture)

    def select(outputs: EncoderOutputs, batch_rows: Sequence[EncodedRow]) -> list[torch.Tensor]:
        selected = module.select_features(outputs)
        if isinstance(selected, tuple):
            return [selected[0][i, : len(row)] for i, row in enumerate(batch_rows)]
        return list(selected.unsqueeze(1))

    arch = module.architecture
    selector = f"{'tokens' if tokens else arch.pooling}|mix={arch.layer_mix}|private={arch.private_layers}"
    return extract_features(
        encoder,
        rows,
        select,
        selector_name=selector,
        cache_dir=options.cache_dir,
        batch_size=options.batch_size,
        store_dtype=options.store_dtype,
        description=f"encoding {name}",
    )


def _reads_tokens(arch: HeadArchitecture) -> bool:
    return arch.private_layers > 0 or arch.pooling == "tokens"


def _collate_inputs(rows: Sequence[torch.Tensor], tokens: bool, device: torch.device) -> Any:
    """Pooled rows stacked, or token rows padded with their attention mask."""
    if not tokens:
        return torch.cat(list(rows)).to(device=device, dtype=torch.float32)
    width = max(len(row) for row in rows)
    hidden = torch.zeros((len(rows), width, rows[0].shape[-1]), dtype=torch.float32)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        hidden[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return hidden.to(device), mask.to(device)


def _metadata(task: str, encoder: SharedEncoder, labels: Sequence[str], arch: HeadArchitecture) -> HeadFileMetadata:
    return HeadFileMetadata(
        task=task,
        architecture=ENCODER_HEAD,
        encoder_name=Path(encoder.model_name).name,
        encoder_fingerprint=encoder.fingerprint,
        hidden_size=encoder.hidden_size,
        labels=tuple(labels),
        extra={"head": arch.to_dict()},
    )


def _split(items: Sequence[T], options: TrainingOptions) -> tuple[list[T], list[T]]:
    """A seeded train/dev split; the dev part holds `dev_fraction` of the items (at least one)."""
    if len(items) < 2:
        raise ValueError(f"need at least 2 examples (or documents) to split off a dev set; got {len(items)}")
    order = list(range(len(items)))
    random.Random(options.seed).shuffle(order)
    dev_count = min(len(items) - 1, max(1, math.ceil(len(items) * options.dev_fraction)))
    dev = set(order[:dev_count])
    return [x for i, x in enumerate(items) if i not in dev], [x for i, x in enumerate(items) if i in dev]


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
