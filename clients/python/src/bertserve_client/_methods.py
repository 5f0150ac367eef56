"""The RPC methods of both clients, written once.

Each method of :class:`~bertserve_client.BertServeClient` and
:class:`~bertserve_client.AsyncBertServeClient` that makes one RPC is a
function here, with the method's typed signature (overloads included) and
its docstring. It plans the call with :mod:`._requests` and returns it as a
:class:`Call`, sending nothing. Each client module turns every function into
a method that makes the call, blocking or awaited, and converts the response
(``client.py`` and ``aio.py``); :func:`dress_as_method` gives that method the
function's name, docstring and signature. Type checkers carry each overload
through the conversion (a ParamSpec is mapped over every overload).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from . import _requests as rq
from ._requests import USE_CLIENT_DEFAULT, Timeout
from .errors import HeadOutputError
from .results import AnswerResult, FillMaskResult, HeadInfo, NextSentenceResult, SentimentResult, ServerInfo

T_co = TypeVar("T_co", covariant=True)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One RPC ready to make: the stub method that sends it, the planned request, the per-call timeout."""

    rpc: Callable[[rq.Stubs], Callable[..., Any]]
    prepared: rq.Prepared[T_co]
    timeout: Timeout


def dress_as_method(method: F, plan: Callable[..., Call[Any]], owner: str) -> F:
    """Give ``method``, which makes the calls ``plan`` plans, the name, docstring and signature of ``plan``.

    ``owner`` is the name of the class ``method`` is a method of.
    """
    functools.update_wrapper(method, plan, assigned=("__name__", "__doc__"))
    method.__qualname__ = f"{owner}.{plan.__name__}"
    signature = inspect.signature(plan)
    returns = signature.return_annotation  # "Call[X]": the method gives (or, async, awaits to) X
    if isinstance(returns, str) and returns.startswith("Call[") and returns.endswith("]"):
        returns = returns[len("Call[") : -1]
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *signature.parameters.values()]
    method.__signature__ = signature.replace(parameters=parameters, return_annotation=returns)  # type: ignore[attr-defined]
    return method


@overload
def fill_mask(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too
    text_or_texts: str,
    *,
    top_k: int | None = None,
    targets: Sequence[str] | None = None,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[FillMaskResult]: ...


@overload
def fill_mask(
    text_or_texts: Sequence[str],
    *,
    top_k: int | None = None,
    targets: Sequence[str] | None = None,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[list[FillMaskResult]]: ...


def fill_mask(
    text_or_texts: str | Sequence[str],
    *,
    top_k: int | None = None,
    targets: Sequence[str] | None = None,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[FillMaskResult | list[FillMaskResult]]:
    """Predict the tokens behind the mask tokens (``ServerInfo.mask_token``) of text(s).

    Args:
        text_or_texts: A text, or a sequence of texts, each with at least one mask.
        top_k: Candidates per mask; default: the server's (see ``top_k`` in
            ``fill_mask.proto``).
        targets: Optional candidate words; only these are scored.
        truncate: Truncate over-long texts instead of rejecting them.
        head: Head name; empty selects the built-in "fill-mask" head.
        timeout: Deadline of this call in seconds, overriding the client's.
    """
    prepared = rq.prepare_fill_mask(text_or_texts, top_k=top_k, targets=targets, truncate=truncate, head=head)
    return Call(lambda stubs: stubs.fill_mask.FillMask, prepared, timeout)


@overload
def next_sentence(
    first: str,
    second: str,
    *,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[NextSentenceResult]: ...


@overload
def next_sentence(
    pairs: Sequence[tuple[str, str]],
    /,
    *,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[list[NextSentenceResult]]: ...


def next_sentence(
    first: str | Sequence[tuple[str, str]],
    second: str | None = None,
    *,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[NextSentenceResult | list[NextSentenceResult]]:
    """Score whether ``second`` follows ``first``, or each of a sequence of (first, second) pairs.

    Args:
        first: The first sentence, or a sequence of (first, second) pairs.
        second: The candidate next sentence (omit when passing pairs).
        truncate: Truncate over-long pairs instead of rejecting them.
        head: Head name; empty selects the built-in "next-sentence" head.
        timeout: Deadline of this call in seconds, overriding the client's.
    """
    prepared = rq.prepare_next_sentence(first, second, truncate=truncate, head=head)
    return Call(lambda stubs: stubs.next_sentence.PredictNextSentence, prepared, timeout)


@overload
def sentiment(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too
    text_or_texts: str,
    *,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[SentimentResult]: ...


@overload
def sentiment(
    text_or_texts: Sequence[str],
    *,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[list[SentimentResult]]: ...


def sentiment(
    text_or_texts: str | Sequence[str],
    *,
    truncate: bool = False,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[SentimentResult | list[SentimentResult]]:
    """Classify the sentiment of a text or of each of a sequence of texts.

    Args:
        text_or_texts: A text or a sequence of texts.
        truncate: Truncate over-long texts instead of rejecting them.
        head: Head name; empty selects the built-in "sentiment" head.
        timeout: Deadline of this call in seconds, overriding the client's.
    """
    prepared = rq.prepare_sentiment(text_or_texts, truncate=truncate, head=head)
    return Call(lambda stubs: stubs.sentiment.ClassifySentiment, prepared, timeout)


@overload
def answer(
    question: str,
    context: str,
    *,
    top_k: int | None = None,
    max_answer_length: int | None = None,
    doc_stride: int | None = None,
    allow_no_answer: bool | None = None,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[AnswerResult]: ...


@overload
def answer(
    pairs: Sequence[tuple[str, str]],
    /,
    *,
    top_k: int | None = None,
    max_answer_length: int | None = None,
    doc_stride: int | None = None,
    allow_no_answer: bool | None = None,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[list[AnswerResult]]: ...


def answer(
    question: str | Sequence[tuple[str, str]],
    context: str | None = None,
    *,
    top_k: int | None = None,
    max_answer_length: int | None = None,
    doc_stride: int | None = None,
    allow_no_answer: bool | None = None,
    head: str = "",
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[AnswerResult | list[AnswerResult]]:
    """Extract answer spans to a question from its context, or for each (question, context) pair.

    Args:
        question: The question, or a sequence of (question, context) pairs.
        context: The text to find the answer in (omit when passing pairs).
        top_k: Answers per question, best first; default: the server's (see
            ``top_k`` in ``question_answering.proto``).
        max_answer_length: Longest answer in tokens; default: the server's
            (see ``max_answer_length`` in ``question_answering.proto``).
        doc_stride: Overlap in tokens between windows of a long context;
            default: the server's (see ``doc_stride`` in
            ``question_answering.proto``).
        allow_no_answer: True to allow a "no answer" result, False to never
            return one, None for the head's own setting.
        head: Head name; empty selects the built-in "question-answering" head.
        timeout: Deadline of this call in seconds, overriding the client's.
    """
    prepared = rq.prepare_answer(
        question,
        context,
        top_k=top_k,
        max_answer_length=max_answer_length,
        doc_stride=doc_stride,
        allow_no_answer=allow_no_answer,
        head=head,
    )
    return Call(lambda stubs: stubs.question_answering.AnswerQuestion, prepared, timeout)


def server_info(*, timeout: Timeout = USE_CLIENT_DEFAULT) -> Call[ServerInfo]:
    """Describe the shared encoder and the server."""
    return Call(lambda stubs: stubs.model.GetServerInfo, rq.prepare_server_info(), timeout)


def list_heads(*, timeout: Timeout = USE_CLIENT_DEFAULT) -> Call[list[HeadInfo]]:
    """List every registered head, loaded or not, in registration order."""
    return Call(lambda stubs: stubs.model.ListHeads, rq.prepare_list_heads(), timeout)


def get_head(name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Call[HeadInfo]:
    """Describe head ``name``, with its input and output JSON Schemas.

    Raises:
        NotFoundError: No head is registered under ``name``.
    """
    return Call(lambda stubs: stubs.model.GetHead, rq.prepare_get_head(name), timeout)


def predict(
    head: str,
    input: Mapping[str, Any],
    *,
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[dict[str, Any]]:
    """Run head ``head`` on one JSON-like input (``InferenceService.Predict``).

    Reaches every head, built-in or from a plugin; :meth:`get_head` gives
    the JSON Schemas of its input and output.

    Args:
        head: Head name (see :meth:`list_heads`).
        input: The input, e.g. ``{"text": "a great movie"}``; it must
            validate against the head's ``input_schema``.
        timeout: Deadline of this call in seconds, overriding the client's.

    Returns:
        The head's output as a plain dict, whole numbers as int (token
        ids, offsets).

    Raises:
        TypeError: ``input`` holds a value with no JSON form.
        ValueError: ``input`` holds a non-finite number or an int beyond 2**53.
    """
    return Call(lambda stubs: stubs.inference.Predict, rq.prepare_predict(head, input), timeout)


@overload
def analyze(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too
    texts: str,
    heads: Sequence[str | tuple[str, Mapping[str, Any]]],
    *,
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[dict[str, dict[str, Any] | HeadOutputError]]: ...


@overload
def analyze(
    texts: Sequence[str | tuple[str, str]],
    heads: Sequence[str | tuple[str, Mapping[str, Any]]],
    *,
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[list[dict[str, dict[str, Any] | HeadOutputError]]]: ...


def analyze(
    texts: str | Sequence[str | tuple[str, str]],
    heads: Sequence[str | tuple[str, Mapping[str, Any]]],
    *,
    timeout: Timeout = USE_CLIENT_DEFAULT,
) -> Call[dict[str, dict[str, Any] | HeadOutputError] | list[dict[str, dict[str, Any] | HeadOutputError]]]:
    """Run several heads on the same text(s), one encoder pass per text (``InferenceService.Analyze``).

    Args:
        texts: A text, or a sequence of texts and (text, text_pair) pairs
            (pair heads such as "next-sentence" read pairs; the others
            single texts). For one pair, pass ``[(text, text_pair)]``.
        heads: Head names, or (name, options) pairs whose options join each
            input, e.g. ``["sentiment", ("fill-mask", {"top_k": 3})]``.
            The heads' ``text_fields`` are filled from ``texts``. A head
            may appear once only.
        timeout: Deadline of this call in seconds, overriding the client's.

    Returns:
        For each input, a dict mapping each head name to its output (as
        :meth:`predict` returns it), in the order of ``heads``; one dict
        for a str, a list in input order for a sequence. A head that
        failed on one input maps there to a
        :class:`~bertserve_client.HeadOutputError` (not raised) with the
        failure's ``code``, ``message``, ``reason`` and ``field``; the
        other heads and inputs are answered as usual.

    Raises:
        TypeError: An argument or option value has the wrong type.
        ValueError: A head is listed twice, or an option holds a number
            with no exact JSON form.
    """
    return Call(lambda stubs: stubs.inference.Analyze, rq.prepare_analyze(texts, heads), timeout)
