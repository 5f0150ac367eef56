"""bertserve.v1.InferenceService/PredictStream: many inputs over one stream, each result as soon as it is computed.

A reader task takes inputs off the stream and starts each one as its own task
through the runtime: the one queue, the same validation and errors as
Predict. At most `limit` inputs are in flight (read, and their result not yet
sent); at the limit the reader stops reading, so HTTP/2 flow control pushes
back on a producer and a caller that never reads cannot grow the server's
memory. A bad input gets a result with its error and the stream goes on.
When the caller cancels, the handler is cancelled and so are the inputs'
tasks: their rows still in the queue are dropped before the encoder.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from bertserve_client.v1 import inference_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from bertserve.plugin.errors import BertServeError, FieldViolation, HeadFailed, InvalidArgument
from bertserve.plugin.service import InputFields
from bertserve.runtime.runner import Runtime
from bertserve.wire.status import code_number

log = logging.getLogger(__name__)

PREDICT_FIELDS = InputFields("input", single=True)
"""Where a Predict input sits: a PredictRequest's, and each PredictStreamRequest's, `input`."""


class _End:
    """Put on the results queue when reading ended: `error` is why, or None after a half-close."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def predict_stream(
    runtime: Runtime,
    requests: AsyncIterator[inference_pb2.PredictStreamRequest],
    context: grpc.aio.ServicerContext,
    *,
    limit: int,
) -> AsyncGenerator[inference_pb2.PredictStreamResponse, None]:
    """Answer every input of `requests`, at most `limit` in flight, results in completion order."""
    slots = asyncio.Semaphore(limit)
    results: asyncio.Queue[inference_pb2.PredictStreamResponse | _End] = asyncio.Queue()
    tasks: set[asyncio.Task[None]] = set()
    reader = asyncio.create_task(_read(runtime, requests, context, slots, results, tasks))
    try:
        while True:
            result = await results.get()
            if isinstance(result, _End):
                if result.error is not None:
                    raise result.error
                return
            yield result
            slots.release()
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()


async def _read(
    runtime: Runtime,
    requests: AsyncIterator[inference_pb2.PredictStreamRequest],
    context: grpc.aio.ServicerContext,
    slots: asyncio.Semaphore,
    results: asyncio.Queue[Any],
    tasks: set[asyncio.Task[None]],
) -> None:
    """Start a task per input, waiting for a free slot before reading the next; then wait for them all."""
    try:
        async for request in requests:
            await slots.acquire()
            task = asyncio.create_task(_answer(runtime, request, context, results))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(list(tasks))
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the stream itself broke (e.g. a malformed message)
        await results.put(_End(error))
        return
    await results.put(_End())


async def _answer(
    runtime: Runtime,
    request: inference_pb2.PredictStreamRequest,
    context: grpc.aio.ServicerContext,
    results: asyncio.Queue[Any],
) -> None:
    """Run one input as Predict would, and queue its result or its error."""
    response = inference_pb2.PredictStreamResponse(id=request.id, head=request.head)
    try:
        data = struct_data(request.input, PREDICT_FIELDS.items)
        output = await runtime.predict(request.head, data, context, fields=PREDICT_FIELDS)
        response.output.update(output)
    except BertServeError as error:
        response.error.CopyFrom(head_error(error))
    except Exception as error:
        log.exception("PredictStream input %r failed", request.id)
        response.error.CopyFrom(head_error(HeadFailed(f"internal error on input {request.id!r}: {error!r}")))
    await results.put(response)


def struct_data(struct: Message, field: str) -> dict[str, Any]:
    """A request's ``google.protobuf.Struct`` as JSON data; NaN or an infinity in it is INVALID_ARGUMENT at `field`."""
    try:
        return json_format.MessageToDict(struct)
    except ValueError as error:  # JSON has no NaN or infinity, so neither has a head's input
        violation = FieldViolation(field, f"numbers must be finite (JSON has no NaN or infinity): {error}")
        raise InvalidArgument(f"{field}: {violation.description}", field_violations=[violation]) from None


def head_error(error: BertServeError) -> inference_pb2.HeadError:
    """An error in place of one output (Analyze, PredictStream)."""
    return inference_pb2.HeadError(
        code=code_number(error),
        message=error.message,
        reason=error.reason,
        field=error.field_violations[0].field if error.field_violations else "",
    )
