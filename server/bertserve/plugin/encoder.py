"""`EncoderView`: what a head may read of the shared encoder, and the one call that runs it.

A head gets this view in `HeadLoadContext.encoder`. It is read-only: the
server owns the encoder, batches every request through it, and may change
how it computes (packed rows, int8 layers) without a head noticing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedTokenizerBase

    from bertserve.plugin.head import EncodedRow, EncoderOutputs

Text = str | tuple[str, str]
"""A text, or a (text, text_pair) pair for the encoder's two segments."""


class EncoderView(Protocol):
    """The shared encoder as a head sees it.

    Attributes: `model_name` (the checkpoint), `config` (its `BertConfig`),
    `tokenizer` (a copy per thread), `max_sequence_length` (longest row, in
    tokens), `hidden_size`, `device`, `dtype` (the dtype heads compute in),
    `fingerprint` (identifies the weights: head files record it), `has_pooler`,
    `pooler` (the pretrained pooler, None without pooler weights),
    `embeddings` (the embedding module) and `word_embeddings` (its word
    matrix, which tied masked-LM decoders reuse).
    """

    @property
    def model_name(self) -> str: ...
    @property
    def config(self) -> BertConfig: ...
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...
    @property
    def max_sequence_length(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def has_pooler(self) -> bool: ...
    @property
    def pooler(self) -> torch.nn.Module | None: ...
    @property
    def embeddings(self) -> torch.nn.Module: ...
    @property
    def word_embeddings(self) -> torch.nn.Parameter: ...

    def pretraining_head_state(self, prefix: str) -> dict[str, torch.Tensor] | None:
        """Weights of a `BertForPreTraining` head (``"predictions"`` or ``"seq_relationship"``)
        shipped with the checkpoint, keys relative to ``cls.<prefix>.``; None when it had none."""
        ...

    def encode_texts(self, texts: Sequence[Text], *, hidden_states: bool = False) -> EncoderOutputs:
        """Run the shared encoder on `texts` now and return their outputs, row i for text i.

        For `Head.load` (a zero-shot head embedding its label sentences, a
        similarity head its seed texts). Texts longer than the encoder takes
        are cut. Do not call it from `preprocess`, `forward` or `postprocess`:
        requests share the encoder through the batcher.
        """
        ...

    def encode_rows(self, rows: Sequence[EncodedRow], *, hidden_states: bool = False) -> EncoderOutputs:
        """`encode_texts` for rows a head tokenized itself (e.g. with `bertserve.plugin.encode`)."""
        ...
