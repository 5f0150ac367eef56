"""Sentence embeddings: the mean of the shared encoder's token states.

The embedding is computed as sentence-transformers' mean pooling does: the
average of the last hidden states over the text's real tokens (special
tokens included, padding excluded), optionally scaled to unit L2 length, in
float32 whatever the encoder's dtype. It needs no weights, so it loads on
any encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bertserve.plugin import (
    EncodedRow,
    EncoderOutputs,
    EncoderView,
    Head,
    HeadDescription,
    HeadLoadContext,
    PluginSettings,
    encode,
    hookimpl,
    require_text,
)

__all__ = ["SentenceEmbeddingHead", "SentenceEmbeddingInput", "SentenceEmbeddingOutput", "register_heads"]

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.1"

# As torch.nn.functional.normalize: a zero vector stays zero.
_NORM_EPSILON = 1e-12


@dataclass(frozen=True)
class SentenceEmbeddingInput:
    """One text to embed."""

    text: str = field(metadata={"description": "the text", "minLength": 1})
    normalize: bool = field(
        default=True,
        metadata={"description": "scale the embedding to unit L2 length, so a dot product is the cosine similarity"},
    )
    truncate: bool = field(default=False, metadata={"description": "cut an over-long text instead of rejecting it"})


@dataclass(frozen=True)
class SentenceEmbeddingOutput:
    """The mean-pooled embedding of a text."""

    embedding: tuple[float, ...] = field(metadata={"description": "the embedding, `dimensions` numbers"})
    dimensions: int = field(metadata={"description": "the encoder's hidden size"})


class SentenceEmbeddingHead(Head[SentenceEmbeddingInput, SentenceEmbeddingOutput]):
    """Embeds a text as the mean of the encoder's last hidden states."""

    name = "sentence-embedding"
    task = "sentence-embedding"
    description = "sentence embedding: mean of the token states over the attention mask, optionally L2-normalised"
    input_type = SentenceEmbeddingInput
    output_type = SentenceEmbeddingOutput
    text_fields = ("text",)

    def __init__(self) -> None:
        self._encoder: EncoderView | None = None

    def load(self, context: HeadLoadContext) -> HeadDescription:
        self._encoder = context.encoder
        return HeadDescription(source=f"mean pooling of {context.encoder.model_name} (no weights)")

    def preprocess(self, item: SentenceEmbeddingInput) -> list[EncodedRow]:
        assert self._encoder is not None, "head used before load()"
        require_text(item.text, field="text")
        return [
            encode(
                self._encoder.tokenizer, item.text, max_length=self._encoder.max_sequence_length, truncate=item.truncate
            )
        ]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        hidden = outputs.sequence_output.float()
        mask = outputs.attention_mask.unsqueeze(-1).to(hidden.dtype)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        means = ((hidden * mask).sum(dim=1) / counts).cpu().numpy()
        return list(means)

    def postprocess(
        self, item: SentenceEmbeddingInput, rows: Sequence[EncodedRow], results: Sequence[Any]
    ) -> SentenceEmbeddingOutput:
        vector: np.ndarray = results[0]
        if item.normalize:
            vector = vector / max(float(np.linalg.norm(vector)), _NORM_EPSILON)
        return SentenceEmbeddingOutput(embedding=tuple(float(x) for x in vector), dimensions=len(vector))


@hookimpl
def register_heads(register: Callable[[Head[Any, Any]], None], config: PluginSettings) -> None:
    register(SentenceEmbeddingHead())
