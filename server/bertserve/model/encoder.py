"""The one shared BERT encoder: loading, identity and the batched forward."""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoTokenizer, BertForPreTraining, PreTrainedTokenizerBase

from bertserve.model import hub
from bertserve.model.view import ReadOnlyEncoder
from bertserve.nn import packed, quantize
from bertserve.plugin.encoder import EncoderView, Text
from bertserve.plugin.head import EncodedRow, EncoderOutputs
from bertserve.plugin.text import encode

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Prefixes of the BertForPreTraining heads inside a checkpoint, and the keys
# that must all have been loaded for the head to count as pretrained.
_PRETRAINING_HEAD_KEYS = {
    "predictions": (
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
    ),
    "seq_relationship": ("cls.seq_relationship.weight", "cls.seq_relationship.bias"),
}
_POOLER_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
_FINGERPRINT_SAMPLES = 4096


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The activation dtype: ``auto`` is float32 on the CPU and bfloat16 (or float16) on CUDA.

    ``int8`` (see `quantize`) is CPU-only and keeps float32 activations.
    """
    if dtype == quantize.INT8:
        quantize.check_device(device)
        return torch.float32
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}, int8; got {dtype!r}")
    if device.type == "cpu" and dtype != "float32":
        log.warning("%s on the CPU is slow and less exact than float32", dtype)
    return _DTYPES[dtype]


def encoder_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short stable identity of encoder weights, independent of device and dtype.

    Hashes every tensor's name and shape and an evenly strided sample of its
    values in float32, so any fine-tuned or differently initialised encoder
    differs, at a cost of milliseconds even for large models.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
        sample = flat[::step].to(device="cpu", dtype=torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
        digest.update(sample.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:32]


def _from_pretrained(folder: Path) -> tuple[BertForPreTraining, set[str], PreTrainedTokenizerBase]:
    """The float32 model, the checkpoint keys it lacked, and the tokenizer, from a checkpoint folder."""
    with hub.quiet_loading():
        loaded = BertForPreTraining.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
        model, info = cast(tuple[BertForPreTraining, dict[str, Any]], loaded)
    return model, set(info["missing_keys"]), AutoTokenizer.from_pretrained(folder)


@dataclass(frozen=True)
class PackedBatch:
    """Encoder outputs for a packed batch: row i's tokens are `layout.offsets[i]:offsets[i+1]`.

    `hidden_states` holds the embedding output, then every layer's output,
    each (tokens, hidden); the last is `sequence_output`.
    """

    layout: packed.PackedRows
    sequence_output: torch.Tensor
    pooled_output: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...]

    def view(self, rows: Sequence[int], *, hidden_states: bool = False) -> EncoderOutputs:
        """Rows `rows` (indices into the batch), right-padded the way heads read them."""
        offsets = self.layout.offsets
        index = torch.tensor(rows, device=self.sequence_output.device)
        return EncoderOutputs(
            sequence_output=packed.repad(self.sequence_output, offsets, rows),
            pooled_output=self.pooled_output.index_select(0, index) if self.pooled_output is not None else None,
            attention_mask=packed.attention_mask_for(offsets, rows, self.sequence_output.device),
            hidden_states=tuple(packed.repad(h, offsets, rows) for h in self.hidden_states) if hidden_states else None,
        )


class SharedEncoder:
    """One BERT encoder, its tokenizer, and the pretraining heads it shipped with.

    Load it with `SharedEncoder.load`. Heads read `tokenizer`,
    `max_sequence_length`, `word_embeddings` (the tied decoder matrix) and
    `pretraining_head_state(...)`; the batcher calls `forward`. `dtype` is
    the activation dtype heads compute in; with `quantized` (``--dtype
    int8``) it is float32 and the encoder layers' linear layers are int8.
    """

    def __init__(
        self,
        *,
        model_name: str,
        model: BertForPreTraining,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: torch.dtype,
        loaded_keys_missing: set[str],
        max_sequence_length: int,
        fingerprint: str,
        quantized: bool = False,
    ) -> None:
        self.model_name = model_name
        self.bert = model.bert
        self.config = model.config
        self._tokenizer = tokenizer
        self._tokenizer_thread = threading.get_ident()
        self._thread_tokenizers = threading.local()
        self.device = device
        self.dtype = dtype
        self.quantized = quantized
        self.max_sequence_length = max_sequence_length
        self.fingerprint = fingerprint
        self.has_pooler = not any(key in loaded_keys_missing for key in _POOLER_KEYS)
        self._pretraining_heads = {
            prefix: {name: tensor.detach() for name, tensor in getattr(model.cls, prefix).state_dict().items()}
            for prefix, keys in _PRETRAINING_HEAD_KEYS.items()
            if not any(key in loaded_keys_missing for key in keys)
        }
        if "predictions" in self._pretraining_heads:
            # The decoder matrix is the tied word embedding: never keep a copy.
            self._pretraining_heads["predictions"].pop("decoder.weight", None)

    @classmethod
    def load(
        cls,
        model_name: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_sequence_length: int | None = None,
        revision: str | None = None,
        cache_dir: Path | str | None = None,
        progress: bool = True,
    ) -> SharedEncoder:
        """Load encoder, tokenizer and any pretraining heads from a folder or hub id.

        A hub id is read at `revision` from the hub cache `cache_dir`, fetched
        when missing (download bars if `progress`); see `bertserve.model.hub`.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        folder = hub.checkpoint_folder(model_name, revision=revision, cache_dir=cache_dir, progress=progress)
        model, missing, tokenizer = _from_pretrained(folder)
        if not tokenizer.is_fast:
            raise ValueError(f"{model_name}: a fast tokenizer is required (character offsets for QA)")
        fingerprint = encoder_fingerprint(
            (name, tensor) for name, tensor in model.bert.state_dict().items() if not name.startswith("pooler.")
        )
        limit = model.config.max_position_embeddings
        if isinstance(tokenizer.model_max_length, int) and tokenizer.model_max_length > 0:
            limit = min(limit, tokenizer.model_max_length)
        if max_sequence_length is not None:
            if not 8 <= max_sequence_length <= limit:
                raise ValueError(f"max_sequence_length must be between 8 and {limit}; got {max_sequence_length}")
            limit = max_sequence_length
        packed.check_supported(model.bert)
        model.eval().requires_grad_(False)
        model.bert.to(device=torch_device, dtype=torch_dtype)  # type: ignore[call-arg]  # transformers stub
        if dtype == quantize.INT8:  # after the fingerprint, which stays that of the float32 weights
            quantize.quantize_encoder(model.bert)
        encoder = cls(
            model_name=model_name,
            model=model,
            tokenizer=tokenizer,
            device=torch_device,
            dtype=torch_dtype,
            loaded_keys_missing=missing,
            max_sequence_length=limit,
            fingerprint=fingerprint,
            quantized=dtype == quantize.INT8,
        )
        log.info(
            "encoder %s%s loaded on %s (%s), max %d tokens, pretraining heads: %s, pooler: %s",
            model_name,
            "" if folder == Path(model_name).expanduser() else f" (from {folder})",
            torch_device,
            encoder.dtype_name,
            limit,
            ", ".join(sorted(encoder._pretraining_heads)) or "none",
            "yes" if encoder.has_pooler else "no",
        )
        return encoder

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer, one copy per thread.

        A fast tokenizer keeps its truncation and padding settings as mutable
        state, so threads tokenizing at once with different settings would
        race; each thread other than the loading one gets its own copy.
        """
        if threading.get_ident() == self._tokenizer_thread:
            return self._tokenizer
        tokenizer = getattr(self._thread_tokenizers, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self._thread_tokenizers.tokenizer = copy.deepcopy(self._tokenizer)
        return tokenizer

    @property
    def word_embeddings(self) -> torch.nn.Parameter:
        """The input word-embedding matrix, which tied MLM decoders reuse."""
        return self.bert.embeddings.word_embeddings.weight

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def dtype_name(self) -> str:
        """``float32``, ``float16``, ``bfloat16``, or ``int8`` for the quantized encoder."""
        return quantize.INT8 if self.quantized else str(self.dtype).removeprefix("torch.")

    def pretraining_head_state(self, prefix: str) -> dict[str, torch.Tensor] | None:
        """Weights of a `BertForPreTraining` head (``"predictions"`` or
        ``"seq_relationship"``) as loaded from the checkpoint, or None when the
        checkpoint did not contain them. Keys are relative to ``cls.<prefix>.``."""
        state = self._pretraining_heads.get(prefix)
        return dict(state) if state is not None else None

    def forward_packed(self, rows: Sequence[EncodedRow]) -> PackedBatch:
        """Run the encoder once on the real tokens of `rows`, none padded (see `packed`)."""
        layout = packed.pack([(row.input_ids, row.token_type_ids) for row in rows], self.device)
        with torch.inference_mode():
            hidden = packed.embed(self.bert, layout)
            states = [hidden, *packed.run_layers(self.bert.encoder.layer, hidden, layout)]
            pooled = None
            if self.has_pooler:
                pooler: Any = self.bert.pooler
                pooled = pooler(states[-1].index_select(0, layout.first_tokens).unsqueeze(1))
        return PackedBatch(layout, states[-1], pooled, tuple(states))

    def forward_rows(self, rows: Sequence[EncodedRow], *, hidden_states: bool = True) -> EncoderOutputs:
        """Run the encoder once on `rows` (packed) and return every row right-padded, with all layers."""
        return self.forward_packed(rows).view(range(len(rows)), hidden_states=hidden_states)

    def encode_rows(self, rows: Sequence[EncodedRow], *, hidden_states: bool = False) -> EncoderOutputs:
        """`EncoderView.encode_rows`: `forward_rows` for heads at load time."""
        return self.forward_rows(rows, hidden_states=hidden_states)

    def encode_texts(self, texts: Sequence[Text], *, hidden_states: bool = False) -> EncoderOutputs:
        """`EncoderView.encode_texts`: texts (or pairs) tokenized, cut to fit, and run at once."""
        tokenizer, limit = self.tokenizer, self.max_sequence_length
        rows = [
            encode(tokenizer, text, max_length=limit, truncate=True)
            if isinstance(text, str)
            else encode(tokenizer, text[0], text[1], max_length=limit, truncate=True)
            for text in texts
        ]
        return self.forward_rows(rows, hidden_states=hidden_states)

    @property
    def pooler(self) -> torch.nn.Module | None:
        """The pretrained pooler (dense + tanh on the first token), None without pooler weights."""
        return cast(torch.nn.Module, self.bert.pooler) if self.has_pooler else None

    @property
    def embeddings(self) -> torch.nn.Module:
        """The embedding module (word, position and segment embeddings, then LayerNorm)."""
        return cast(torch.nn.Module, self.bert.embeddings)

    def view(self) -> EncoderView:
        """The read-only view heads get (`bertserve.plugin.EncoderView`)."""
        return ReadOnlyEncoder(self)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> EncoderOutputs:
        """Run the `transformers` encoder itself on a padded batch already on `device`.

        The reference the packed forward is checked against; serving uses `forward_packed`.
        """
        with torch.inference_mode():
            out = self.bert(
                input_ids=input_ids,
                token_type_ids=token_type_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,  # already computed; keeping them costs no compute
                return_dict=True,
            )
        pooled = out.pooler_output if self.has_pooler else None
        return EncoderOutputs(out.last_hidden_state, pooled, attention_mask, tuple(out.hidden_states))
