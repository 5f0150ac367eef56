"""Python client of bertserve, a gRPC server for one shared BERT encoder with task heads.

Use :class:`BertServeClient` (blocking) or :class:`AsyncBertServeClient`
(asyncio); both return the typed, immutable results of
:mod:`bertserve_client.results` and raise the :class:`BertServeError`
hierarchy of :mod:`bertserve_client.errors`. The generated gRPC stubs live in
:mod:`bertserve_client.v1`.

Example::

    from bertserve_client import BertServeClient

    with BertServeClient("localhost:50051") as client:
        client.wait_until_ready()
        best = client.answer("Where is the Eiffel Tower?", "The Eiffel Tower is in Paris.").best
        # Any head, built-in or from a plugin, with JSON-like input and output:
        output = client.predict("sentiment", {"text": "What a lovely day."})
"""

from __future__ import annotations

from ._channel import PemSource, RetryPolicy
from ._requests import USE_CLIENT_DEFAULT, UseClientDefault
from ._streams import StreamInput, StreamResult
from ._timings import ServerTimings
from .aio import AsyncBertServeClient
from .client import BertServeClient
from .errors import (
    BertServeError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    HeadOutputError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RequestCancelledError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    error_from_rpc,
)
from .results import (
    Answer,
    AnswerResult,
    FillMaskResult,
    HeadInfo,
    HeadState,
    LabelScore,
    MaskPredictions,
    NextSentenceResult,
    SentimentResult,
    ServerInfo,
    TokenPrediction,
    dict_to_struct,
    struct_to_dict,
)

__version__ = "0.1.0"

__all__ = [
    "USE_CLIENT_DEFAULT",
    "Answer",
    "AnswerResult",
    "AsyncBertServeClient",
    "BertServeClient",
    "BertServeError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "FillMaskResult",
    "HeadInfo",
    "HeadOutputError",
    "StreamInput",
    "StreamResult",
    "HeadState",
    "InternalError",
    "InvalidArgumentError",
    "LabelScore",
    "MaskPredictions",
    "NextSentenceResult",
    "NotFoundError",
    "PermissionDeniedError",
    "PemSource",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SentimentResult",
    "ServerInfo",
    "ServerTimings",
    "TokenPrediction",
    "UnauthenticatedError",
    "UnavailableError",
    "UseClientDefault",
    "__version__",
    "dict_to_struct",
    "error_from_rpc",
    "struct_to_dict",
]
