"""Turn task data into encoder rows and targets, the way the heads serve them.

Rows are tokenized with the same calls the built-in heads make at request
time, so a trained head sees at serving time what it saw in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from bertserve.plugin.head import EncodedRow
from bertserve.plugin.text import encode, tokenize_windows
from bertserve.training.data import Document, QuestionExample

IS_NEXT, NOT_NEXT = 0, 1  # BERT's NSP label order
MASKED_FRACTION = 0.15
MAX_PREDICTIONS = 20


def classification_row(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int) -> EncodedRow:
    """One text, truncated to `max_length` tokens."""
    return encode(tokenizer, text, max_length=max_length, truncate=True)


def pair_row(tokenizer: PreTrainedTokenizerBase, first: str, second: str, max_length: int) -> EncodedRow:
    """A text pair, the longer text cut first when too long."""
    return encode(tokenizer, first, second, max_length=max_length, truncate=True)


@dataclass(frozen=True)
class SentencePair:
    """A next-sentence example: label `IS_NEXT` or `NOT_NEXT`."""

    first: str
    second: str
    label: int


def next_sentence_pairs(documents: Sequence[Document], *, seed: int, words_per_pair: int = 60) -> list[SentencePair]:
    """Sentence pairs built as BERT builds them.

    Consecutive sentences of a document are gathered into a chunk of about
    `words_per_pair` words and split at a random sentence boundary into A
    and B. Half the time B is replaced by sentences from another document.
    """
    rng = random.Random(seed)
    pairs: list[SentencePair] = []
    for index, document in enumerate(documents):
        chunk: list[str] = []
        for sentence in document:
            chunk.append(sentence)
            if sum(len(s.split()) for s in chunk) >= words_per_pair:
                pairs.extend(_pairs_from_chunk(chunk, documents, index, rng))
                chunk = []
        if len(chunk) >= 2:
            pairs.extend(_pairs_from_chunk(chunk, documents, index, rng))
    return pairs


def _pairs_from_chunk(
    chunk: list[str], documents: Sequence[Document], index: int, rng: random.Random
) -> list[SentencePair]:
    if len(chunk) < 2:
        return []
    split = rng.randint(1, len(chunk) - 1)
    first, second = " ".join(chunk[:split]), " ".join(chunk[split:])
    if len(documents) > 1 and rng.random() < 0.5:
        other = rng.randrange(len(documents) - 1)
        other += other >= index  # any document but this one
        source = documents[other]
        start = rng.randrange(len(source))
        second = " ".join(source[start : start + len(chunk) - split])
        return [SentencePair(first, second, NOT_NEXT)]
    return [SentencePair(first, second, IS_NEXT)]


@dataclass(frozen=True)
class MaskedRow:
    """A masked-LM example: the masked row, where the masks are, and the original ids."""

    row: EncodedRow
    positions: tuple[int, ...]
    targets: tuple[int, ...]


def masked_lm_rows(
    tokenizer: PreTrainedTokenizerBase, documents: Sequence[Document], *, max_length: int, seed: int, copies: int = 1
) -> list[MaskedRow]:
    """Rows of consecutive sentences (up to `max_length` tokens), masked as BERT does.

    15% of the tokens (at most 20 per row) are chosen; 80% of those become
    the mask token, 10% a random token, 10% stay. `copies` maskings are made
    of every row, each different.
    """
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    vocab_size = len(tokenizer)
    sequences = _packed_token_sequences(tokenizer, documents, max_length - 2)
    rows = []
    for _ in range(copies):
        for tokens in sequences:
            ids = [tokenizer.cls_token_id, *tokens, tokenizer.sep_token_id]
            candidates = [i for i, token in enumerate(ids) if token not in special]
            count = min(MAX_PREDICTIONS, max(1, round(len(candidates) * MASKED_FRACTION)))
            positions = sorted(rng.sample(candidates, min(count, len(candidates))))
            masked = list(ids)
            for position in positions:
                roll = rng.random()
                if roll < 0.8:
                    masked[position] = tokenizer.mask_token_id
                elif roll < 0.9:
                    masked[position] = rng.randrange(vocab_size)
            row = EncodedRow(input_ids=masked, token_type_ids=[0] * len(masked))
            rows.append(MaskedRow(row, tuple(positions), tuple(ids[p] for p in positions)))
    return rows


def _packed_token_sequences(
    tokenizer: PreTrainedTokenizerBase, documents: Sequence[Document], room: int
) -> list[list[int]]:
    sequences = []
    for document in documents:
        current: list[int] = []
        for sentence in document:
            tokens = list(tokenizer(sentence, add_special_tokens=False)["input_ids"])[:room]
            if current and len(current) + len(tokens) > room:
                sequences.append(current)
                current = []
            current.extend(tokens)
        if current:
            sequences.append(current)
    return [tokens for tokens in sequences if len(tokens) >= 4]


@dataclass(frozen=True)
class SpanWindow:
    """One QA window: its row, which tokens may hold the answer ([CLS] and the
    context), and the gold start and end token (0, 0 when the answer is not in it)."""

    row: EncodedRow
    allowed: tuple[bool, ...]
    start: int
    end: int


def question_windows(
    tokenizer: PreTrainedTokenizerBase, example: QuestionExample, *, window: int, stride: int
) -> list[SpanWindow]:
    """The windows the question-answering head makes for `example`, labelled."""
    encoding = tokenize_windows(tokenizer, example.question, example.context, window=window, stride=stride)
    answer = example.answers[0] if example.answers else None
    windows = []
    encodings = encoding.encodings or []  # set by fast tokenizers, which the server requires
    for index, input_ids in enumerate(encoding["input_ids"]):
        sequence_ids = encodings[index].sequence_ids
        offsets = encoding["offset_mapping"][index]
        allowed = tuple(i == 0 or sid == 1 for i, sid in enumerate(sequence_ids))
        start = end = 0
        if answer is not None:
            char_start, char_end = answer[1], answer[1] + len(answer[0])
            context_tokens = [i for i, sid in enumerate(sequence_ids) if sid == 1]
            if offsets[context_tokens[0]][0] <= char_start and offsets[context_tokens[-1]][1] >= char_end:
                start = next(i for i in context_tokens if offsets[i][1] > char_start)
                end = next(i for i in reversed(context_tokens) if offsets[i][0] < char_end)
        row = EncodedRow(input_ids=list(input_ids), token_type_ids=list(encoding["token_type_ids"][index]))
        windows.append(SpanWindow(row, allowed, start, end))
    return windows
