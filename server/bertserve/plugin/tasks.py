"""Plain-Python inputs and outputs of the four built-in tasks.

The typed gRPC services translate their protobuf messages to and from these,
and the generic `Predict`/`Analyze` RPCs derive JSON Schemas from them
(`bertserve.plugin.schema`), so a head never depends on the wire format. Values
whose limits depend on the model (top_k, lengths) are checked by the head in
`Head.preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


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

    token_index: int = field(metadata=_doc("position of the mask in the tokenized input, in tokens (0: [CLS])"))
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
    """One answer: `context[start:end]` in code points, `context.encode()[start_byte:end_byte]` in UTF-8 bytes.

    Build it with `AnswerSpan.in_context` (a span) or `AnswerSpan.none` (the
    "no answer" candidate), which derive the text and both units of offset
    from the context. A head built for API 1.1 that gives only the code-point
    offsets still works: `complete_output` fills in the byte offsets from the
    request's context before the answer leaves the server.
    """

    text: str = field(metadata=_doc("the answer, exactly context[start:end]"))
    score: float = field(metadata=_doc("probability of the span"))
    start: int = field(metadata=_doc("start offset in the context, in Unicode code points"))
    end: int = field(metadata=_doc("end offset (exclusive) in the context, in Unicode code points"))
    no_answer: bool = field(default=False, metadata=_doc("the 'no answer' candidate: empty text, offsets 0"))
    start_byte: int | None = field(
        default=None, kw_only=True, metadata=_doc("start offset in the context's UTF-8 bytes")
    )
    end_byte: int | None = field(
        default=None, kw_only=True, metadata=_doc("end offset (exclusive) in the context's UTF-8 bytes")
    )

    def __post_init__(self) -> None:
        if (self.start_byte is None) != (self.end_byte is None):
            raise ValueError("give both start_byte and end_byte, or neither (the server derives them)")
        if (
            self.start_byte is not None
            and self.end_byte is not None
            and self.end_byte - self.start_byte != len(self.text.encode())
        ):
            raise ValueError(
                f"answer {self.text!r} does not match its byte offsets [{self.start_byte}:{self.end_byte}]; "
                "build it with AnswerSpan.in_context"
            )

    @classmethod
    def in_context(cls, context: str, start: int, end: int, score: float) -> AnswerSpan:
        """The span `context[start:end]` (code points), with its UTF-8 byte offsets."""
        text = context[start:end]
        start_byte = len(context[:start].encode())
        return cls(text, score, start, end, start_byte=start_byte, end_byte=start_byte + len(text.encode()))

    @classmethod
    def none(cls, score: float) -> AnswerSpan:
        """The "no answer" candidate: empty text, every offset 0."""
        return cls("", score, 0, 0, no_answer=True, start_byte=0, end_byte=0)

    def with_byte_offsets(self, context: str) -> AnswerSpan:
        """This span with its UTF-8 byte offsets, derived from `context` where it has none."""
        if self.start_byte is not None:
            return self
        if self.no_answer:
            return replace(self, start_byte=0, end_byte=0)
        start_byte = len(context[: self.start].encode())
        return replace(self, start_byte=start_byte, end_byte=start_byte + len(self.text.encode()))


@dataclass(frozen=True)
class QuestionAnsweringOutput:
    """Answers, best first."""

    answers: tuple[AnswerSpan, ...]


def complete_output(item: object, output: object) -> object:
    """A head's output with what the task derives from the input filled in, for every door alike.

    Today that is the UTF-8 byte offsets of question-answering spans whose head
    gave only code-point offsets (heads written for plugin API 1.1).
    """
    if isinstance(output, QuestionAnsweringOutput) and isinstance(item, QuestionAnsweringInput):
        if any(answer.start_byte is None for answer in output.answers):
            return replace(output, answers=tuple(answer.with_byte_offsets(item.context) for answer in output.answers))
    return output
