"""Question answering: the head's logits equal BertForQuestionAnswering, and the answers
through gRPC equal a brute-force reference written here, independent of the server code.

The reference follows the transformers 4.x question-answering pipeline (removed in
5.x): windows of min(model max length, 384) tokens with a doc stride of at most half
a window; per window, softmax of the start and end logits over the context tokens
and [CLS] (every other token set to -10000 first); span score P(start) * P(end) for
context tokens start <= end < start + max_answer_length; spans widened to whole
words; the best score per character span over all windows; the "no answer" score
P(start=[CLS]) * P(end=[CLS]), the lowest over the windows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch
import transformers
from bertserve.plugin import EncoderOutputs, QuestionAnsweringInput
from bertserve_client.v1 import question_answering_pb2 as qa_pb2, question_answering_pb2_grpc as qa_grpc
from gpu import Served, assert_same_ranking, served  # noqa: F401 (fixture)
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForQuestionAnswering

MASKED_LOGIT = -10000.0
PIPELINE_MAX_WINDOW = 384
DEFAULT_DOC_STRIDE = 128  # what the server uses when the request leaves doc_stride at 0
DEFAULT_MAX_ANSWER_LENGTH = 15


def _long_context() -> str:
    """A deterministic story of ~230 tokens, far over the tiny model's 64-token window,
    with multi-piece words ("walking", "zoë", "1999") and punctuation."""
    rng = random.Random(7)
    people = ["john", "mary", "Zoë", "the old man", "a child", "the woman"]
    verbs = ["went", "liked", "was walking", "would go", "had gone", "loved"]
    places = ["to paris", "home", "to school", "to the river", "to berlin in 1999", "to the café", "to rome"]
    tails = ["at night", "on a rainy day", "with the dog", "by car", "in the snow", "for years"]
    sentences = [
        f"{rng.choice(people)} {rng.choice(verbs)} {rng.choice(places)} {rng.choice(tails)}"
        f"{rng.choice(['.', '!', ', and', '?'])}"
        for _ in range(36)
    ]
    return " ".join(sentences)


LONG_CONTEXT = _long_context()
SHORT_INPUTS = [
    ("where did john go?", "john went to paris in the night. mary went home."),
    ("What did Zoë like?", "Zoë liked the café in Rome; the music was great!"),
    ("who is it?", "Mary."),
    ("what happened?", "john 🎉 went home 😀 at night in 東京 ."),  # 4- and 3-byte characters
]
LONG_INPUTS = [
    ("where did mary go?", LONG_CONTEXT),
    ("when?", LONG_CONTEXT),
]
POLICIES = {
    "allow": (qa_pb2.NO_ANSWER_POLICY_ALLOW, True),
    "never": (qa_pb2.NO_ANSWER_POLICY_NEVER, False),
}


@dataclass(frozen=True)
class Window:
    """One reference window: its tokens, logits and span probabilities."""

    input_ids: list[int]
    token_type_ids: list[int]
    start_logits: list[float]
    end_logits: list[float]
    start_probs: list[float]
    end_probs: list[float]
    context_tokens: list[int]
    word_start: dict[int, int]  # context token -> first character of its word
    word_end: dict[int, int]  # context token -> end (exclusive) of its word


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


class Reference:
    """Brute-force extractive QA on `BertForQuestionAnswering`, window by window."""

    def __init__(self, model: BertForQuestionAnswering, tokenizer: transformers.PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.window = min(tokenizer.model_max_length, model.config.max_position_embeddings, PIPELINE_MAX_WINDOW)
        self._windows: dict[tuple[str, str, int], list[Window]] = {}

    def doc_stride(self, requested: int) -> int:
        return min(requested, self.window // 2)

    def windows(self, question: str, context: str, doc_stride: int) -> list[Window]:
        key = (question, context, doc_stride)
        if key not in self._windows:
            self._windows[key] = self._compute_windows(question, context, self.doc_stride(doc_stride))
        return self._windows[key]

    def _compute_windows(self, question: str, context: str, stride: int) -> list[Window]:
        encoding = self.tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=self.window,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        windows = []
        for index, input_ids in enumerate(encoding["input_ids"]):
            token_type_ids = encoding["token_type_ids"][index]
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([input_ids]), token_type_ids=torch.tensor([token_type_ids]))
            start_logits = out.start_logits[0].tolist()
            end_logits = out.end_logits[0].tolist()
            window_encoding = encoding.encodings[index]
            sequence_ids = window_encoding.sequence_ids
            allowed = [token == 0 or sequence_ids[token] == 1 for token in range(len(input_ids))]
            context_tokens = [token for token in range(len(input_ids)) if sequence_ids[token] == 1]
            word_start, word_end = {}, {}
            for token in context_tokens:
                word = window_encoding.word_ids[token]
                if word is None:
                    word_start[token], word_end[token] = window_encoding.offsets[token]
                else:
                    word_start[token], word_end[token] = window_encoding.word_to_chars(word, sequence_index=1)
            windows.append(
                Window(
                    input_ids=list(input_ids),
                    token_type_ids=list(token_type_ids),
                    start_logits=start_logits,
                    end_logits=end_logits,
                    start_probs=softmax([v if ok else MASKED_LOGIT for v, ok in zip(start_logits, allowed)]),
                    end_probs=softmax([v if ok else MASKED_LOGIT for v, ok in zip(end_logits, allowed)]),
                    context_tokens=context_tokens,
                    word_start=word_start,
                    word_end=word_end,
                )
            )
        return windows

    def candidates(
        self, question: str, context: str, *, max_answer_length: int, doc_stride: int, allow_no_answer: bool
    ) -> list[tuple[tuple[str, int, int, bool], float]]:
        """Every candidate answer, (text, start, end, no_answer) with its score, best first."""
        best: dict[tuple[int, int], float] = {}
        null_score = math.inf
        for window in self.windows(question, context, doc_stride):
            null_score = min(null_score, window.start_probs[0] * window.end_probs[0])
            for start in window.context_tokens:
                for end in window.context_tokens:
                    if not start <= end < start + max_answer_length:
                        continue
                    score = window.start_probs[start] * window.end_probs[end]
                    span = (window.word_start[start], window.word_end[end])
                    if score > best.get(span, -1.0):
                        best[span] = score
        answers = [((context[s:e], s, e, False), score) for (s, e), score in best.items()]
        if allow_no_answer:
            answers.append((("", 0, 0, True), null_score))
        answers.sort(key=lambda answer: -answer[1])
        return answers


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path, head_files: dict[str, Path], tokenizer) -> Reference:  # type: ignore[no-untyped-def]
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # qa_outputs is reported as newly initialised
    try:
        model = BertForQuestionAnswering.from_pretrained(tiny_checkpoint, dtype="float32")
    finally:
        transformers.logging.set_verbosity(verbosity)
    head = load_file(str(head_files["question-answering"]))
    with torch.no_grad():
        model.qa_outputs.weight.copy_(head["qa_outputs.weight"])
        model.qa_outputs.bias.copy_(head["qa_outputs.bias"])
    return Reference(model.eval(), tokenizer)


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[qa_grpc.QuestionAnsweringServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield qa_grpc.QuestionAnsweringServiceStub(channel)


def test_reference_covers_several_windows(reference: Reference, tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert reference.window == 64
    for question, context in LONG_INPUTS:
        assert len(tokenizer(question, context)["input_ids"]) > 3 * reference.window
        for stride in (8, DEFAULT_DOC_STRIDE):
            windows = reference.windows(question, context, stride)
            assert len(windows) > 3, (question, stride, len(windows))
            assert all(len(w.input_ids) <= reference.window for w in windows)
    for question, context in SHORT_INPUTS:
        assert len(reference.windows(question, context, 8)) == 1


@pytest.mark.parametrize("doc_stride", [8, DEFAULT_DOC_STRIDE])
def test_head_logits_equal_reference(served: Served, reference: Reference, doc_stride: int) -> None:
    """The head's start/end logits on the shared encoder, in-process, for every window."""
    runtime = served.server.runtime
    head = runtime.registry.get("question-answering", task="question-answering")
    encoder = runtime.encoder
    atol, rtol = served.variant.logit_tol, served.variant.logit_rtol
    for question, context in [*SHORT_INPUTS, *LONG_INPUTS]:
        rows = head.preprocess(QuestionAnsweringInput(question=question, context=context, doc_stride=doc_stride))
        windows = reference.windows(question, context, doc_stride)
        assert [row.input_ids for row in rows] == [w.input_ids for w in windows]
        assert [row.token_type_ids for row in rows] == [w.token_type_ids for w in windows]
        for number, (row, window) in enumerate(zip(rows, windows)):
            input_ids = torch.tensor([row.input_ids], device=encoder.device)
            token_type_ids = torch.tensor([row.token_type_ids], device=encoder.device)
            attention_mask = torch.ones_like(input_ids)
            batch = encoder.forward(input_ids, token_type_ids, attention_mask)
            with torch.inference_mode():
                ((start_logits, end_logits),) = head.forward(
                    EncoderOutputs(batch.sequence_output, batch.pooled_output, batch.attention_mask), [row]
                )
            got_start = torch.as_tensor(start_logits, dtype=torch.float32)
            got_end = torch.as_tensor(end_logits, dtype=torch.float32)
            what = f"{question!r} window {number}"
            assert got_start.shape == got_end.shape == (len(row.input_ids),), what
            torch.testing.assert_close(got_start, torch.tensor(window.start_logits), rtol=rtol, atol=atol, msg=what)
            torch.testing.assert_close(got_end, torch.tensor(window.end_logits), rtol=rtol, atol=atol, msg=what)


def ask(stub, inputs, **options) -> list[qa_pb2.AnswerQuestionResult]:  # type: ignore[no-untyped-def]
    request = qa_pb2.AnswerQuestionRequest(
        inputs=[qa_pb2.QuestionContext(question=q, context=c) for q, c in inputs], **options
    )
    results = list(stub.AnswerQuestion(request).results)
    assert len(results) == len(inputs)
    return results


def check_answers(
    result: qa_pb2.AnswerQuestionResult,
    expected: list[tuple[tuple[str, int, int, bool], float]],
    context: str,
    top_k: int,
    served: Served,
    what: str,
) -> None:
    for answer in result.answers:
        assert answer.text == context[answer.start : answer.end], what
        assert answer.text == context.encode()[answer.start_byte : answer.end_byte].decode(), what
        if answer.no_answer:
            assert (answer.text, answer.start, answer.end, answer.start_byte, answer.end_byte) == ("", 0, 0, 0, 0), what
        else:
            assert answer.text and answer.end > answer.start, what
    assert_same_ranking(
        [((a.text, a.start, a.end, a.no_answer), a.score) for a in result.answers],
        expected[:top_k],
        dict(expected),
        served.variant,
        what,
    )


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("doc_stride", [8, 0], ids=["stride8", "stride-default"])
@pytest.mark.parametrize("max_answer_length", [1, 3, 15])
@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_answers_equal_brute_force_reference(  # type: ignore[no-untyped-def]
    stub, reference: Reference, served: Served, top_k: int, max_answer_length: int, doc_stride: int, policy: str
) -> None:
    wire_policy, allow = POLICIES[policy]
    inputs = [*SHORT_INPUTS, *LONG_INPUTS]
    results = ask(
        stub,
        inputs,
        top_k=top_k,
        max_answer_length=max_answer_length,
        doc_stride=doc_stride,
        no_answer_policy=wire_policy,
    )
    stride = doc_stride or DEFAULT_DOC_STRIDE
    for (question, context), result in zip(inputs, results):
        expected = reference.candidates(
            question, context, max_answer_length=max_answer_length, doc_stride=stride, allow_no_answer=allow
        )
        what = f"{question!r} top_k={top_k} max_answer_length={max_answer_length} doc_stride={stride} {policy}"
        check_answers(result, expected, context, top_k, served, what)


def test_unspecified_policy_follows_the_head_file(stub, reference: Reference, served: Served) -> None:  # type: ignore[no-untyped-def]
    """The fixture's head file was made without supports_no_answer: no "no answer"."""
    inputs = [*SHORT_INPUTS, *LONG_INPUTS]
    results = ask(stub, inputs, top_k=5)  # every option at its default
    for (question, context), result in zip(inputs, results):
        expected = reference.candidates(
            question,
            context,
            max_answer_length=DEFAULT_MAX_ANSWER_LENGTH,
            doc_stride=DEFAULT_DOC_STRIDE,
            allow_no_answer=False,
        )
        check_answers(result, expected, context, 5, served, f"{question!r} defaults")
        assert not any(a.no_answer for a in result.answers)


def test_no_answer_candidate_is_ranked_when_allowed(reference: Reference) -> None:
    """The reference is not degenerate: with no answer allowed, the null candidate
    beats the spans for some inputs and not for others in the requests above."""
    ranks = set()
    for question, context in [*SHORT_INPUTS, *LONG_INPUTS]:
        expected = reference.candidates(question, context, max_answer_length=15, doc_stride=8, allow_no_answer=True)
        ranks.add(next(i for i, (key, _) in enumerate(expected) if key[3]) == 0)
    assert ranks == {True, False}, ranks
