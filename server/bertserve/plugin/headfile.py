"""Head files: one safetensors file holding a head's weights and its metadata.

The JSON metadata sits in the safetensors header under ``bertserve.head``:
task, labels, architecture, and the identity of the encoder the head was
trained on, so a head is never served on an encoder it does not fit.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bertserve.plugin.encoder import EncoderView
from bertserve.plugin.errors import HeadUnavailable

METADATA_KEY = "bertserve.head"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class HeadFileMetadata:
    """What a head file says about itself."""

    task: str
    architecture: str
    encoder_name: str
    encoder_fingerprint: str
    hidden_size: int
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "task": self.task,
                "architecture": self.architecture,
                "labels": list(self.labels),
                "encoder": {
                    "name": self.encoder_name,
                    "fingerprint": self.encoder_fingerprint,
                    "hidden_size": self.hidden_size,
                },
                **self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> HeadFileMetadata:
        raw = json.loads(text)
        encoder = raw.pop("encoder")
        raw.pop("format_version", None)
        return cls(
            task=raw.pop("task"),
            architecture=raw.pop("architecture"),
            labels=tuple(raw.pop("labels", ())),
            encoder_name=encoder["name"],
            encoder_fingerprint=encoder["fingerprint"],
            hidden_size=int(encoder["hidden_size"]),
            extra=raw,
        )


def save_head_file(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: HeadFileMetadata) -> None:
    """Write `tensors` and `metadata` to a head file."""
    contiguous = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    save_file(contiguous, str(path), metadata={METADATA_KEY: metadata.to_json()})


def read_head_metadata(path: Path) -> HeadFileMetadata | None:
    """The metadata of a head file, or None when it is unreadable or not a head file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        return HeadFileMetadata.from_json(header[METADATA_KEY])
    except (OSError, ValueError, RuntimeError, KeyError, TypeError):
        return None


def load_head_file(
    path: Path | None,
    *,
    head_name: str,
    task: str,
    architecture: str | Collection[str],
    encoder: EncoderView,
) -> tuple[dict[str, torch.Tensor], HeadFileMetadata]:
    """Read a head file for `head_name`, refusing one that does not fit.

    Raises `HeadUnavailable` when no file was given, the file is unreadable,
    is for another task or architecture, or was trained on another encoder
    (naming both).
    """
    if path is None:
        raise HeadUnavailable(f"no head file given; train one and start the server with --head-file {head_name}=PATH")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, ValueError, RuntimeError) as error:  # missing file, or not a safetensors file
        raise HeadUnavailable(f"cannot read head file {path}: {error}") from error
    if METADATA_KEY not in header:
        raise HeadUnavailable(f"{path} is not a bertserve head file (no {METADATA_KEY!r} metadata)")
    try:
        metadata = HeadFileMetadata.from_json(header[METADATA_KEY])
    except (KeyError, TypeError, ValueError) as error:
        raise HeadUnavailable(f"{path} has malformed head metadata: {error!r}") from error
    if metadata.task != task:
        raise HeadUnavailable(f"{path} holds a {metadata.task!r} head, not a {task!r} head")
    accepted = (architecture,) if isinstance(architecture, str) else tuple(architecture)
    if metadata.architecture not in accepted:
        raise HeadUnavailable(
            f"{path}: architecture {metadata.architecture!r} is not one this head reads ({', '.join(accepted)})"
        )
    if metadata.encoder_fingerprint != encoder.fingerprint:
        raise HeadUnavailable(
            f"{path} was trained on encoder {metadata.encoder_name!r} ({metadata.encoder_fingerprint}), "
            f"but this server runs {encoder.model_name!r} ({encoder.fingerprint}); "
            "train the head on this encoder or start the server with the other one"
        )
    return tensors, metadata


def frozen_linear(
    tensors: Mapping[str, torch.Tensor], prefix: str, out_features: int, encoder: EncoderView, source: object
) -> torch.nn.Linear:
    """A frozen ``Linear(hidden_size, out_features)`` on the encoder's device and
    dtype from ``{prefix}.weight`` and ``{prefix}.bias``; `source` names the
    weights' origin in the `HeadUnavailable` raised when they do not fit."""
    expected = (out_features, encoder.hidden_size)
    try:
        weight, bias = tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]
    except KeyError as missing:
        raise HeadUnavailable(f"{source} has no tensor {missing}") from None
    if tuple(weight.shape) != expected or tuple(bias.shape) != (out_features,):
        raise HeadUnavailable(
            f"{source}: {prefix}.weight is {tuple(weight.shape)}, expected {expected} for this head and encoder"
        )
    linear = torch.nn.Linear(encoder.hidden_size, out_features)
    linear.load_state_dict({"weight": weight, "bias": bias})
    return linear.to(device=encoder.device, dtype=encoder.dtype).requires_grad_(False)
