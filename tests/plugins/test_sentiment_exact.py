"""Sentiment through gRPC equals BertForSequenceClassification with the head file's classifier."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
import transformers
from bertserve.plugin.headfile import METADATA_KEY
from bertserve_client.v1 import sentiment_pb2, sentiment_pb2_grpc
from gpu import Served, served  # noqa: F401 (fixture)
from safetensors import safe_open
from transformers import AutoTokenizer, BertForSequenceClassification

TEXTS = [
    "i liked the movie .",
    "the acting was terrible and the plot was boring",
    "a",
    "What a GREAT film! I love it, don't you?",
    "the café was bad ; the music was fun",
    "the book was long , the story was old , the people were bad , but the music was great and i liked it .",
    "red blue green",
]
MAX_LENGTH = 64
OVER_LONG = " ".join(["the movie was good but the plot was boring ."] * 8)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def head_file(head_files: dict[str, Path]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The sentiment head file read directly: its tensors and its label names."""
    with safe_open(str(head_files["sentiment"]), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {})[METADATA_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    return tensors, tuple(metadata["labels"])


@pytest.fixture(scope="module")
def labels(head_file: tuple[dict[str, torch.Tensor], tuple[str, ...]]) -> tuple[str, ...]:
    return head_file[1]


@pytest.fixture(scope="module")
def model(
    tiny_checkpoint: Path, head_file: tuple[dict[str, torch.Tensor], tuple[str, ...]]
) -> BertForSequenceClassification:
    tensors, labels = head_file
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the classifier is reported as newly initialised
    try:
        model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=len(labels), dtype="float32")
    finally:
        transformers.logging.set_verbosity(verbosity)
    with torch.no_grad():
        model.classifier.weight.copy_(tensors["classifier.weight"])
        model.classifier.bias.copy_(tensors["classifier.bias"])
    return model.eval()


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[sentiment_pb2_grpc.SentimentServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield sentiment_pb2_grpc.SentimentServiceStub(channel)


def reference_probabilities(model, tokenizer, text: str, **tokenizer_kwargs) -> list[float]:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt", **tokenizer_kwargs)).logits
    return torch.softmax(logits, dim=-1)[0].tolist()


def check(
    result: sentiment_pb2.SentimentResult, expected: list[float], labels: tuple[str, ...], served: Served, what: str
) -> None:
    tol = served.variant.score_tol
    assert [s.label for s in result.scores] == list(labels), what
    for score, probability in zip(result.scores, expected):
        assert math.isclose(score.score, probability, rel_tol=0, abs_tol=tol), (
            f"{what}: P({score.label}) = {score.score}, reference {probability}"
        )
    best = max(range(len(expected)), key=expected.__getitem__)
    got = labels.index(result.label)
    assert got == best or abs(expected[got] - expected[best]) <= served.variant.tie_tol, (
        f"{what}: label {result.label!r}, reference {labels[best]!r} ({expected})"
    )
    assert result.score == result.scores[got].score == max(s.score for s in result.scores), what


def test_sentiment_equals_reference(stub, model, tokenizer, labels, served: Served) -> None:  # type: ignore[no-untyped-def]
    assert labels == ("negative", "neutral", "positive")
    results = stub.ClassifySentiment(sentiment_pb2.ClassifySentimentRequest(texts=TEXTS)).results
    assert len(results) == len(TEXTS)
    winners = set()
    for text, result in zip(TEXTS, results):
        expected = reference_probabilities(model, tokenizer, text)
        check(result, expected, labels, served, repr(text))
        winners.add(max(range(len(expected)), key=expected.__getitem__))
    assert len(winners) >= 2, "the texts should not all get the same label on the tiny model"


def test_one_text_per_request_equals_reference(stub, model, tokenizer, labels, served: Served) -> None:  # type: ignore[no-untyped-def]
    for text in TEXTS:
        (result,) = stub.ClassifySentiment(sentiment_pb2.ClassifySentimentRequest(texts=[text])).results
        check(result, reference_probabilities(model, tokenizer, text), labels, served, repr(text))


def test_truncated_text_equals_reference(stub, model, tokenizer, labels, served: Served) -> None:  # type: ignore[no-untyped-def]
    assert len(tokenizer(OVER_LONG)["input_ids"]) > MAX_LENGTH
    request = sentiment_pb2.ClassifySentimentRequest(texts=[OVER_LONG], truncate=True)
    (result,) = stub.ClassifySentiment(request).results
    expected = reference_probabilities(model, tokenizer, OVER_LONG, truncation=True, max_length=MAX_LENGTH)
    check(result, expected, labels, served, "truncated text")
