"""Next-sentence prediction with the checkpoint's pretrained NSP head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from bertserve import (
    EncodedRow,
    EncoderOutputs,
    Head,
    HeadDescription,
    HeadLoadContext,
    HeadUnavailable,
    NextSentenceInput,
    NextSentenceOutput,
    SharedEncoder,
    encode,
    frozen_linear,
    hookimpl,
    require_text,
)

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.0"


class NextSentenceHead(Head[NextSentenceInput, NextSentenceOutput]):
    """P(B follows A) from BERT's seq_relationship layer on the pooled output."""

    name = "next-sentence"
    task = "next-sentence"
    description = "next-sentence prediction with the checkpoint's pretrained NSP head"
    input_type = NextSentenceInput
    output_type = NextSentenceOutput
    text_fields = ("first", "second")

    def __init__(self) -> None:
        self._encoder: SharedEncoder | None = None
        self._linear: torch.nn.Linear | None = None

    def load(self, context: HeadLoadContext) -> HeadDescription:
        encoder = context.encoder
        state = encoder.pretraining_head_state("seq_relationship")
        if state is None:
            raise HeadUnavailable(
                f"{encoder.model_name} has no next-sentence head weights (cls.seq_relationship.*); "
                "use a checkpoint saved from BertForPreTraining or BertForNextSentencePrediction"
            )
        if not encoder.has_pooler:
            raise HeadUnavailable(f"{encoder.model_name} has no pooler weights, which next-sentence prediction needs")
        self._linear = frozen_linear(
            {f"seq_relationship.{name}": tensor for name, tensor in state.items()},
            "seq_relationship",
            2,
            encoder,
            encoder.model_name,
        )
        self._encoder = encoder
        return HeadDescription(source=f"next-sentence head of {encoder.model_name}")

    def preprocess(self, item: NextSentenceInput) -> list[EncodedRow]:
        assert self._encoder is not None, "head used before load()"
        require_text(item.first, field="first", what="first sentence")
        require_text(item.second, field="second", what="second sentence")
        return [
            encode(
                self._encoder.tokenizer,
                item.first,
                item.second,
                max_length=self._encoder.max_sequence_length,
                truncate=item.truncate,
            )
        ]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        assert self._linear is not None and outputs.pooled_output is not None
        probs = self._linear(outputs.pooled_output).float().softmax(dim=-1)
        # Label 0 of BERT's NSP head is "B is the continuation of A".
        return probs[:, 0].cpu().tolist()

    def postprocess(
        self, item: NextSentenceInput, rows: Sequence[EncodedRow], results: Sequence[Any]
    ) -> NextSentenceOutput:
        return NextSentenceOutput(is_next_probability=float(results[0]))


@hookimpl
def register_heads(register, config):  # type: ignore[no-untyped-def]
    register(NextSentenceHead())
