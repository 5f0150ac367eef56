"""Plain-Python inputs and outputs of the four built-in tasks.

The typed gRPC services translate their protobuf messages to and from these,
so a head never depends on the wire format. Validation of values (empty
text, ranges) is the head's job, in `Head.preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FillMaskInput:
    """One text with mask tokens; `targets` restricts the candidates."""

    text: str
    top_k: int = 5
    targets: tuple[str, ...] = ()
    truncate: bool = False


@dataclass(frozen=True)
class TokenPrediction:
    """One candidate token for a mask."""

    token: str
    token_id: int
    score: float
    sequence: str


@dataclass(frozen=True)
class MaskPredictions:
    """Ranked candidates for the mask at `token_index`."""

    token_index: int
    predictions: tuple[TokenPrediction, ...]


@dataclass(frozen=True)
class FillMaskOutput:
    """Predictions for every mask of one text, in text order."""

    masks: tuple[MaskPredictions, ...]


@dataclass(frozen=True)
class NextSentenceInput:
    """A sentence and a candidate continuation."""

    first: str
    second: str
    truncate: bool = False


@dataclass(frozen=True)
class NextSentenceOutput:
    """Probability that `second` follows `first`."""

    is_next_probability: float


@dataclass(frozen=True)
class TextClassificationInput:
    """One text to classify."""

    text: str
    truncate: bool = False


@dataclass(frozen=True)
class ClassificationOutput:
    """The best label, its probability, and every label's probability."""

    label: str
    score: float
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class QuestionAnsweringInput:
    """A question about a context; `allow_no_answer` None means the head's default."""

    question: str
    context: str
    top_k: int = 1
    max_answer_length: int = 15
    doc_stride: int = 128
    allow_no_answer: bool | None = None


@dataclass(frozen=True)
class AnswerSpan:
    """One answer: `context[start:end]` (code points) and its probability."""

    text: str
    score: float
    start: int
    end: int
    no_answer: bool = False


@dataclass(frozen=True)
class QuestionAnsweringOutput:
    """Answers, best first."""

    answers: tuple[AnswerSpan, ...]
