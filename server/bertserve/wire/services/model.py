"""bertserve.v1.ModelService: what encoder and heads this server runs."""

from __future__ import annotations

import grpc
from bertserve_client.v1 import model_pb2, model_pb2_grpc

from bertserve.model.registry import HeadRecord, HeadState
from bertserve.plugin.hooks import API_VERSION
from bertserve.runtime.runner import Runtime
from bertserve.wire.services.inference import to_struct

_STATES = {
    HeadState.LOADED: model_pb2.HEAD_STATE_LOADED,
    HeadState.UNAVAILABLE: model_pb2.HEAD_STATE_UNAVAILABLE,
    HeadState.FAILED: model_pb2.HEAD_STATE_FAILED,
    HeadState.REGISTERED: model_pb2.HEAD_STATE_UNSPECIFIED,
}


def head_info(record: HeadRecord) -> model_pb2.HeadInfo:
    """The wire description of a registered head."""
    head = record.head
    return model_pb2.HeadInfo(
        name=head.name,
        task=head.task,
        state=_STATES[record.state],
        reason=record.reason,
        labels=list(record.labels),
        plugin=record.plugin.name,
        description=head.description,
        input_schema=to_struct(record.input_schema),
        output_schema=to_struct(record.output_schema),
        package=record.plugin.package,
        version=record.plugin.version,
        text_fields=list(head.text_fields),
    )


class ModelService(model_pb2_grpc.ModelServiceServicer):
    """Describes the shared encoder and every registered head."""

    def __init__(self, runtime: Runtime, server_version: str) -> None:
        self._runtime = runtime
        self._version = server_version

    async def GetServerInfo(  # noqa: N802
        self, request: model_pb2.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> model_pb2.GetServerInfoResponse:
        encoder = self._runtime.encoder
        return model_pb2.GetServerInfoResponse(
            model=encoder.model_name,
            model_type=str(encoder.config.model_type),
            max_sequence_length=encoder.max_sequence_length,
            device=str(encoder.device),
            dtype=encoder.dtype_name,
            hidden_size=encoder.hidden_size,
            num_layers=int(encoder.config.num_hidden_layers),
            vocab_size=len(encoder.tokenizer),
            mask_token=str(encoder.tokenizer.mask_token or ""),
            encoder_fingerprint=encoder.fingerprint,
            server_version=self._version,
            plugin_api_version=API_VERSION,
        )

    async def ListHeads(  # noqa: N802
        self, request: model_pb2.ListHeadsRequest, context: grpc.aio.ServicerContext
    ) -> model_pb2.ListHeadsResponse:
        return model_pb2.ListHeadsResponse(heads=[head_info(r) for r in self._runtime.registry.records()])

    async def GetHead(  # noqa: N802
        self, request: model_pb2.GetHeadRequest, context: grpc.aio.ServicerContext
    ) -> model_pb2.GetHeadResponse:
        return model_pb2.GetHeadResponse(head=head_info(self._runtime.registry.record(request.name)))
