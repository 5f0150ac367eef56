"""What every task's training recipe shares.

`FeatureOptions` says how encoder features are cached and `TrainedHead` is
what a recipe returns. The helpers split data into train and dev parts,
build an `EncoderHead`, cache the encoder features it reads, batch them,
and describe the head in its file's metadata.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow, EncoderOutputs
from bertserve.plugin.headfile import HeadFileMetadata, save_head_file
from bertserve.plugin.modules import EncoderHead, HeadArchitecture
from bertserve.plugin.trained import ENCODER_HEAD
from bertserve.training.features import RaggedFeatures, extract_features
from bertserve.training.loop import FitReport, TrainingOptions

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


def split_dev(items: Sequence[T], options: TrainingOptions) -> tuple[list[T], list[T]]:
    """A seeded train/dev split; the dev part holds `dev_fraction` of the items (at least one)."""
    if len(items) < 2:
        raise ValueError(f"need at least 2 examples (or documents) to split off a dev set; got {len(items)}")
    order = list(range(len(items)))
    random.Random(options.seed).shuffle(order)
    dev_count = min(len(items) - 1, max(1, math.ceil(len(items) * options.dev_fraction)))
    dev = set(order[:dev_count])
    return [x for i, x in enumerate(items) if i not in dev], [x for i, x in enumerate(items) if i in dev]


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def encoder_head(encoder: SharedEncoder, arch: HeadArchitecture, outputs: int) -> EncoderHead:
    """A fresh `EncoderHead` with `outputs` scores, on the encoder's device in float32."""
    layers = list(encoder.bert.encoder.layer)
    module = EncoderHead(arch, encoder.config, outputs, pooler=encoder.bert.pooler, private_layer_init=layers)
    return module.to(device=encoder.device, dtype=torch.float32)


def encoder_head_samples(
    encoder: SharedEncoder,
    module: EncoderHead,
    rows: list[EncodedRow],
    targets: Sequence[T],
    options: FeatureOptions,
    name: str,
) -> list[tuple[torch.Tensor, T]]:
    """Each row's cached features (what `module` reads) paired with its target."""
    features = encoder_head_features(encoder, module, rows, options, name)
    return [(features.row(i), target) for i, target in enumerate(targets)]


def encoder_head_features(
    encoder: SharedEncoder, module: EncoderHead, rows: list[EncodedRow], options: FeatureOptions, name: str
) -> RaggedFeatures:
    """The features `module` reads of each row: one pooled vector, or every token's state."""
    tokens = reads_tokens(module.architecture)

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


def reads_tokens(arch: HeadArchitecture) -> bool:
    """Whether a head with `arch` reads every token's state rather than one pooled vector."""
    return arch.private_layers > 0 or arch.pooling == "tokens"


def collate_inputs(rows: Sequence[torch.Tensor], tokens: bool, device: torch.device) -> Any:
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


def head_metadata(task: str, encoder: SharedEncoder, labels: Sequence[str], arch: HeadArchitecture) -> HeadFileMetadata:
    """The head file's metadata for an `EncoderHead` trained for `task`."""
    return HeadFileMetadata(
        task=task,
        architecture=ENCODER_HEAD,
        encoder_name=Path(encoder.model_name).name,
        encoder_fingerprint=encoder.fingerprint,
        hidden_size=encoder.hidden_size,
        labels=tuple(labels),
        extra={"head": arch.to_dict()},
    )
