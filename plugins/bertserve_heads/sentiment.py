"""Sentiment: a trained classification head file on the shared encoder.

The head file is one written by `bertserve train-head` (any `HeadArchitecture`)
or a one-layer ``pooled-linear`` file in the layout of
`BertForSequenceClassification` (``classifier.weight``, ``classifier.bias``),
plus the label names. Without ``--head-file sentiment=...`` the head trained
for the default encoder is used when the server runs that encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bertserve.plugin import (
    ClassificationOutput,
    EncodedRow,
    EncoderHead,
    EncoderOutputs,
    EncoderView,
    Head,
    HeadDescription,
    HeadLoadContext,
    LabelScore,
    PluginSettings,
    TextClassificationInput,
    encode,
    hookimpl,
    load_encoder_head,
    require_text,
)

from .default_heads import configured_or_packaged

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.1"


class SentimentHead(Head[TextClassificationInput, ClassificationOutput]):
    """Labels a text with a trained classifier on the shared encoder."""

    name = "sentiment"
    task = "sentiment"
    description = "sentiment classification with a trained head file"
    input_type = TextClassificationInput
    output_type = ClassificationOutput
    text_fields = ("text",)

    def __init__(self) -> None:
        self._encoder: EncoderView | None = None
        self._classifier: EncoderHead | None = None
        self.labels: tuple[str, ...] = ()

    def load(self, context: HeadLoadContext) -> HeadDescription:
        path = configured_or_packaged(self.name, context)
        self._classifier, metadata = load_encoder_head(
            path, head_name=self.name, task=self.task, encoder=context.encoder
        )
        self.needs_hidden_states = self._classifier.architecture.needs_hidden_states()
        self._encoder = context.encoder
        self.labels = metadata.labels
        return HeadDescription(
            source=f"head file {path} ({self._classifier.architecture.describe()})", labels=metadata.labels
        )

    def preprocess(self, item: TextClassificationInput) -> list[EncodedRow]:
        assert self._encoder is not None, "head used before load()"
        require_text(item.text, field="text")
        return [
            encode(
                self._encoder.tokenizer, item.text, max_length=self._encoder.max_sequence_length, truncate=item.truncate
            )
        ]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        assert self._classifier is not None
        logits = self._classifier(self._classifier.select_features(outputs))
        return logits.float().softmax(dim=-1).cpu().tolist()

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
def register_heads(register: Callable[[Head[Any, Any]], None], config: PluginSettings) -> None:
    register(SentimentHead())
