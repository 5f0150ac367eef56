"""Next-sentence prediction through gRPC equals BertForNextSentencePrediction on the same weights."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
import transformers
from bertserve_client.v1 import next_sentence_pb2, next_sentence_pb2_grpc
from gpu import Served, served  # noqa: F401 (fixture)
from transformers import AutoTokenizer, BertForNextSentencePrediction

PAIRS = [
    ("the capital of france is paris .", "paris is a big old city ."),
    ("john went home .", "the cat liked the fish and the dog ."),
    ("a", "b"),
    ("it was night", "it was night"),  # these two are above 0.5 on the tiny model
    ("a", "berlin"),
    ("What did Mary do? She went to school!", "It's a good day, isn't it?"),
    ("the café was great ; really", "the music was terrible"),
    ("the movie was long and boring , but the acting was good and the music was great .", "i liked it ."),
]
LONG_A = " ".join(["the movie was long and the plot was boring ."] * 6)  # ~60 tokens
LONG_B = " ".join(["mary liked the music"] * 8)  # ~32 tokens
OVER_LONG = [
    (LONG_A, LONG_B),  # both cut, the longest first
    ("john went home .", LONG_A),  # only the second is cut
    (LONG_A + " " + LONG_A, "a dog ."),  # only the first is cut
]
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> BertForNextSentencePrediction:
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return BertForNextSentencePrediction.from_pretrained(tiny_checkpoint, dtype="float32").eval()
    finally:
        transformers.logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[next_sentence_pb2_grpc.NextSentenceServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield next_sentence_pb2_grpc.NextSentenceServiceStub(channel)


def reference_probability(model, tokenizer, first: str, second: str, **tokenizer_kwargs) -> float:  # type: ignore[no-untyped-def]
    inputs = tokenizer(first, second, return_tensors="pt", **tokenizer_kwargs)
    with torch.no_grad():
        logits = model(**inputs).logits
    return float(torch.softmax(logits, dim=-1)[0, 0])  # label 0: the second sentence follows


def check(result: next_sentence_pb2.NextSentenceResult, expected: float, served: Served, what: str) -> None:
    assert math.isclose(result.is_next_probability, expected, rel_tol=0, abs_tol=served.variant.score_tol), (
        f"{what}: {result.is_next_probability} vs reference {expected}"
    )
    assert result.is_next == (result.is_next_probability >= 0.5), what
    if abs(expected - 0.5) > served.variant.score_tol:
        assert result.is_next == (expected >= 0.5), what


def test_next_sentence_equals_reference(stub, model, tokenizer, served: Served) -> None:  # type: ignore[no-untyped-def]
    request = next_sentence_pb2.PredictNextSentenceRequest(
        pairs=[next_sentence_pb2.SentencePair(first=a, second=b) for a, b in PAIRS]
    )
    results = stub.PredictNextSentence(request).results
    assert len(results) == len(PAIRS)
    expected = [reference_probability(model, tokenizer, a, b) for a, b in PAIRS]
    for (a, b), result, probability in zip(PAIRS, results, expected):
        check(result, probability, served, f"({a!r}, {b!r})")
    # Not degenerate: both verdicts occur (else pick other PAIRS for the tiny model).
    assert len({p >= 0.5 for p in expected}) == 2, expected


def test_one_pair_per_request_equals_reference(stub, model, tokenizer, served: Served) -> None:  # type: ignore[no-untyped-def]
    for a, b in PAIRS:
        request = next_sentence_pb2.PredictNextSentenceRequest(
            pairs=[next_sentence_pb2.SentencePair(first=a, second=b)]
        )
        (result,) = stub.PredictNextSentence(request).results
        check(result, reference_probability(model, tokenizer, a, b), served, f"({a!r}, {b!r})")


def test_truncated_pair_equals_reference_with_longest_first(stub, model, tokenizer, served: Served) -> None:  # type: ignore[no-untyped-def]
    for a, b in OVER_LONG:
        assert len(tokenizer(a, b)["input_ids"]) > MAX_LENGTH
        request = next_sentence_pb2.PredictNextSentenceRequest(
            pairs=[next_sentence_pb2.SentencePair(first=a, second=b)], truncate=True
        )
        (result,) = stub.PredictNextSentence(request).results
        expected = reference_probability(model, tokenizer, a, b, truncation="longest_first", max_length=MAX_LENGTH)
        check(result, expected, served, f"truncated ({a[:20]!r}..., {b[:20]!r}...)")
