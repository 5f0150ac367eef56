"""Fill-mask through gRPC equals the transformers fill-mask pipeline on the same weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import transformers
from bertserve_client.v1 import fill_mask_pb2, fill_mask_pb2_grpc
from gpu import Served, assert_same_ranking, served  # noqa: F401 (fixture)
from transformers import AutoTokenizer, BertForMaskedLM, pipeline

TEXTS = [
    # one mask
    "the capital of france is [MASK] .",
    "[MASK] went home .",
    "what a great movie , i [MASK] it ! the acting was fun , the plot was long and the music was good , "
    "but the book was better and the people were bad .",
    "Paris, it's [MASK]? Yes!",
    "the café is [MASK] ; really",  # "é" loses its accent, ";" is [UNK]
    # two masks
    "the [MASK] of france is [MASK] .",
    "[MASK] [MASK]",
    # three masks, punctuation
    "john [MASK] to [MASK] , and mary went to [MASK] !",
    "[MASK] - [MASK] ' s [MASK] ?",
]
# Each target maps to a vocabulary entry, else to its first wordpiece:
# "zebra" -> "z", "Paris" -> "paris" (a duplicate), "walking" -> "w".
TARGET_SETS = [
    ("paris", "berlin", "rome", "zebra", "Paris"),
    ("##s", "home", "what", "walking", "night", "movie", "city"),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def fill_mask(tiny_checkpoint: Path, tokenizer: transformers.PreTrainedTokenizerBase) -> Any:
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # load report, "target not in vocabulary" warnings
    try:
        model = BertForMaskedLM.from_pretrained(tiny_checkpoint, dtype="float32").eval()
        yield pipeline("fill-mask", model=model, tokenizer=tokenizer, device="cpu")
    finally:
        transformers.logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[fill_mask_pb2_grpc.FillMaskServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield fill_mask_pb2_grpc.FillMaskServiceStub(channel)


def per_mask(result: list[Any]) -> list[list[dict[str, Any]]]:
    """The pipeline returns a list of dicts for one mask, a list of lists for several."""
    if result and isinstance(result[0], dict):
        return [result]
    return result


def reference(fill_mask: Any, text: str, top_k: int, targets: tuple[str, ...]) -> tuple[list, list]:
    """The pipeline's ranking for `top_k`, and every candidate's prediction per mask."""
    kwargs: dict[str, Any] = {"targets": list(targets)} if targets else {}
    ranked = per_mask(fill_mask(text, top_k=top_k, **kwargs))
    everything = per_mask(fill_mask(text, top_k=len(fill_mask.tokenizer), **kwargs))
    return ranked, [{p["token"]: p for p in mask} for mask in everything]


def check_against_pipeline(
    result: fill_mask_pb2.FillMaskResult,
    text: str,
    top_k: int,
    targets: tuple[str, ...],
    fill_mask: Any,
    tokenizer: transformers.PreTrainedTokenizerBase,
    served: Served,
) -> None:
    ranked, everything = reference(fill_mask, text, top_k, targets)
    input_ids = tokenizer(text)["input_ids"]
    mask_positions = [i for i, t in enumerate(input_ids) if t == tokenizer.mask_token_id]
    assert [m.token_index for m in result.masks] == mask_positions
    assert len(result.masks) == len(ranked) == text.count("[MASK]")
    for number, (mask, expected, candidates) in enumerate(zip(result.masks, ranked, everything)):
        what = f"{text!r} mask {number} top_k={top_k} targets={targets}"
        assert_same_ranking(
            [(p.token_id, p.score) for p in mask.predictions],
            [(p["token"], p["score"]) for p in expected],
            {token_id: p["score"] for token_id, p in candidates.items()},
            served.variant,
            what,
        )
        for prediction in mask.predictions:
            assert prediction.token == tokenizer.convert_ids_to_tokens(prediction.token_id), what
            if len(mask_positions) == 1:
                assert prediction.sequence == candidates[prediction.token_id]["sequence"], what


@pytest.mark.parametrize("top_k", [1, 5, 10])
def test_fill_mask_equals_pipeline(stub, fill_mask, tokenizer, served: Served, top_k: int) -> None:  # type: ignore[no-untyped-def]
    for text in TEXTS:
        response = stub.FillMask(fill_mask_pb2.FillMaskRequest(texts=[text], top_k=top_k))
        assert len(response.results) == 1
        check_against_pipeline(response.results[0], text, top_k, (), fill_mask, tokenizer, served)


@pytest.mark.parametrize("targets", TARGET_SETS, ids=["in-and-out-of-vocabulary", "wordpieces"])
@pytest.mark.parametrize("top_k", [1, 5, 10])
def test_fill_mask_with_targets_equals_pipeline(  # type: ignore[no-untyped-def]
    stub, fill_mask, tokenizer, served: Served, top_k: int, targets: tuple[str, ...]
) -> None:
    for text in TEXTS:
        response = stub.FillMask(fill_mask_pb2.FillMaskRequest(texts=[text], top_k=top_k, targets=list(targets)))
        check_against_pipeline(response.results[0], text, top_k, targets, fill_mask, tokenizer, served)
        vocab = tokenizer.get_vocab()
        distinct = len({vocab.get(t, tokenizer(t, add_special_tokens=False)["input_ids"][0]) for t in targets})
        for mask in response.results[0].masks:
            assert len(mask.predictions) == min(top_k, distinct)


def test_out_of_vocabulary_target_maps_to_its_first_wordpiece(stub, tokenizer, served: Served) -> None:  # type: ignore[no-untyped-def]
    assert "zebra" not in tokenizer.get_vocab()
    response = stub.FillMask(fill_mask_pb2.FillMaskRequest(texts=["the [MASK] is red ."], targets=["zebra"]))
    (prediction,) = response.results[0].masks[0].predictions
    assert prediction.token == tokenizer.tokenize("zebra")[0] == "z"


@pytest.mark.parametrize("targets", [(), TARGET_SETS[1]], ids=["vocabulary", "targets"])
def test_one_request_equals_separate_requests(stub, served: Served, targets: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    together = stub.FillMask(fill_mask_pb2.FillMaskRequest(texts=TEXTS, top_k=10, targets=list(targets))).results
    assert len(together) == len(TEXTS)
    for text, joint in zip(TEXTS, together):
        (alone,) = stub.FillMask(fill_mask_pb2.FillMaskRequest(texts=[text], top_k=10, targets=list(targets))).results
        assert len(joint.masks) == len(alone.masks)
        for number, (a, b) in enumerate(zip(joint.masks, alone.masks)):
            assert a.token_index == b.token_index
            scores = {p.token_id: p.score for p in b.predictions}
            assert_same_ranking(
                [(p.token_id, p.score) for p in a.predictions],
                [(p.token_id, p.score) for p in b.predictions],
                scores,
                served.variant,
                f"{text!r} mask {number}: one request vs separate",
            )
            sequences = {p.token_id: p.sequence for p in b.predictions}
            for p in a.predictions:
                if p.token_id in sequences:
                    assert p.sequence == sequences[p.token_id], f"{text!r} mask {number}"


def test_special_token_targets_sequence_equals_pipeline(stub, fill_mask, tokenizer, served: Served) -> None:  # type: ignore[no-untyped-def]
    text, targets = "the capital of france is [MASK] .", ("[MASK]", "[CLS]", "home")
    response = stub.FillMask(fill_mask_pb2.FillMaskRequest(texts=[text], top_k=3, targets=list(targets)))
    check_against_pipeline(response.results[0], text, 3, targets, fill_mask, tokenizer, served)
