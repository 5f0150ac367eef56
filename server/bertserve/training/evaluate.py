"""Evaluate a head the way the server runs it: the plugin head's own
`preprocess`, the shared encoder's batched forward, `forward` and
`postprocess`, in-process and without gRPC.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bertserve.app import server_plugins
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.model.plugins import plugin_settings, register_plugins
from bertserve.plugin.errors import HeadUnavailable
from bertserve.plugin.head import EncodedRow, Head, HeadLoadContext
from bertserve.plugin.tasks import FillMaskInput, NextSentenceInput, QuestionAnsweringInput, TextClassificationInput
from bertserve.training.data import Document, read_documents, read_labeled_texts, read_squad
from bertserve.training.examples import IS_NEXT, next_sentence_pairs
from bertserve.training.features import encode_in_batches
from bertserve.training.metrics import accuracy, exact_match, macro_f1, token_f1

_WORD = re.compile(r"[A-Za-z]+")
T = TypeVar("T")


def load_served_head(name: str, encoder: SharedEncoder, head_file: Path | None, config: ServerConfig) -> Head[Any, Any]:
    """Head `name` from the installed plugins, loaded as the server would load it."""
    registry = register_plugins(config, server_plugins(config))
    head = registry.record(name).head
    path = head_file if head_file is not None else config.head_files.get(name)
    try:
        head.load(HeadLoadContext(encoder=encoder.view(), head_file=path, config=plugin_settings(config)))
    except HeadUnavailable as reason:
        raise ValueError(f"head {name!r} did not load: {reason}") from None
    return head


def run_head(head: Head[Any, Any], encoder: SharedEncoder, items: Sequence[Any], *, batch_size: int = 64) -> list[Any]:
    """Outputs of `head` for `items`, computed as the server computes them."""
    rows: list[tuple[int, EncodedRow]] = [(n, row) for n, item in enumerate(items) for row in head.preprocess(item)]
    results: list[Any] = [None] * len(rows)
    batches = encode_in_batches(encoder, [row for _, row in rows], batch_size, f"running {head.name}")
    for indices, batch, outputs in batches:
        if not head.needs_hidden_states:
            outputs = replace(outputs, hidden_states=None)
        for i, result in zip(indices, head.forward(outputs, batch)):
            results[i] = result
    per_item: list[tuple[list[EncodedRow], list[Any]]] = [([], []) for _ in items]
    for (n, row), result in zip(rows, results):
        per_item[n][0].append(row)
        per_item[n][1].append(result)
    return [head.postprocess(item, r, out) for item, (r, out) in zip(items, per_item)]


@dataclass(frozen=True)
class MaskedWord:
    """A text with one word replaced by the mask token, and that word."""

    text: str
    word: str


def masked_word_examples(
    documents: Sequence[Document], vocabulary: dict[str, int], mask_token: str, *, seed: int
) -> list[MaskedWord]:
    """One masked word per sentence: a word that is a single vocabulary token."""
    rng = random.Random(seed)
    examples = []
    for document in documents:
        for sentence in document:
            words = [m for m in _WORD.finditer(sentence) if m.group().lower() in vocabulary]
            if len(sentence.split()) < 4 or not words:
                continue
            chosen = rng.choice(words)
            text = sentence[: chosen.start()] + mask_token + sentence[chosen.end() :]
            examples.append(MaskedWord(text, chosen.group().lower()))
    rng.shuffle(examples)
    return examples


def spread(items: Sequence[T], limit: int | None) -> list[T]:
    """`limit` items evenly spaced over `items` (all of them when None or more)."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def evaluate_head(
    task: str,
    head: Head[Any, Any],
    encoder: SharedEncoder,
    data: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, float]:
    """Held-out metrics of a served head on `data` (in its task's format).

    `limit` evaluates an evenly spaced sample of that many examples, which
    keeps the mix of a file sorted by label or by source.
    """
    if task == "sentiment":
        examples = spread(read_labeled_texts(data), limit)
        outputs = run_head(head, encoder, [TextClassificationInput(e.text, truncate=True) for e in examples])
        predicted, gold = [o.label for o in outputs], [e.label for e in examples]
        return {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold), "examples": len(gold)}
    if task == "next-sentence":
        pairs = spread(next_sentence_pairs(read_documents(data), seed=seed), limit)
        outputs = run_head(head, encoder, [NextSentenceInput(p.first, p.second, truncate=True) for p in pairs])
        correct = sum((o.is_next_probability >= 0.5) == (p.label == IS_NEXT) for o, p in zip(outputs, pairs))
        return {"accuracy": correct / max(len(pairs), 1), "examples": len(pairs)}
    if task == "fill-mask":
        tokenizer = encoder.tokenizer
        masked = spread(
            masked_word_examples(read_documents(data), tokenizer.get_vocab(), tokenizer.mask_token, seed=seed), limit
        )
        outputs = run_head(head, encoder, [FillMaskInput(m.text, top_k=5, truncate=True) for m in masked])
        ranked = [[p.token for p in o.masks[0].predictions] for o in outputs]
        top1 = sum(r[:1] == [m.word] for r, m in zip(ranked, masked))
        top5 = sum(m.word in r for r, m in zip(ranked, masked))
        n = max(len(masked), 1)
        return {"masked_word_top1": top1 / n, "masked_word_top5": top5 / n, "examples": len(masked)}
    if task == "question-answering":
        questions = spread(read_squad(data), limit)
        outputs = run_head(head, encoder, [QuestionAnsweringInput(q.question, q.context) for q in questions])
        best = [o.answers[0].text if o.answers else "" for o in outputs]
        golds = [[text for text, _ in q.answers] for q in questions]
        n = max(len(questions), 1)
        return {
            "exact_match": 100 * sum(exact_match(b, g) for b, g in zip(best, golds)) / n,
            "f1": 100 * sum(token_f1(b, g) for b, g in zip(best, golds)) / n,
            "examples": len(questions),
        }
    raise ValueError(f"no evaluation for task {task!r}")
