"""Typed, immutable results returned by the bertserve clients.

Each class mirrors one response message of the ``bertserve.v1`` protos and
builds itself from it with ``from_proto``; users never need the generated
message types. The JSON-like values of ``InferenceService`` and of the head
schemas (``google.protobuf.Struct``) become plain dicts: see
:func:`struct_to_dict` and :func:`dict_to_struct`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ._structs import dict_to_struct, struct_to_dict
from .v1 import fill_mask_pb2, model_pb2, next_sentence_pb2, question_answering_pb2, sentiment_pb2

__all__ = [
    "Answer",
    "AnswerResult",
    "FillMaskResult",
    "HeadInfo",
    "HeadState",
    "LabelScore",
    "MaskPredictions",
    "NextSentenceResult",
    "SentimentResult",
    "ServerInfo",
    "TokenPrediction",
    "dict_to_struct",
    "struct_to_dict",
]


@dataclass(frozen=True, slots=True)
class TokenPrediction:
    """One candidate token for a mask.

    Attributes:
        token: The token as spelled in the vocabulary (e.g. ``"paris"``).
        token_id: The token's id in the vocabulary.
        score: Probability of the token at the mask position.
        sequence: The text with this mask replaced by the token.
    """

    token: str
    token_id: int
    score: float
    sequence: str

    @classmethod
    def from_proto(cls, message: fill_mask_pb2.TokenPrediction) -> TokenPrediction:
        """Build from a ``bertserve.v1.TokenPrediction`` message."""
        return cls(
            token=message.token,
            token_id=message.token_id,
            score=message.score,
            sequence=message.sequence,
        )


@dataclass(frozen=True, slots=True)
class MaskPredictions:
    """The ranked candidates for one mask token.

    Attributes:
        token_index: Position of the mask in the tokenized input (0 is ``[CLS]``).
        predictions: Candidates, best first.
    """

    token_index: int
    predictions: tuple[TokenPrediction, ...]

    @classmethod
    def from_proto(cls, message: fill_mask_pb2.MaskPredictions) -> MaskPredictions:
        """Build from a ``bertserve.v1.MaskPredictions`` message."""
        return cls(
            token_index=message.token_index,
            predictions=tuple(TokenPrediction.from_proto(p) for p in message.predictions),
        )


@dataclass(frozen=True, slots=True)
class FillMaskResult:
    """The predictions for every mask of one text, in the order the masks appear."""

    masks: tuple[MaskPredictions, ...]

    @classmethod
    def from_proto(cls, message: fill_mask_pb2.FillMaskResult) -> FillMaskResult:
        """Build from a ``bertserve.v1.FillMaskResult`` message."""
        return cls(masks=tuple(MaskPredictions.from_proto(m) for m in message.masks))


@dataclass(frozen=True, slots=True)
class NextSentenceResult:
    """Whether the second sentence of a pair follows the first.

    Attributes:
        is_next_probability: Probability that the second sentence follows the first.
        is_next: True when ``is_next_probability`` is at least 0.5.
    """

    is_next_probability: float
    is_next: bool

    @classmethod
    def from_proto(cls, message: next_sentence_pb2.NextSentenceResult) -> NextSentenceResult:
        """Build from a ``bertserve.v1.NextSentenceResult`` message."""
        return cls(is_next_probability=message.is_next_probability, is_next=message.is_next)


@dataclass(frozen=True, slots=True)
class LabelScore:
    """The probability of one classification label."""

    label: str
    score: float

    @classmethod
    def from_proto(cls, message: sentiment_pb2.LabelScore) -> LabelScore:
        """Build from a ``bertserve.v1.LabelScore`` message."""
        return cls(label=message.label, score=message.score)


@dataclass(frozen=True, slots=True)
class SentimentResult:
    """The sentiment of one text.

    Attributes:
        label: The most probable label.
        score: Probability of that label.
        scores: Probability of every label, in the head's label order.
    """

    label: str
    score: float
    scores: tuple[LabelScore, ...]

    @classmethod
    def from_proto(cls, message: sentiment_pb2.SentimentResult) -> SentimentResult:
        """Build from a ``bertserve.v1.SentimentResult`` message."""
        return cls(
            label=message.label,
            score=message.score,
            scores=tuple(LabelScore.from_proto(s) for s in message.scores),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """One candidate answer span, with its offsets in two units.

    ``start``/``end`` count code points (Python ``str`` indices);
    ``start_byte``/``end_byte`` count bytes of the context's UTF-8 encoding
    (Go string indices, a Node ``Buffer``), for callers whose strings are not
    indexed by code point.

    Attributes:
        text: The answer, exactly ``context[start:end]`` and
            ``context.encode()[start_byte:end_byte].decode()``.
        score: Probability of the span.
        start: Start offset in the context, in code points.
        end: End offset (exclusive) in the context, in code points.
        no_answer: True for the "no answer" candidate (empty text, every offset 0).
        start_byte: Start offset in the context's UTF-8 bytes.
        end_byte: End offset (exclusive) in the context's UTF-8 bytes.
    """

    text: str
    score: float
    start: int
    end: int
    no_answer: bool
    start_byte: int = 0
    end_byte: int = 0

    @classmethod
    def from_proto(cls, message: question_answering_pb2.Answer) -> Answer:
        """Build from a ``bertserve.v1.Answer`` message."""
        return cls(
            text=message.text,
            score=message.score,
            start=message.start,
            end=message.end,
            no_answer=message.no_answer,
            start_byte=message.start_byte,
            end_byte=message.end_byte,
        )


@dataclass(frozen=True, slots=True)
class AnswerResult:
    """The ranked answers to one question, best first."""

    answers: tuple[Answer, ...]

    @property
    def best(self) -> Answer | None:
        """The best answer, or None when there is none."""
        return self.answers[0] if self.answers else None

    @classmethod
    def from_proto(cls, message: question_answering_pb2.AnswerQuestionResult) -> AnswerResult:
        """Build from a ``bertserve.v1.AnswerQuestionResult`` message."""
        return cls(answers=tuple(Answer.from_proto(a) for a in message.answers))


class HeadState(str, enum.Enum):
    """Whether a head serves requests."""

    UNSPECIFIED = "UNSPECIFIED"
    LOADED = "LOADED"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"

    @classmethod
    def from_proto(cls, value: int) -> HeadState:
        """Map a ``bertserve.v1.HeadState`` value; values this client does not know map to UNSPECIFIED."""
        return _HEAD_STATES.get(value, cls.UNSPECIFIED)


_HEAD_STATES: dict[int, HeadState] = {
    model_pb2.HEAD_STATE_UNSPECIFIED: HeadState.UNSPECIFIED,
    model_pb2.HEAD_STATE_LOADED: HeadState.LOADED,
    model_pb2.HEAD_STATE_UNAVAILABLE: HeadState.UNAVAILABLE,
    model_pb2.HEAD_STATE_FAILED: HeadState.FAILED,
}


@dataclass(frozen=True, slots=True)
class HeadInfo:
    """One head registered on the server, loaded or not.

    Attributes:
        name: Unique head name (e.g. ``"fill-mask"``).
        task: The task it performs.
        state: Whether it serves requests.
        reason: Why it is not loaded, or where its weights came from.
        labels: Output labels, for classification heads.
        plugin: The plugin that registered it.
        description: One-line description.
        input_schema: JSON Schema (draft 2020-12) of one input to
            :meth:`~bertserve_client.BertServeClient.predict`.
        output_schema: JSON Schema of one output.
        package: The distribution that provides the head (e.g. ``"bertserve"``).
        version: That distribution's version.
        text_fields: The input fields :meth:`~bertserve_client.BertServeClient.analyze`
            fills with its text (and text pair); empty when the head cannot be
            used there.

    The schemas are plain dicts (whole numbers as int, see
    :func:`struct_to_dict`); they are left out of the hash, so do not mutate
    them.
    """

    name: str
    task: str
    state: HeadState
    reason: str
    labels: tuple[str, ...]
    plugin: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=dict, hash=False)
    output_schema: dict[str, Any] = field(default_factory=dict, hash=False)
    package: str = ""
    version: str = ""
    text_fields: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, message: model_pb2.HeadInfo) -> HeadInfo:
        """Build from a ``bertserve.v1.HeadInfo`` message."""
        return cls(
            name=message.name,
            task=message.task,
            state=HeadState.from_proto(message.state),
            reason=message.reason,
            labels=tuple(message.labels),
            plugin=message.plugin,
            description=message.description,
            input_schema=struct_to_dict(message.input_schema),
            output_schema=struct_to_dict(message.output_schema),
            package=message.package,
            version=message.version,
            text_fields=tuple(message.text_fields),
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The shared encoder and the server that serves it.

    Attributes:
        model: The folder or hub id the encoder was loaded from.
        model_type: The architecture family (e.g. ``"bert"``).
        max_sequence_length: Longest input in tokens, special tokens included.
        device: Device the encoder runs on (e.g. ``"cpu"``).
        dtype: Floating-point type of the weights (e.g. ``"float32"``).
        hidden_size: Width of the hidden states.
        num_layers: Number of transformer layers.
        vocab_size: Size of the tokenizer's vocabulary.
        mask_token: The mask token to use in fill-mask texts (e.g. ``"[MASK]"``).
        encoder_fingerprint: Fingerprint of the encoder weights.
        server_version: Version of the bertserve server.
        plugin_api_version: Version of the plugin API the server offers (e.g. ``"1.0"``).
    """

    model: str
    model_type: str
    max_sequence_length: int
    device: str
    dtype: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    mask_token: str
    encoder_fingerprint: str
    server_version: str
    plugin_api_version: str = ""

    @classmethod
    def from_proto(cls, message: model_pb2.GetServerInfoResponse) -> ServerInfo:
        """Build from a ``bertserve.v1.GetServerInfoResponse`` message."""
        return cls(
            model=message.model,
            model_type=message.model_type,
            max_sequence_length=message.max_sequence_length,
            device=message.device,
            dtype=message.dtype,
            hidden_size=message.hidden_size,
            num_layers=message.num_layers,
            vocab_size=message.vocab_size,
            mask_token=message.mask_token,
            encoder_fingerprint=message.encoder_fingerprint,
            server_version=message.server_version,
            plugin_api_version=message.plugin_api_version,
        )
