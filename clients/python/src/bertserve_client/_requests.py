"""Request building and response conversion shared by the sync and async clients.

Each RPC has one ``prepare_*`` function that turns Python arguments into a
:class:`Prepared` call: the request message plus the function that turns the
response into result objects (one result for a single input, a list for a
sequence of inputs). The clients only send the request and apply ``convert``.
Only argument *types* are checked here; values are the server's to judge,
except those the client cannot send or represent faithfully: a non-finite
number or an int beyond 2**53 in a JSON input, and a head listed twice in
Analyze (whose results are keyed by head name) raise ValueError. An option
given as None is left unset (0) on the wire, where it means "the server's
default": the defaults live in the server and the .proto comments only.
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from .errors import HeadOutputError, InternalError, UnavailableError, error_from_rpc
from .results import (
    AnswerResult,
    FillMaskResult,
    HeadInfo,
    NextSentenceResult,
    SentimentResult,
    ServerInfo,
    dict_to_struct,
    struct_to_dict,
)
from .v1 import (
    fill_mask_pb2,
    fill_mask_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    next_sentence_pb2,
    next_sentence_pb2_grpc,
    question_answering_pb2,
    question_answering_pb2_grpc,
    sentiment_pb2,
    sentiment_pb2_grpc,
)

T = TypeVar("T")
R = TypeVar("R")


class UseClientDefault(enum.Enum):
    """Type of :data:`USE_CLIENT_DEFAULT`: "no per-call timeout given" (``None`` means no deadline)."""

    USE_CLIENT_DEFAULT = "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT: Final = UseClientDefault.USE_CLIENT_DEFAULT

# A per-call timeout: seconds, None for no deadline, or the client's default.
Timeout: TypeAlias = float | UseClientDefault | None

# What Analyze takes: a text or a (text, text_pair) pair; a head name or a
# (head name, options) pair; and what it gives per input: each head's output,
# or why that head has none.
AnalyzeText: TypeAlias = str | tuple[str, str]
AnalyzeHead: TypeAlias = str | tuple[str, Mapping[str, Any]]
AnalyzeOutputs: TypeAlias = dict[str, dict[str, Any] | HeadOutputError]


def resolve_timeout(timeout: float | UseClientDefault | None, default: float | None) -> float | None:
    """The per-call timeout when one was given, else the client's default."""
    return default if isinstance(timeout, UseClientDefault) else timeout


class Stubs:
    """The generated stubs of every bertserve service, on one sync or aio channel."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.fill_mask = fill_mask_pb2_grpc.FillMaskServiceStub(channel)
        self.next_sentence = next_sentence_pb2_grpc.NextSentenceServiceStub(channel)
        self.sentiment = sentiment_pb2_grpc.SentimentServiceStub(channel)
        self.question_answering = question_answering_pb2_grpc.QuestionAnsweringServiceStub(channel)
        self.model = model_pb2_grpc.ModelServiceStub(channel)
        self.inference = inference_pb2_grpc.InferenceServiceStub(channel)


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A request ready to send and the conversion of its response."""

    request: Message
    convert: Callable[[Any], T]


def prepare_fill_mask(
    text_or_texts: str | Sequence[str],
    *,
    top_k: int | None,
    targets: Sequence[str] | None,
    truncate: bool,
    head: str,
) -> Prepared[FillMaskResult | list[FillMaskResult]]:
    """Build a FillMaskRequest; converts to FillMaskResult or a list of them."""
    texts, single = _texts(text_or_texts, "text_or_texts")
    request = fill_mask_pb2.FillMaskRequest(
        texts=texts,
        top_k=_server_default_if_none(top_k, "top_k"),
        targets=_strings(targets, "targets") if targets is not None else [],
        truncate=truncate,
        head=head,
    )
    return Prepared(request, _results(FillMaskResult.from_proto, len(texts), single))


def prepare_next_sentence(
    first: str | Sequence[tuple[str, str]],
    second: str | None,
    *,
    truncate: bool,
    head: str,
) -> Prepared[NextSentenceResult | list[NextSentenceResult]]:
    """Build a PredictNextSentenceRequest; converts to NextSentenceResult or a list."""
    pairs, single = _pairs(first, second, ("first", "second"))
    request = next_sentence_pb2.PredictNextSentenceRequest(
        pairs=[next_sentence_pb2.SentencePair(first=a, second=b) for a, b in pairs],
        truncate=truncate,
        head=head,
    )
    return Prepared(request, _results(NextSentenceResult.from_proto, len(pairs), single))


def prepare_sentiment(
    text_or_texts: str | Sequence[str], *, truncate: bool, head: str
) -> Prepared[SentimentResult | list[SentimentResult]]:
    """Build a ClassifySentimentRequest; converts to SentimentResult or a list."""
    texts, single = _texts(text_or_texts, "text_or_texts")
    request = sentiment_pb2.ClassifySentimentRequest(texts=texts, truncate=truncate, head=head)
    return Prepared(request, _results(SentimentResult.from_proto, len(texts), single))


def prepare_answer(
    question: str | Sequence[tuple[str, str]],
    context: str | None,
    *,
    top_k: int | None,
    max_answer_length: int | None,
    doc_stride: int | None,
    allow_no_answer: bool | None,
    head: str,
) -> Prepared[AnswerResult | list[AnswerResult]]:
    """Build an AnswerQuestionRequest; converts to AnswerResult or a list."""
    pairs, single = _pairs(question, context, ("question", "context"))
    if allow_no_answer is None:
        policy = question_answering_pb2.NO_ANSWER_POLICY_UNSPECIFIED
    elif allow_no_answer:
        policy = question_answering_pb2.NO_ANSWER_POLICY_ALLOW
    else:
        policy = question_answering_pb2.NO_ANSWER_POLICY_NEVER
    request = question_answering_pb2.AnswerQuestionRequest(
        inputs=[question_answering_pb2.QuestionContext(question=q, context=c) for q, c in pairs],
        top_k=_server_default_if_none(top_k, "top_k"),
        max_answer_length=_server_default_if_none(max_answer_length, "max_answer_length"),
        doc_stride=_server_default_if_none(doc_stride, "doc_stride"),
        no_answer_policy=policy,
        head=head,
    )
    return Prepared(request, _results(AnswerResult.from_proto, len(pairs), single))


def prepare_server_info() -> Prepared[ServerInfo]:
    """Build a GetServerInfoRequest; converts to ServerInfo."""
    return Prepared(model_pb2.GetServerInfoRequest(), ServerInfo.from_proto)


def prepare_list_heads() -> Prepared[list[HeadInfo]]:
    """Build a ListHeadsRequest; converts to a list of HeadInfo."""
    return Prepared(model_pb2.ListHeadsRequest(), lambda response: [HeadInfo.from_proto(h) for h in response.heads])


def prepare_get_head(name: str) -> Prepared[HeadInfo]:
    """Build a GetHeadRequest; converts to HeadInfo."""
    _check_str(name, "name")
    return Prepared(model_pb2.GetHeadRequest(name=name), lambda response: HeadInfo.from_proto(response.head))


def prepare_predict(head: str, input: Mapping[str, Any]) -> Prepared[dict[str, Any]]:
    """Build a PredictRequest; converts the output Struct to a dict (whole numbers as int)."""
    _check_str(head, "head")
    request = inference_pb2.PredictRequest(head=head, input=dict_to_struct(input, name="input"))
    return Prepared(request, lambda response: struct_to_dict(response.output))


def prepare_analyze(
    texts: AnalyzeText | Iterable[AnalyzeText], heads: Iterable[AnalyzeHead]
) -> Prepared[AnalyzeOutputs | list[AnalyzeOutputs]]:
    """Build an AnalyzeRequest; converts to one {head: output} dict per input (one dict for a str).

    Outputs are keyed by head name, so a head may appear only once in ``heads``.
    A head that failed on an input maps to a :class:`HeadOutputError` there.
    """
    if isinstance(texts, str):
        inputs, single = [inference_pb2.AnalyzeInput(text=texts)], True
    else:
        items = _items(texts, "texts must be a str or a sequence of texts and (text, text_pair) pairs")
        inputs, single = [_analyze_input(item, index) for index, item in enumerate(items)], False
    options: list[inference_pb2.HeadOptions] = []
    heads_message = "heads must be a sequence of head names and (name, options) pairs, e.g. ['sentiment']"
    for index, item in enumerate(_items(heads, heads_message)):
        name: Any
        values: Any
        if isinstance(item, str):
            name, values = item, {}
        elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
            name, values = item[0], item[1]
        else:
            raise TypeError(f"heads[{index}] must be a head name or a (name, options) pair, not {_describe(item)}")
        struct = dict_to_struct(values, name=f"heads[{index}].options")
        if any(o.head == name for o in options):
            raise ValueError(f"heads[{index}]: head {name!r} is listed twice; results are keyed by head name")
        options.append(inference_pb2.HeadOptions(head=name, options=struct))
    names = [o.head for o in options]

    def convert(response: Any) -> AnalyzeOutputs | list[AnalyzeOutputs]:
        if len(response.results) != len(inputs):
            raise InternalError(f"server returned {len(response.results)} results for {len(inputs)} inputs")
        results: list[AnalyzeOutputs] = []
        for result in response.results:
            got = [o.head for o in result.outputs]
            if got != names:
                raise InternalError(f"server returned outputs of heads {got} for heads {names}")
            results.append({o.head: _head_output(o) for o in result.outputs})
        return results[0] if single else results

    return Prepared(inference_pb2.AnalyzeRequest(inputs=inputs, heads=options), convert)


def _head_output(output: inference_pb2.HeadOutput) -> dict[str, Any] | HeadOutputError:
    if output.HasField("error"):
        return HeadOutputError.from_proto(output.head, output.error)
    return struct_to_dict(output.output)


def _analyze_input(item: Any, index: int) -> inference_pb2.AnalyzeInput:
    if isinstance(item, str):
        return inference_pb2.AnalyzeInput(text=item)
    # A bare str has a length too; a 2-character one must not pass as a pair.
    if isinstance(item, Sequence) and len(item) == 2 and all(isinstance(part, str) for part in item):
        return inference_pb2.AnalyzeInput(text=item[0], text_pair=item[1])
    raise TypeError(f"texts[{index}] must be a str or a (text, text_pair) pair of str, not {_describe(item)}")


def _items(values: Iterable[T], message: str) -> list[T]:
    if isinstance(values, (str, bytes, bytearray)) or not isinstance(values, Iterable):
        raise TypeError(f"{message}, not {type(values).__name__}")
    return list(values)


def _server_default_if_none(value: int | None, name: str) -> int:
    # 0 is proto3's unset value: the server applies its default.
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # int, and e.g. numpy integers
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    return int(value)


def _check_str(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")


def _results(from_proto: Callable[[Any], R], expected: int, single: bool) -> Callable[[Any], R | list[R]]:
    def convert(response: Any) -> R | list[R]:
        results = [from_proto(r) for r in response.results]
        if len(results) != expected:
            raise InternalError(f"server returned {len(results)} results for {expected} inputs")
        return results[0] if single else results

    return convert


def _texts(value: str | Iterable[str], name: str) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    return _strings(value, name), False


def _strings(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, (str, bytes, bytearray)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a str or a sequence of str, not {type(values).__name__}")
    items = list(values)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{index}] must be a str, not {type(item).__name__}")
    return items


def _pairs(
    first: str | Iterable[tuple[str, str]],
    second: str | None,
    names: tuple[str, str],
) -> tuple[list[tuple[str, str]], bool]:
    a, b = names
    if isinstance(first, str):
        if not isinstance(second, str):
            raise TypeError(f"{b} must be a str when {a} is a str, not {type(second).__name__}")
        return [(first, second)], True
    if second is not None:
        raise TypeError(f"pass either {a} and {b} as two str, or one sequence of ({a}, {b}) pairs")
    if isinstance(first, (bytes, bytearray)) or not isinstance(first, Iterable):
        raise TypeError(f"expected a str or a sequence of ({a}, {b}) pairs, not {type(first).__name__}")
    pairs: list[tuple[str, str]] = []
    for index, pair in enumerate(first):
        # A bare str has a length too; a 2-character one must not pass as a pair.
        valid = not isinstance(pair, str) and isinstance(pair, Sequence) and len(pair) == 2
        if not valid or not all(isinstance(part, str) for part in pair):
            raise TypeError(f"item {index} must be a ({a}, {b}) pair of str, not {_describe(pair)}")
        x, y = pair
        pairs.append((x, y))
    return pairs, False


def _describe(value: Any) -> str:
    # Name types only: inputs can be whole documents, too long to echo.
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of ({', '.join(type(v).__name__ for v in value)})"
    return type(value).__name__


# grpc.health.v1 Health/Check, called with hand-serialised bytes so the client
# does not depend on grpcio-health-checking:
# - HealthCheckRequest{service: ""} has only default fields: it serialises to b"".
# - HealthCheckResponse.status is field 1, a varint: SERVING (1) is the tag byte
#   0x08 (field 1, wire type 0) then 0x01. Anything else (UNKNOWN encodes as b"",
#   NOT_SERVING as b"\x08\x02") means "not ready yet".
HEALTH_CHECK_METHOD: Final = "/grpc.health.v1.Health/Check"
HEALTH_CHECK_REQUEST: Final = b""
HEALTH_SERVING_RESPONSE: Final = b"\x08\x01"
# Pause between two polls, and the longest single Check call while waiting.
HEALTH_POLL_INTERVAL_S: Final = 0.1
HEALTH_MAX_CHECK_S: Final = 5.0


def not_ready_error(target: str, timeout: float, last_error: grpc.RpcError | None) -> UnavailableError:
    """The error wait_until_ready raises when the server is not SERVING in time.

    ``last_error`` is the last failed Check call, or None when the last one
    answered a status other than SERVING (or none completed).
    """
    if last_error is None:
        detail = "its health check did not answer SERVING"
    else:
        detail = f"its last health check failed with {error_from_rpc(last_error).code.name}"
    return UnavailableError(f"{target} was not ready after {timeout:g} s: {detail}")
