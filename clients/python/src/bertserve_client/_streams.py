"""PredictStream for both clients: what goes in, what comes out, and the request planning (pure).

Each input is a :class:`StreamInput` (or a ``(head, input)`` or ``(id, head,
input)`` tuple); each result a :class:`StreamResult` carrying the input's id.
Results come in the order they are computed, not the order sent. Resending
the inputs of a broken stream is in `_stream_ledger` (the bookkeeping) and
`_stream_resend` (the attempts).
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ._structs import dict_to_struct, struct_to_dict
from .errors import HeadOutputError
from .v1 import inference_pb2

Request: TypeAlias = inference_pb2.PredictStreamRequest
Response: TypeAlias = inference_pb2.PredictStreamResponse

# How many unanswered ids an error message names; its ``unanswered`` holds them all.
MESSAGE_IDS = 10


@dataclass(frozen=True)
class StreamInput:
    """One input of a stream: the head to run, its JSON input, and an id echoed in its result.

    Without an id, the input's position in the stream (``"0"``, ``"1"``, ...) is used.
    """

    head: str
    input: Mapping[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class StreamResult:
    """The result of one stream input: its output, or the error that input alone got."""

    id: str
    head: str
    output: dict[str, Any] | None = None
    error: HeadOutputError | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


StreamItem: TypeAlias = StreamInput | tuple[str, Mapping[str, Any]] | tuple[str, str, Mapping[str, Any]]


def stream_request(item: StreamItem, index: int) -> inference_pb2.PredictStreamRequest:
    """The PredictStreamRequest for input number `index` of a stream."""
    if isinstance(item, tuple):
        if len(item) == 2:
            item = StreamInput(head=item[0], input=item[1])
        elif len(item) == 3:
            item = StreamInput(id=item[0], head=item[1], input=item[2])
        else:
            raise TypeError(f"stream input {index}: a tuple must be (head, input) or (id, head, input)")
    if not isinstance(item, StreamInput):
        raise TypeError(f"stream input {index}: expected a StreamInput or a tuple, got {type(item).__name__}")
    item_id = item.id if item.id is not None else str(index)
    data = dict_to_struct(item.input, name=f"inputs[{index}].input")
    return inference_pb2.PredictStreamRequest(id=item_id, head=item.head, input=data)


def stream_result(response: inference_pb2.PredictStreamResponse) -> StreamResult:
    """A StreamResult from the server's PredictStreamResponse."""
    if response.HasField("error"):
        return StreamResult(response.id, response.head, error=HeadOutputError.from_proto(response.head, response.error))
    return StreamResult(response.id, response.head, output=struct_to_dict(response.output))


def stream_requests(inputs: Iterable[StreamItem]) -> Iterator[Request]:
    """The requests of a stream, one per input, numbered by position for default ids."""
    for index, item in enumerate(inputs):
        yield stream_request(item, index)


async def astream_requests(inputs: Iterable[StreamItem] | AsyncIterable[StreamItem]) -> AsyncIterator[Request]:
    """The requests of a stream from a sync or an async iterable of inputs."""
    if isinstance(inputs, AsyncIterable):
        index = 0
        async for item in inputs:
            yield stream_request(item, index)
            index += 1
    else:
        for request in stream_requests(inputs):
            yield request


PREDICT_STREAM_DOC = """Run many inputs, each on any head, over one stream (``InferenceService.PredictStream``).

        ``inputs`` is any iterable ({iterable}) of :class:`StreamInput`, or of
        ``(head, input)`` / ``(id, head, input)`` tuples; it is read as the
        server takes inputs, so it may be a generator that never ends. Yields
        one :class:`StreamResult` per input, tagged with the input's id, as
        soon as it is computed (so not necessarily in the order sent). An
        input the server refuses (bad input, unknown head, a failing head)
        gets a result with ``error`` set, and the stream goes on. The server
        keeps at most ``max_inputs_per_request`` inputs of a stream in
        flight and stops reading beyond that until results are read, so a
        fast producer is held back instead of growing anyone's memory.
        Stopping the iteration early (``break``, closing the generator)
        cancels the stream: inputs still queued on the server are dropped.

        ``timeout`` bounds the whole stream, every attempt included
        (default: the client's).

        A stream that breaks with one of the client's ``retry`` status codes
        (UNAVAILABLE, RESOURCE_EXHAUSTED, CANCELLED by default: its replica
        died, drained or shut down) is opened again on the same channel
        (round-robin picks a live replica when there are several) after the
        policy's backoff, and the inputs already read but not answered are
        sent again first, in the order first sent, then the rest of
        ``inputs`` (still read only once). Each input's result is yielded
        exactly once: a second result for an input already answered is
        dropped (inputs sharing an id are matched to that id's results in
        the order sent). The policy's ``max_attempts`` bounds the attempts
        in a row without a result; an attempt that got results before it
        broke starts a new count, so a long stream survives any number of
        crashes it makes progress between. With ``retry=None``, a broken
        stream is not resent.

        Raises:
            BertServeError: The stream as a whole failed (server not ready,
                authentication, deadline, a status not retried, or a break
                with no attempts left); the results already yielded stand.
                Its ``unanswered`` holds the ids of the inputs read from
                ``inputs`` that got no result, in the order sent, so none is
                lost unnoticed; the message names them too once anything was
                answered or resent. (gRPC reads ``inputs`` on a thread or task
                of its own: an input it was still reading from ``inputs``
                when the stream failed for good is read, but neither sent
                nor listed.)
"""
