"""Run the frozen encoder once over training rows and cache what a head reads.

The encoder runs exactly as when serving (`SharedEncoder.forward` on padded
batches); a selector picks each row's features from the outputs. The result
is saved under a key made of the encoder's fingerprint, the selector and the
rows' token ids, so a second run on the same data reuses it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow, EncoderOutputs

log = logging.getLogger(__name__)

# Per row of a batch, a tensor whose first dimension counts that row's items
# (1 for a pooled vector, its tokens, or its mask positions).
Selector = Callable[[EncoderOutputs, Sequence[EncodedRow]], list[torch.Tensor]]


@dataclass
class RaggedFeatures:
    """Features of N rows, row i holding `counts[i]` items, stored end to end."""

    values: torch.Tensor
    counts: list[int]

    def __post_init__(self) -> None:
        self._offsets = [0]
        for count in self.counts:
            self._offsets.append(self._offsets[-1] + count)

    def __len__(self) -> int:
        return len(self.counts)

    def row(self, index: int) -> torch.Tensor:
        return self.values[self._offsets[index] : self._offsets[index + 1]]


def extract_features(
    encoder: SharedEncoder,
    rows: Sequence[EncodedRow],
    select: Selector,
    *,
    selector_name: str,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    store_dtype: torch.dtype = torch.float32,
    description: str = "encoding",
) -> RaggedFeatures:
    """Features of every row, from the cache when this exact job ran before."""
    key = _cache_key(encoder, rows, selector_name, store_dtype)
    path = cache_dir / f"{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        stored = torch.load(path, weights_only=True)
        log.info("reusing cached features %s", path)
        return RaggedFeatures(stored["values"], list(stored["counts"]))
    per_row: list[torch.Tensor | None] = [None] * len(rows)
    for indices, batch_rows, outputs in encode_in_batches(encoder, rows, batch_size, description):
        for i, value in zip(indices, select(outputs, batch_rows)):
            per_row[i] = value.detach().to(device="cpu", dtype=store_dtype)
    ready = [value for value in per_row if value is not None]
    features = RaggedFeatures(torch.cat(ready) if ready else torch.empty(0), [len(value) for value in ready])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"values": features.values, "counts": features.counts}, path)
        log.info("cached features in %s", path)
    return features


def encode_in_batches(
    encoder: SharedEncoder, rows: Sequence[EncodedRow], batch_size: int, description: str
) -> Iterator[tuple[list[int], list[EncodedRow], EncoderOutputs]]:
    """Run the encoder over `rows` in batches of similar length (little padding),
    yielding each batch's row indices, rows and outputs, with a progress bar."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for indices in tqdm(batches, desc=description, unit="batch", leave=False):
        batch_rows = [rows[i] for i in indices]
        yield indices, batch_rows, run_encoder(encoder, batch_rows)


def run_encoder(encoder: SharedEncoder, rows: Sequence[EncodedRow]) -> EncoderOutputs:
    """Run the shared encoder once on `rows`; every row right-padded, with every layer's output."""
    return encoder.forward_rows(rows)


def _cache_key(encoder: SharedEncoder, rows: Sequence[EncodedRow], selector_name: str, dtype: torch.dtype) -> str:
    digest = hashlib.sha256(f"{encoder.fingerprint}|{encoder.dtype_name}|{selector_name}|{dtype}\n".encode())
    for row in rows:
        digest.update(repr((row.input_ids, row.token_type_ids)).encode())
    return digest.hexdigest()[:24]
