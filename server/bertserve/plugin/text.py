"""Tokenization helpers shared by heads: length limits and clear input errors."""

from __future__ import annotations

from typing import Any

from transformers import BatchEncoding, PreTrainedTokenizerBase

from bertserve.plugin.errors import InputError
from bertserve.plugin.head import EncodedRow


def require_text(value: str, field: str | None = None, what: str = "text") -> None:
    """Raise `InputError` unless `value` holds something besides whitespace."""
    if not value or not value.strip():
        raise InputError(f"{what} is empty; give a non-empty string", field=field)


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    pair: str | None = None,
    *,
    max_length: int,
    truncate: bool,
    **options: Any,
) -> BatchEncoding:
    """Tokenize a text (or pair) with special tokens, within `max_length`.

    Without `truncate` an over-long input raises `InputError` naming its
    length and the limit; with it, the input is cut (the longest segment
    first, for pairs). `options` ask the tokenizer for more, e.g.
    ``return_offsets_mapping=True``.
    """
    encoding = tokenizer(
        text,
        pair,
        truncation="longest_first" if truncate else False,
        max_length=max_length if truncate else None,
        return_token_type_ids=True,
        return_attention_mask=False,
        **options,
    )
    length = len(encoding["input_ids"])
    if length > max_length:
        raise InputError(
            f"input is {length} tokens long but the model takes at most {max_length} "
            "(special tokens included); shorten it or set truncate to cut it",
            field="text" if pair is None else None,
        )
    return encoding


def encode(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    pair: str | None = None,
    *,
    max_length: int,
    truncate: bool,
) -> EncodedRow:
    """The encoder row for a text (or pair): `tokenize` without extras.

    Heads that build their rows with `encode` share encoder rows in `Analyze`.
    """
    encoding = tokenize(tokenizer, text, pair, max_length=max_length, truncate=truncate)
    return EncodedRow(input_ids=list(encoding["input_ids"]), token_type_ids=list(encoding["token_type_ids"]))


def context_room(tokenizer: PreTrainedTokenizerBase, question: str, *, window: int) -> int:
    """Tokens left for the context in a `window` holding [CLS] question [SEP] context [SEP]."""
    return window - len(tokenizer(question, add_special_tokens=False)["input_ids"]) - 3


def tokenize_windows(
    tokenizer: PreTrainedTokenizerBase, question: str, context: str, *, window: int, stride: int
) -> BatchEncoding:
    """Question and context in overlapping `window`-token windows (`stride`
    tokens of overlap), with offsets and segment ids: how span heads read them."""
    return tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=window,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
