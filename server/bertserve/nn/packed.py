"""Padding-free BERT execution: the batch's real tokens only.

A batch of rows is packed into one long sequence of tokens (`PackedRows`).
The token-wise parts of BERT (embeddings, the Q/K/V and output projections,
the feed-forward block, every LayerNorm) run on that concatenation, and
attention runs per sequence, so no work is spent on padding:

- on CUDA in float16/bfloat16, through PyTorch's variable-length (flash)
  attention, one kernel for the whole batch;
- otherwise one `scaled_dot_product_attention` per sequence on views of the
  packed tensors (measured faster on the CPU than length-grouped padded
  blocks: `benchmarks/bench_packed.py`).

Results equal the padded `transformers` forward up to float rounding
(`tests/server/test_packed.py`). `repad` turns packed tensors back into the
right-padded (rows, tokens, ...) layout that heads read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from transformers.models.bert.modeling_bert import BertLayer, BertModel


@dataclass(frozen=True)
class PackedRows:
    """Rows concatenated without padding: row i holds tokens offsets[i]:offsets[i+1]."""

    input_ids: torch.Tensor  # (tokens,)
    token_type_ids: torch.Tensor  # (tokens,)
    position_ids: torch.Tensor  # (tokens,), restarting at 0 for every row
    offsets: tuple[int, ...]  # rows + 1 entries, starting at 0
    cu_seqlens: torch.Tensor  # offsets as int32 on the device (variable-length kernels)

    @property
    def lengths(self) -> list[int]:
        return [end - start for start, end in zip(self.offsets, self.offsets[1:])]

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def tokens(self) -> int:
        return self.offsets[-1]

    @property
    def max_length(self) -> int:
        return max(self.lengths)

    @property
    def first_tokens(self) -> torch.Tensor:
        """Index of each row's first token (its [CLS]) in the packed tensors."""
        return self.cu_seqlens[:-1].long()


def pack(rows: Sequence[tuple[Sequence[int], Sequence[int]]], device: torch.device) -> PackedRows:
    """Pack (input_ids, token_type_ids) rows, none empty, into one sequence on `device`."""
    if not rows or any(len(ids) == 0 for ids, _ in rows):
        raise ValueError("pack needs at least one row and no empty rows")
    offsets = [0]
    input_ids: list[int] = []
    token_type_ids: list[int] = []
    positions: list[int] = []
    for ids, types in rows:
        input_ids.extend(ids)
        token_type_ids.extend(types)
        positions.extend(range(len(ids)))
        offsets.append(len(input_ids))
    return PackedRows(
        input_ids=torch.tensor(input_ids, dtype=torch.long).to(device, non_blocking=True),
        token_type_ids=torch.tensor(token_type_ids, dtype=torch.long).to(device, non_blocking=True),
        position_ids=torch.tensor(positions, dtype=torch.long).to(device, non_blocking=True),
        offsets=tuple(offsets),
        cu_seqlens=torch.tensor(offsets, dtype=torch.int32).to(device, non_blocking=True),
    )


def pack_padded(hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, PackedRows]:
    """The real tokens of a right-padded (rows, tokens, hidden) batch, packed; the inverse of `repad`.

    Only the layout fields of the returned `PackedRows` are meaningful (ids are zero).
    """
    lengths = attention_mask.sum(dim=1).tolist()
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + int(length))
    flat = hidden[attention_mask.bool()]
    zeros = torch.zeros(offsets[-1], dtype=torch.long, device=hidden.device)
    layout = PackedRows(
        input_ids=zeros,
        token_type_ids=zeros,
        position_ids=zeros,
        offsets=tuple(offsets),
        cu_seqlens=torch.tensor(offsets, dtype=torch.int32, device=hidden.device),
    )
    return flat, layout


def repad(packed: torch.Tensor, offsets: Sequence[int], rows: Sequence[int]) -> torch.Tensor:
    """Rows `rows` of a packed (tokens, ...) tensor, right-padded with zeros to (len(rows), longest, ...)."""
    pieces = [packed[offsets[row] : offsets[row + 1]] for row in rows]
    return torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)


def attention_mask_for(offsets: Sequence[int], rows: Sequence[int], device: torch.device) -> torch.Tensor:
    """The (len(rows), longest) 0/1 mask of `repad`'s output."""
    lengths = torch.tensor([offsets[row + 1] - offsets[row] for row in rows], device=device)
    width = int(lengths.max())
    return (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()


def embed(bert: BertModel, packed: PackedRows) -> torch.Tensor:
    """BERT's embedding layer on packed tokens: (tokens, hidden)."""
    embeddings = bert.embeddings
    hidden = embeddings.word_embeddings(packed.input_ids) + embeddings.token_type_embeddings(packed.token_type_ids)
    hidden = hidden + embeddings.position_embeddings(packed.position_ids)
    return embeddings.LayerNorm(hidden)  # type: ignore[no-any-return]


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """Self-attention within each row of packed (tokens, heads, head_size) tensors; same shape out."""
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        from torch.nn.attention.varlen import varlen_attn

        longest = packed.max_length
        out = varlen_attn(query, key, value, packed.cu_seqlens, packed.cu_seqlens, longest, longest)
        return cast(torch.Tensor, out)
    out = torch.empty_like(query)
    offsets = packed.offsets
    for start, end in zip(offsets, offsets[1:]):
        # (1, heads, length, head_size) views of this row; SDPA writes a fresh tensor.
        q, k, v = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (query, key, value))
        out[start:end] = F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1)
    return out


def run_layer(module: torch.nn.Module, hidden: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """One `BertLayer` on packed (tokens, hidden) states, in inference mode (no dropout)."""
    layer: BertLayer = cast(BertLayer, module)
    attention = layer.attention.self
    shape = (hidden.shape[0], attention.num_attention_heads, attention.attention_head_size)
    query = attention.query(hidden).view(shape)
    key = attention.key(hidden).view(shape)
    value = attention.value(hidden).view(shape)
    context = attend(query, key, value, packed).reshape(hidden.shape[0], -1)
    attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + hidden)
    intermediate = layer.intermediate(attended)
    return layer.output.LayerNorm(layer.output.dense(intermediate) + attended)  # type: ignore[no-any-return]


def run_layers(layers: Iterable[torch.nn.Module], hidden: torch.Tensor, packed: PackedRows) -> list[torch.Tensor]:
    """`hidden` through `layers`; returns every layer's output, the last one last."""
    outputs = []
    for layer in layers:
        hidden = run_layer(layer, hidden, packed)
        outputs.append(hidden)
    return outputs


def check_supported(bert: BertModel) -> None:
    """Raise ValueError when `bert` uses options the packed forward does not implement."""
    config: Any = bert.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ValueError("the packed forward serves encoders only (is_decoder / add_cross_attention is set)")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {config.position_embedding_type!r} is not supported")
