"""Sentiment: a classification head file on the pooled output of the shared encoder.

The head file holds ``classifier.weight`` and ``classifier.bias`` in the
layout of `BertForSequenceClassification`, plus the label names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from bertserve import (
    ClassificationOutput,
    EncodedRow,
    EncoderOutputs,
    Head,
    HeadDescription,
    HeadLoadContext,
    HeadUnavailable,
    LabelScore,
    SharedEncoder,
    TextClassificationInput,
    encode,
    frozen_linear,
    hookimpl,
    load_head_file,
    require_text,
)

ARCHITECTURE = "pooled-linear"

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.0"


class SentimentHead(Head[TextClassificationInput, ClassificationOutput]):
    """Labels a text with a linear classifier on BERT's pooled output."""

    name = "sentiment"
    task = "sentiment"
    description = "sentiment classification from a head file (pooled output + linear layer)"
    input_type = TextClassificationInput
    output_type = ClassificationOutput
    text_fields = ("text",)

    def __init__(self) -> None:
        self._encoder: SharedEncoder | None = None
        self._classifier: torch.nn.Linear | None = None
        self.labels: tuple[str, ...] = ()

    def load(self, context: HeadLoadContext) -> HeadDescription:
        encoder = context.encoder
        tensors, metadata = load_head_file(
            context.head_file, head_name=self.name, task=self.task, architecture=ARCHITECTURE, encoder=encoder
        )
        if not encoder.has_pooler:
            raise HeadUnavailable(f"{encoder.model_name} has no pooler weights, which this head reads")
        self._classifier = frozen_linear(tensors, "classifier", len(metadata.labels), encoder, context.head_file)
        self._encoder = encoder
        self.labels = metadata.labels
        return HeadDescription(source=f"head file {context.head_file}", labels=metadata.labels)

    def preprocess(self, item: TextClassificationInput) -> list[EncodedRow]:
        assert self._encoder is not None, "head used before load()"
        require_text(item.text, field="text")
        return [
            encode(
                self._encoder.tokenizer, item.text, max_length=self._encoder.max_sequence_length, truncate=item.truncate
            )
        ]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        assert self._classifier is not None and outputs.pooled_output is not None
        return self._classifier(outputs.pooled_output).float().softmax(dim=-1).cpu().tolist()

    def postprocess(
        self, item: TextClassificationInput, rows: Sequence[EncodedRow], results: Sequence[Any]
    ) -> ClassificationOutput:
        probs: list[float] = results[0]
        best = max(range(len(probs)), key=probs.__getitem__)
        return ClassificationOutput(
            label=self.labels[best],
            score=probs[best],
            scores=tuple(LabelScore(label, score) for label, score in zip(self.labels, probs)),
        )


@hookimpl
def register_heads(register, config):  # type: ignore[no-untyped-def]
    register(SentimentHead())
