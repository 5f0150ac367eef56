"""Plain-Python inputs and outputs of the four built-in tasks.

The typed gRPC services translate their protobuf messages to and from these,
and the generic `Predict`/`Analyze` RPCs derive JSON Schemas from them
(`bertserve.plugin.schema`), so a head never depends on the wire format. Values
whose limits depend on the model (top_k, lengths) are checked by the head in
`Head.preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _doc(description: str, **constraints: object) -> dict[str, object]:
    return {"description": description, **constraints}


@dataclass(frozen=True)
class FillMaskInput:
    """A text with one or more mask tokens to predict."""

    text: str = field(metadata=_doc("text containing the server's mask token, e.g. [MASK]", minLength=1))
    top_k: int = field(default=5, metadata=_doc("candidates per mask (1 to the vocabulary size)", minimum=1))
    targets: tuple[str, ...] = field(default=(), metadata=_doc("only score these words"))
    truncate: bool = field(default=False, metadata=_doc("cut an over-long text instead of rejecting it"))


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

    first: str = field(metadata=_doc("the first sentence (segment A)", minLength=1))
    second: str = field(metadata=_doc("the candidate next sentence (segment B)", minLength=1))
    truncate: bool = field(default=False, metadata=_doc("cut an over-long pair instead of rejecting it"))


@dataclass(frozen=True)
class NextSentenceOutput:
    """Probability that `second` follows `first`."""

    is_next_probability: float


@dataclass(frozen=True)
class TextClassificationInput:
    """One text to classify."""

    text: str = field(metadata=_doc("the text", minLength=1))
    truncate: bool = field(default=False, metadata=_doc("cut an over-long text instead of rejecting it"))


@dataclass(frozen=True)
class LabelScore:
    """The probability of one label."""

    label: str
    score: float


@dataclass(frozen=True)
class ClassificationOutput:
    """The best label, its probability, and every label's probability in the head's order."""

    label: str
    score: float
    scores: tuple[LabelScore, ...]


@dataclass(frozen=True)
class QuestionAnsweringInput:
    """A question about a context; `allow_no_answer` None means the head's default."""

    question: str = field(metadata=_doc("the question", minLength=1))
    context: str = field(metadata=_doc("the text to find the answer in; any length", minLength=1))
    top_k: int = field(default=1, metadata=_doc("answers to return", minimum=1, maximum=100))
    max_answer_length: int = field(default=15, metadata=_doc("longest answer in tokens", minimum=1))
    doc_stride: int = field(default=128, metadata=_doc("overlap of consecutive windows in tokens", minimum=1))
    allow_no_answer: bool | None = field(default=None, metadata=_doc("allow an empty 'no answer' result"))


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
