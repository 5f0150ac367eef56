"""Fill-mask: a masked-LM head scored only at mask positions.

Which weights load, first found: ``--head-file fill-mask=...`` (written by
`bertserve train-head fill-mask`), the checkpoint's own ``cls.predictions``
head, the head trained for the default encoder.

The decoder multiplies by the encoder's word-embedding matrix (tied, never
copied), and vocabulary logits are computed for mask positions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from bertserve.plugin import (
    EncodedRow,
    EncoderOutputs,
    EncoderView,
    FillMaskInput,
    FillMaskOutput,
    Head,
    HeadDescription,
    HeadLoadContext,
    HeadUnavailable,
    InputError,
    MaskedLMModule,
    MaskPredictions,
    PluginSettings,
    TokenPrediction,
    encode,
    hookimpl,
    load_masked_lm,
    masked_lm_from_state,
    require_text,
)

from .default_heads import configured_or_packaged

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.1"


@dataclass(frozen=True)
class _MaskRow:
    positions: tuple[int, ...]
    top_k: int
    target_ids: tuple[int, ...] | None


class FillMaskHead(Head[FillMaskInput, FillMaskOutput]):
    """Predicts the tokens behind mask tokens with a masked-LM head."""

    name = "fill-mask"
    task = "fill-mask"
    description = "masked-word prediction (head file or the checkpoint's MLM head)"
    input_type = FillMaskInput
    output_type = FillMaskOutput
    text_fields = ("text",)

    def __init__(self) -> None:
        self._encoder: EncoderView | None = None
        self._module: MaskedLMModule | None = None

    def warmup_input(self) -> FillMaskInput:
        assert self._encoder is not None, "head used before load()"
        return FillMaskInput(text=f"The capital of France is {self._encoder.tokenizer.mask_token}.")

    def load(self, context: HeadLoadContext) -> HeadDescription:
        encoder = context.encoder
        self._encoder = encoder
        state = encoder.pretraining_head_state("predictions")
        if context.head_file is None and state is not None:
            self._module = masked_lm_from_state(state, encoder, encoder.model_name)
            return HeadDescription(source=f"masked-LM head of {encoder.model_name}")
        path = configured_or_packaged(self.name, context)
        if path is None:
            raise HeadUnavailable(
                f"{encoder.model_name} has no masked-LM head weights (cls.predictions.*) and no head file was "
                "given; use a checkpoint saved from BertForPreTraining or BertForMaskedLM (e.g. bert-base-uncased), "
                f"or train one: bertserve train-head fill-mask ... and --head-file {self.name}=PATH"
            )
        self._module = load_masked_lm(path, head_name=self.name, encoder=encoder)
        self.needs_hidden_states = self._module.needs_hidden_states
        if self._module.private_layers is not None:
            reads = f"{len(self._module.private_layers)} private layer(s)"
        else:
            reads = "a mix of all layers" if self._module.layer_mix else "the last layer"
        return HeadDescription(source=f"head file {path} (masked-LM transform on {reads}, tied decoder)")

    @property
    def encoder(self) -> EncoderView:
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
        hidden = self._module.select_features(
            outputs, torch.tensor(row_index, device=device), torch.tensor(token_index, device=device)
        )
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
def register_heads(register: Callable[[Head[Any, Any]], None], config: PluginSettings) -> None:
    register(FillMaskHead())
