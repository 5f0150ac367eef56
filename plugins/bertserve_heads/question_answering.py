"""Extractive question answering: a span head file on every token of the encoder.

The head file is one written by `bertserve train-head question-answering`
(any token `HeadArchitecture`) or a one-layer ``token-linear`` file in the
layout of `BertForQuestionAnswering` (``qa_outputs.*``).

Contexts longer than the window are split into overlapping windows (doc
stride). Spans are scored as the transformers 4.x question-answering pipeline
defined it: per window, softmax of start and end logits over the context
tokens (and [CLS]), score = P(start) * P(end), spans no longer than
`max_answer_length` tokens, extended to whole words. The "no answer" score is
P(start=[CLS]) * P(end=[CLS]), the lowest over the windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from bertserve.plugin import (
    WARMUP_TEXT,
    AnswerSpan,
    EncodedRow,
    EncoderHead,
    EncoderOutputs,
    EncoderView,
    Head,
    HeadDescription,
    HeadLoadContext,
    HeadUnavailable,
    InputError,
    PluginSettings,
    QuestionAnsweringInput,
    QuestionAnsweringOutput,
    context_room,
    hookimpl,
    load_encoder_head,
    require_text,
    tokenize_windows,
)

from .default_heads import configured_or_packaged

MAX_WINDOW = 384
MAX_TOP_K = 100
_MASKED_LOGIT = -10000.0

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.1"


@dataclass(frozen=True)
class _Window:
    """Per-window data: which tokens are context, and their word's characters."""

    is_context: np.ndarray  # bool [L]
    word_start: np.ndarray  # int [L], character offset where the token's word starts
    word_end: np.ndarray  # int [L], character offset where the token's word ends


class QuestionAnsweringHead(Head[QuestionAnsweringInput, QuestionAnsweringOutput]):
    """Finds answer spans from per-token start/end logits of a trained head."""

    name = "question-answering"
    task = "question-answering"
    description = "extractive QA with a trained span head file (start/end logits per token)"
    input_type = QuestionAnsweringInput
    output_type = QuestionAnsweringOutput

    def __init__(self) -> None:
        self._encoder: EncoderView | None = None
        self._qa_outputs: EncoderHead | None = None
        self.supports_no_answer = False

    def warmup_input(self) -> QuestionAnsweringInput:
        return QuestionAnsweringInput(question="Where did the fox jump?", context=WARMUP_TEXT)

    @property
    def window(self) -> int:
        assert self._encoder is not None, "head used before load()"
        return min(self._encoder.max_sequence_length, MAX_WINDOW)

    def load(self, context: HeadLoadContext) -> HeadDescription:
        path = configured_or_packaged(self.name, context)
        module, metadata = load_encoder_head(
            path, head_name=self.name, task=self.task, encoder=context.encoder, num_outputs=2
        )
        if module.architecture.pooling != "tokens":
            raise HeadUnavailable(f"{path}: a span head reads every token, not {module.architecture.pooling!r} pooling")
        self._qa_outputs = module
        self.needs_hidden_states = module.architecture.needs_hidden_states()
        self.supports_no_answer = bool(metadata.extra.get("supports_no_answer", False))
        self._encoder = context.encoder
        return HeadDescription(source=f"head file {path} ({module.architecture.describe()})")

    def preprocess(self, item: QuestionAnsweringInput) -> list[EncodedRow]:
        assert self._encoder is not None, "head used before load()"
        tokenizer = self._encoder.tokenizer
        require_text(item.question, field="question", what="question")
        require_text(item.context, field="context", what="context")
        window = self.window
        if not 1 <= item.top_k <= MAX_TOP_K:
            raise InputError(f"top_k must be between 1 and {MAX_TOP_K}; got {item.top_k}", field="top_k")
        if not 1 <= item.max_answer_length <= window:
            raise InputError(
                f"max_answer_length must be between 1 and {window} tokens; got {item.max_answer_length}",
                field="max_answer_length",
            )
        if item.doc_stride < 1:
            raise InputError(f"doc_stride must be at least 1; got {item.doc_stride}", field="doc_stride")
        room = context_room(tokenizer, item.question, window=window)
        if room < 2:
            raise InputError(
                f"question is {window - room - 3} tokens long; at most {window - 5} fit in the model's "
                f"{window}-token window with room for the context",
                field="question",
            )
        stride = min(item.doc_stride, window // 2, room - 1)
        encoding = tokenize_windows(tokenizer, item.question, item.context, window=window, stride=stride)
        rows = []
        encodings = encoding.encodings or []  # set by fast tokenizers, which the server requires
        for index, input_ids in enumerate(encoding["input_ids"]):
            window_encoding = encodings[index]
            sequence_ids = window_encoding.sequence_ids
            is_context = np.array([sid == 1 for sid in sequence_ids])
            word_start = np.zeros(len(input_ids), dtype=np.int64)
            word_end = np.zeros(len(input_ids), dtype=np.int64)
            for token, (sid, word) in enumerate(zip(sequence_ids, window_encoding.word_ids)):
                if sid != 1:
                    continue
                chars = window_encoding.word_to_chars(word, sequence_index=1) if word is not None else None
                word_start[token], word_end[token] = chars or window_encoding.offsets[token]
            rows.append(
                EncodedRow(
                    input_ids=list(input_ids),
                    token_type_ids=list(encoding["token_type_ids"][index]),
                    data=_Window(is_context, word_start, word_end),
                )
            )
        return rows

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        assert self._qa_outputs is not None
        logits = self._qa_outputs(self._qa_outputs.select_features(outputs)).float().cpu().numpy()
        return [(logits[i, : len(row), 0], logits[i, : len(row), 1]) for i, row in enumerate(rows)]

    def postprocess(
        self, item: QuestionAnsweringInput, rows: Sequence[EncodedRow], results: Sequence[Any]
    ) -> QuestionAnsweringOutput:
        allow_no_answer = self.supports_no_answer if item.allow_no_answer is None else item.allow_no_answer
        best: dict[tuple[int, int], float] = {}
        null_score = float("inf")
        for row, (start_logits, end_logits) in zip(rows, results):
            window: _Window = row.data
            start_probs, end_probs = span_probabilities(start_logits, end_logits, window.is_context)
            null_score = min(null_score, float(start_probs[0] * end_probs[0]))
            for start, end, score in top_spans(start_probs, end_probs, window.is_context, item.max_answer_length):
                key = (int(window.word_start[start]), int(window.word_end[end]))
                if score > best.get(key, -1.0):
                    best[key] = score
                if len(best) >= item.top_k and _all_at_least(best, score, item.top_k):
                    break
        answers = [AnswerSpan.in_context(item.context, s, e, score) for (s, e), score in best.items()]
        if allow_no_answer:
            answers.append(AnswerSpan.none(null_score))
        answers.sort(key=lambda answer: -answer.score)
        return QuestionAnsweringOutput(answers=tuple(answers[: item.top_k]))


def span_probabilities(
    start_logits: np.ndarray, end_logits: np.ndarray, is_context: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of start and end logits over context tokens and [CLS] (index 0)."""
    allowed = is_context.copy()
    allowed[0] = True
    start = np.where(allowed, start_logits, _MASKED_LOGIT).astype(np.float64)
    end = np.where(allowed, end_logits, _MASKED_LOGIT).astype(np.float64)
    start = np.exp(start - start.max())
    end = np.exp(end - end.max())
    return start / start.sum(), end / end.sum()


def top_spans(
    start_probs: np.ndarray, end_probs: np.ndarray, is_context: np.ndarray, max_answer_length: int
) -> list[tuple[int, int, float]]:
    """All context spans (start <= end < start + max_answer_length), best first."""
    scores = np.outer(start_probs, end_probs)
    length = len(start_probs)
    starts, ends = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    valid = (ends >= starts) & (ends - starts < max_answer_length) & is_context[:, None] & is_context[None, :]
    flat_starts, flat_ends, flat_scores = starts[valid], ends[valid], scores[valid]
    order = np.argsort(-flat_scores, kind="stable")
    return [(int(flat_starts[i]), int(flat_ends[i]), float(flat_scores[i])) for i in order]


def _all_at_least(best: dict[tuple[int, int], float], score: float, top_k: int) -> bool:
    """True when top_k distinct spans already beat every later span of this window."""
    return sum(1 for value in best.values() if value >= score) >= top_k


@hookimpl
def register_heads(register: Callable[[Head[Any, Any]], None], config: PluginSettings) -> None:
    register(QuestionAnsweringHead())
