"""Fill-mask: the checkpoint's own masked-LM head, scored only at mask positions.

The decoder multiplies by the encoder's word-embedding matrix (tied, never
copied), and vocabulary logits are computed for mask positions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from bertserve import (
    EncodedRow,
    EncoderOutputs,
    FillMaskInput,
    FillMaskOutput,
    Head,
    HeadDescription,
    HeadLoadContext,
    HeadUnavailable,
    InputError,
    MaskPredictions,
    SharedEncoder,
    TokenPrediction,
    encode,
    hookimpl,
    require_text,
)
from transformers.activations import ACT2FN

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.0"


class MaskedLMHead(torch.nn.Module):
    """BERT's MLM head: dense + activation + LayerNorm, then the tied decoder."""

    def __init__(self, encoder: SharedEncoder, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        config = encoder.config
        self.dense = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = torch.nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense.weight.data.copy_(state["transform.dense.weight"])
        self.dense.bias.data.copy_(state["transform.dense.bias"])
        self.layer_norm.weight.data.copy_(state["transform.LayerNorm.weight"])
        self.layer_norm.bias.data.copy_(state["transform.LayerNorm.bias"])
        bias = state.get("bias", state.get("decoder.bias"))
        if bias is None:
            raise HeadUnavailable("the checkpoint's masked-LM head has no output bias (cls.predictions.bias)")
        self.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)
        self.decoder_weight = encoder.word_embeddings  # shared, not copied
        self.to(device=encoder.device, dtype=encoder.dtype)
        self.requires_grad_(False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        transformed = self.layer_norm(self.activation(self.dense(hidden)))
        return transformed @ self.decoder_weight.T + self.bias


@dataclass(frozen=True)
class _MaskRow:
    positions: tuple[int, ...]
    top_k: int
    target_ids: tuple[int, ...] | None


class FillMaskHead(Head[FillMaskInput, FillMaskOutput]):
    """Predicts the tokens behind mask tokens with the checkpoint's MLM head."""

    name = "fill-mask"
    task = "fill-mask"
    description = "masked-word prediction with the checkpoint's pretrained MLM head"
    input_type = FillMaskInput
    output_type = FillMaskOutput
    text_fields = ("text",)

    def __init__(self) -> None:
        self._encoder: SharedEncoder | None = None
        self._module: MaskedLMHead | None = None

    def load(self, context: HeadLoadContext) -> HeadDescription:
        state = context.encoder.pretraining_head_state("predictions")
        if state is None:
            raise HeadUnavailable(
                f"{context.encoder.model_name} has no masked-LM head weights (cls.predictions.*); "
                "use a checkpoint saved from BertForPreTraining or BertForMaskedLM (e.g. bert-base-uncased)"
            )
        self._encoder = context.encoder
        self._module = MaskedLMHead(context.encoder, state)
        return HeadDescription(source=f"masked-LM head of {context.encoder.model_name}")

    @property
    def encoder(self) -> SharedEncoder:
        assert self._encoder is not None, "head used before load()"
        return self._encoder

    def preprocess(self, item: FillMaskInput) -> list[EncodedRow]:
        tokenizer = self.encoder.tokenizer
        require_text(item.text, field="text")
        mask = tokenizer.mask_token
        if mask not in item.text:
            raise InputError(f"text has no mask token; mark each word to predict with {mask}", field="text")
        vocab_size = len(tokenizer)
        target_ids = self._target_ids(item.targets) if item.targets else None
        if not 1 <= item.top_k <= vocab_size:
            raise InputError(
                f"top_k must be between 1 and {vocab_size} (the vocabulary size); got {item.top_k}", field="top_k"
            )
        row = encode(tokenizer, item.text, max_length=self.encoder.max_sequence_length, truncate=item.truncate)
        positions = tuple(i for i, token in enumerate(row.input_ids) if token == tokenizer.mask_token_id)
        if not positions:
            raise InputError(
                "truncation removed every mask token; move the mask earlier or shorten the text", field="text"
            )
        top_k = min(item.top_k, len(target_ids)) if target_ids else item.top_k
        row.data = _MaskRow(positions, top_k, target_ids)
        return [row]

    def _target_ids(self, targets: Sequence[str]) -> tuple[int, ...]:
        """Map targets to vocabulary ids as the transformers pipeline does:
        an exact vocabulary entry, else the first token of its tokenization."""
        tokenizer = self.encoder.tokenizer
        vocab = tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            token_id = vocab.get(target)
            if token_id is None:
                pieces = tokenizer(target, add_special_tokens=False)["input_ids"]
                if not pieces:
                    raise InputError(f"target {target!r} maps to no vocabulary token", field="targets")
                token_id = pieces[0]
            if token_id not in ids:
                ids.append(token_id)
        return tuple(ids)

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        assert self._module is not None
        row_index = [i for i, row in enumerate(rows) for _ in row.data.positions]
        token_index = [p for row in rows for p in row.data.positions]
        device = outputs.sequence_output.device
        hidden = outputs.sequence_output[
            torch.tensor(row_index, device=device), torch.tensor(token_index, device=device)
        ]
        probs = self._module(hidden).float().softmax(dim=-1).cpu()
        results: list[Any] = []
        offset = 0
        for row in rows:
            spec: _MaskRow = row.data
            row_probs = probs[offset : offset + len(spec.positions)]
            offset += len(spec.positions)
            if spec.target_ids is not None:
                ids = torch.tensor(spec.target_ids)
                values, picks = row_probs[:, ids].topk(spec.top_k, dim=-1)
                results.append((values, ids[picks]))
            else:
                results.append(row_probs.topk(spec.top_k, dim=-1))
        return results

    def postprocess(self, item: FillMaskInput, rows: Sequence[EncodedRow], results: Sequence[Any]) -> FillMaskOutput:
        tokenizer = self.encoder.tokenizer
        row = rows[0]
        values, token_ids = results[0]
        # The filled sequence drops special tokens, keeping only the text's other masks.
        special = set(tokenizer.all_special_ids)
        other_masks = set(row.data.positions)
        masks = []
        for mask_number, position in enumerate(row.data.positions):
            predictions = []
            for score, token_id in zip(values[mask_number].tolist(), token_ids[mask_number].tolist()):
                filled = list(row.input_ids)
                filled[position] = token_id
                kept = [t for i, t in enumerate(filled) if t not in special or (i in other_masks and i != position)]
                sequence = str(tokenizer.decode(kept))
                predictions.append(
                    TokenPrediction(
                        token=str(tokenizer.convert_ids_to_tokens(token_id)),
                        token_id=token_id,
                        score=score,
                        sequence=sequence,
                    )
                )
            masks.append(MaskPredictions(token_index=position, predictions=tuple(predictions)))
        return FillMaskOutput(masks=tuple(masks))


@hookimpl
def register_heads(register, config):  # type: ignore[no-untyped-def]
    register(FillMaskHead())
