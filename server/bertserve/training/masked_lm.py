"""Train the fill-mask head: BERT's masked-LM transform on the frozen encoder.

Documents are packed into rows with random tokens masked, and only the
features at the masked positions are cached (or, with private layers, the
whole rows below them). The decoder stays tied to the encoder's word
embeddings; the head learns the transform and the output bias. Dev top-1
and top-5 accuracy at the masks are reported, top-1 decides early stopping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow, EncoderOutputs
from bertserve.plugin.headfile import HeadFileMetadata
from bertserve.plugin.modules import HeadArchitecture, MaskedLMModule
from bertserve.plugin.trained import MASKED_LM
from bertserve.training.data import Document, read_documents
from bertserve.training.examples import MaskedRow, masked_lm_rows
from bertserve.training.features import Selector, extract_features
from bertserve.training.loop import Objective, TrainingOptions, fit
from bertserve.training.shared import FeatureOptions, TrainedHead, chunks, collate_inputs, split_dev

MASKED_LM_LENGTH = 128  # the longest row trained on, whatever the encoder allows

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # cached features, mask positions, target token ids
Batch = tuple[Any, torch.Tensor]


def masked_lm_architecture(architecture: HeadArchitecture | None, encoder: SharedEncoder) -> HeadArchitecture:
    """`architecture` (by default plain token reading), checked for what a masked-LM head takes."""
    arch = architecture or HeadArchitecture(pooling="tokens")
    if arch.layer_mix and arch.private_layers:
        raise ValueError("a masked-LM head takes --layer-mix or --private-layers, not both")
    if not 0 <= arch.private_layers <= int(encoder.config.num_hidden_layers):
        raise ValueError(f"private_layers must be between 0 and {encoder.config.num_hidden_layers}")
    return arch


def train_masked_lm(
    encoder: SharedEncoder,
    data: Path,
    options: TrainingOptions,
    features: FeatureOptions,
    copies: int,
    arch: HeadArchitecture,
) -> TrainedHead:
    """Train a fill-mask head on the documents in `data`, seeing `copies` maskings of the train part."""
    train_docs, dev_docs = split_dev(read_documents(data), options)
    tokenizer, limit = encoder.tokenizer, min(encoder.max_sequence_length, MASKED_LM_LENGTH)
    train_rows = masked_lm_rows(tokenizer, train_docs, max_length=limit, seed=options.seed, copies=copies)
    dev_rows = masked_lm_rows(tokenizer, dev_docs, max_length=limit, seed=options.seed + 1)
    module = masked_lm_module(encoder, arch)
    select = mask_selector(module, arch.private_layers, encoder.device)
    train = masked_samples(encoder, train_rows, select, arch, features, "train")
    dev = masked_samples(encoder, dev_rows, select, arch, features, "dev")
    start_from_unigrams(module, train)
    objective = masked_lm_objective(arch.private_layers > 0, encoder.device)
    report = fit(module, train, dev, objective, options)
    counts = masked_lm_counts(train_docs, dev_docs, train_rows)
    return TrainedHead("fill-mask", module, masked_lm_metadata(encoder, arch), report, counts)


def masked_lm_module(encoder: SharedEncoder, arch: HeadArchitecture) -> MaskedLMModule:
    """A fresh masked-LM head, its decoder tied to a float32 copy of the word embeddings."""
    embeddings = encoder.word_embeddings.detach().to(torch.float32)
    module = MaskedLMModule(
        encoder.config,
        embeddings,
        layer_mix=arch.layer_mix,
        private_layers=arch.private_layers,
        private_layer_init=list(encoder.bert.encoder.layer),
    )
    return module.to(device=encoder.device, dtype=torch.float32)


def mask_selector(module: MaskedLMModule, private_layers: int, device: torch.device) -> Selector:
    """Picks what `module` reads of each row: the features at its mask positions, or
    with private layers the whole row from the layer below them."""

    def select(outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[torch.Tensor]:
        if private_layers:  # whole rows: the private layers attend over every token
            assert outputs.hidden_states is not None
            below = outputs.hidden_states[-(private_layers + 1)]
            return [below[i, : len(row)] for i, row in enumerate(rows)]
        found = []
        for i, row in enumerate(rows):
            tokens = torch.tensor(row.data, device=device)
            found.append(module.select_features(outputs, torch.full_like(tokens, i), tokens))
        return found

    return select


def masked_samples(
    encoder: SharedEncoder,
    masked: list[MaskedRow],
    select: Selector,
    arch: HeadArchitecture,
    options: FeatureOptions,
    name: str,
) -> list[Sample]:
    """Each masked row's cached features with its mask positions and target token ids."""
    rows = [EncodedRow(m.row.input_ids, m.row.token_type_ids, data=m.positions) for m in masked]
    found = extract_features(
        encoder,
        rows,
        select,
        selector_name=f"mask-positions|mix={arch.layer_mix}|private={arch.private_layers}",
        cache_dir=options.cache_dir,
        batch_size=options.batch_size,
        store_dtype=options.store_dtype,
        description=f"encoding {name}",
    )
    return [(found.row(i), torch.tensor(m.positions), torch.tensor(m.targets)) for i, m in enumerate(masked)]


def start_from_unigrams(module: MaskedLMModule, train: Sequence[Sample]) -> None:
    """Set the output bias to the training targets' smoothed log unigram frequencies:
    learning that from a zero bias takes thousands of steps."""
    with torch.no_grad():
        seen = torch.bincount(torch.cat([t for _, _, t in train]), minlength=module.bias.numel()).float()
        module.bias.copy_(torch.log((seen + 0.1) / (seen.sum() + 0.1 * seen.numel())))


def masked_lm_objective(private: bool, device: torch.device) -> Objective[Sample, Batch]:
    """Cross-entropy over the vocabulary at every mask; dev top-1, then top-5, accuracy."""

    def collate(batch: Sequence[Sample]) -> Batch:
        targets = torch.cat([t for _, _, t in batch]).to(device)
        if not private:
            return torch.cat([h for h, _, _ in batch]).to(device=device, dtype=torch.float32), targets
        hidden, mask = collate_inputs([h for h, _, _ in batch], True, device)
        row_index = torch.cat([torch.full((len(p),), i) for i, (_, p, _) in enumerate(batch)]).to(device)
        token_index = torch.cat([p for _, p, _ in batch]).to(device)
        return (hidden, mask, row_index, token_index), targets

    def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(model(inputs), targets)

    def evaluate(model: torch.nn.Module, samples: Sequence[Sample]) -> dict[str, float]:
        top1 = top5 = total = 0
        for chunk in chunks(samples, 64 if private else 256):
            inputs, targets = collate(chunk)
            best = model(inputs).topk(5, dim=-1).indices
            top1 += int((best[:, 0] == targets).sum())
            top5 += int((best == targets[:, None]).any(dim=1).sum())
            total += len(targets)
        return {"masked_top1": top1 / max(total, 1), "masked_top5": top5 / max(total, 1)}

    return Objective(collate, loss, evaluate)


def masked_lm_metadata(encoder: SharedEncoder, arch: HeadArchitecture) -> HeadFileMetadata:
    """The head file's metadata for a masked-LM head."""
    return HeadFileMetadata(
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


def masked_lm_counts(
    train_docs: list[Document], dev_docs: list[Document], train_rows: list[MaskedRow]
) -> dict[str, int]:
    """How much text training saw, for the head file's training record."""
    return {
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs),
        "train_rows": len(train_rows),
        "train_masked_tokens": sum(len(m.positions) for m in train_rows),
    }
