"""`ReadOnlyEncoder`: the shared encoder as heads see it, with exactly the documented attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from bertserve.plugin.encoder import Text
from bertserve.plugin.head import EncodedRow, EncoderOutputs

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedTokenizerBase

    from bertserve.model.encoder import SharedEncoder


class ReadOnlyEncoder:
    """An `EncoderView` of a `SharedEncoder`: reads through, refuses writes, offers nothing else."""

    __slots__ = ("_encoder",)
    _encoder: SharedEncoder

    def __init__(self, encoder: SharedEncoder) -> None:
        object.__setattr__(self, "_encoder", encoder)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"the encoder view is read-only: {name!r} cannot be set")

    def __repr__(self) -> str:
        return f"<EncoderView of {self._encoder.model_name} on {self._encoder.device}>"

    @property
    def model_name(self) -> str:
        return self._encoder.model_name

    @property
    def config(self) -> BertConfig:
        return self._encoder.config

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._encoder.tokenizer

    @property
    def max_sequence_length(self) -> int:
        return self._encoder.max_sequence_length

    @property
    def hidden_size(self) -> int:
        return self._encoder.hidden_size

    @property
    def device(self) -> torch.device:
        return self._encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self._encoder.dtype

    @property
    def fingerprint(self) -> str:
        return self._encoder.fingerprint

    @property
    def has_pooler(self) -> bool:
        return self._encoder.has_pooler

    @property
    def pooler(self) -> torch.nn.Module | None:
        return self._encoder.pooler

    @property
    def embeddings(self) -> torch.nn.Module:
        return self._encoder.embeddings

    @property
    def word_embeddings(self) -> torch.nn.Parameter:
        return self._encoder.word_embeddings

    def pretraining_head_state(self, prefix: str) -> dict[str, torch.Tensor] | None:
        return self._encoder.pretraining_head_state(prefix)

    def encode_texts(self, texts: Sequence[Text], *, hidden_states: bool = False) -> EncoderOutputs:
        return self._encoder.encode_texts(texts, hidden_states=hidden_states)

    def encode_rows(self, rows: Sequence[EncodedRow], *, hidden_states: bool = False) -> EncoderOutputs:
        return self._encoder.encode_rows(rows, hidden_states=hidden_states)
