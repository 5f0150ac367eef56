"""Next-sentence prediction: a head file, else the checkpoint's pretrained NSP head.

Which weights load, first found: ``--head-file next-sentence=...`` (written by
`bertserve train-head next-sentence`), the checkpoint's own
``cls.seq_relationship`` layer, the head trained for the default encoder.
Output 0 means "B is the continuation of A", as in BERT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bertserve.plugin import (
    EncodedRow,
    EncoderHead,
    EncoderOutputs,
    EncoderView,
    Head,
    HeadArchitecture,
    HeadDescription,
    HeadLoadContext,
    HeadUnavailable,
    NextSentenceInput,
    NextSentenceOutput,
    PluginSettings,
    encode,
    hookimpl,
    load_encoder_head,
    require_text,
)

from .default_heads import configured_or_packaged

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.1"


class NextSentenceHead(Head[NextSentenceInput, NextSentenceOutput]):
    """P(B follows A) from a two-way classifier on the shared encoder."""

    name = "next-sentence"
    task = "next-sentence"
    description = "next-sentence prediction (head file or the checkpoint's NSP head)"
    input_type = NextSentenceInput
    output_type = NextSentenceOutput
    text_fields = ("first", "second")

    def __init__(self) -> None:
        self._encoder: EncoderView | None = None
        self._module: EncoderHead | None = None

    def load(self, context: HeadLoadContext) -> HeadDescription:
        encoder = context.encoder
        self._encoder = encoder
        state = encoder.pretraining_head_state("seq_relationship")
        if context.head_file is None and state is not None:
            if not encoder.has_pooler:
                raise HeadUnavailable(f"{encoder.model_name} has no pooler weights, which its NSP head reads")
            module = EncoderHead(HeadArchitecture(pooling="pooled"), encoder.config, 2, pooler=encoder.pooler)
            module.output.load_state_dict(state)
            self._module = module.to(device=encoder.device, dtype=encoder.dtype).eval().requires_grad_(False)
            return HeadDescription(source=f"next-sentence head of {encoder.model_name}")
        path = configured_or_packaged(self.name, context)
        if path is None:
            raise HeadUnavailable(
                f"{encoder.model_name} has no next-sentence head weights (cls.seq_relationship.*) and no head "
                "file was given; use a checkpoint saved from BertForPreTraining or BertForNextSentencePrediction, "
                f"or train one: bertserve train-head next-sentence ... and --head-file {self.name}=PATH"
            )
        self._module, _ = load_encoder_head(path, head_name=self.name, task=self.task, encoder=encoder, num_outputs=2)
        self.needs_hidden_states = self._module.architecture.needs_hidden_states()
        return HeadDescription(source=f"head file {path} ({self._module.architecture.describe()})")

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
        assert self._module is not None
        probs = self._module(self._module.select_features(outputs)).float().softmax(dim=-1)
        # Label 0 of BERT's NSP head is "B is the continuation of A".
        return probs[:, 0].cpu().tolist()

    def postprocess(
        self, item: NextSentenceInput, rows: Sequence[EncodedRow], results: Sequence[Any]
    ) -> NextSentenceOutput:
        return NextSentenceOutput(is_next_probability=float(results[0]))


@hookimpl
def register_heads(register: Callable[[Head[Any, Any]], None], config: PluginSettings) -> None:
    register(NextSentenceHead())
