"""bertserve.v1.InferenceService: Predict, Analyze and PredictStream on any head, with JSON-like data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from bertserve_client.v1 import inference_pb2, inference_pb2_grpc
from google.protobuf import struct_pb2

from bertserve.plugin.errors import BertServeError
from bertserve.runtime.analyze import AnalyzeFields
from bertserve.runtime.runner import Runtime
from bertserve.wire.services.stream import PREDICT_FIELDS, head_error, predict_stream, struct_data

ANALYZE_FIELDS = AnalyzeFields(inputs="inputs", heads="heads", head="head", options="options")


def to_struct(data: dict[str, object]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    """Reaches every head through its JSON Schemas; Analyze shares one encoder pass."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def Predict(  # noqa: N802
        self, request: inference_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.PredictResponse:
        data = struct_data(request.input, PREDICT_FIELDS.items)
        output = await self._runtime.predict(request.head, data, context, fields=PREDICT_FIELDS)
        return inference_pb2.PredictResponse(output=to_struct(output))

    async def PredictStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[inference_pb2.PredictStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[inference_pb2.PredictStreamResponse]:
        limit = self._runtime.config.max_inputs_per_request
        async with aclosing(predict_stream(self._runtime, request_iterator, context, limit=limit)) as responses:
            async for response in responses:
                yield response

    async def Analyze(  # noqa: N802
        self, request: inference_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.AnalyzeResponse:
        texts = [(i.text, i.text_pair or None) for i in request.inputs]
        heads = [(h.head, struct_data(h.options, f"heads[{k}].options")) for k, h in enumerate(request.heads)]
        outputs = await self._runtime.analyze(texts, heads, context, fields=ANALYZE_FIELDS)
        return inference_pb2.AnalyzeResponse(
            results=[
                inference_pb2.AnalyzeResult(
                    outputs=[head_output(name, output) for (name, _), output in zip(heads, per_head)]
                )
                for per_head in outputs
            ]
        )


def head_output(name: str, output: dict[str, object] | BertServeError) -> inference_pb2.HeadOutput:
    """One head's Analyze output for one input, or its error in place."""
    if not isinstance(output, BertServeError):
        return inference_pb2.HeadOutput(head=name, output=to_struct(output))
    return inference_pb2.HeadOutput(head=name, error=head_error(output))
