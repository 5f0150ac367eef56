"""inference.GRPCInferenceService: the Open Inference Protocol over gRPC, with Triton's messages.

Each head is a model (`bertserve.wire.oip.models` says how its inputs and
outputs become tensors). ModelInfer runs through the runtime's one queue
exactly as the native services do, so validation and errors are theirs.
Triton's other RPCs answer UNIMPLEMENTED, naming the ones served.
"""

from __future__ import annotations

from typing import Any

import grpc
from bertserve_client.oip import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pb_grpc

from bertserve.model.registry import HeadState
from bertserve.plugin.errors import HeadNotFound, NotServing
from bertserve.plugin.head import Head
from bertserve.plugin.schema import SchemaValidator
from bertserve.runtime.request_context import current_request
from bertserve.runtime.runner import Runtime
from bertserve.version import __version__
from bertserve.wire.oip.models import (
    VERSIONS,
    ModelSignature,
    TensorFields,
    check_inputs,
    head_signature,
    output_tensors,
    parse_items,
    task_inputs,
)
from bertserve.wire.oip.tensors import encode_raw, input_tensors

SERVICE_NAME = "inference.GRPCInferenceService"
SERVED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
SERVER_NAME = "bertserve"


class GRPCInferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's health, metadata and inference RPCs; heads are its models."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._signatures: dict[str, tuple[ModelSignature, SchemaValidator]] = {}

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        try:
            return pb.ServerReadyResponse(ready=self._runtime.serving())  # False while draining or stuck
        except NotServing:  # still loading
            return pb.ServerReadyResponse(ready=False)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[])

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        record = self._runtime.registry.record(request.name)
        _check_version(request.name, request.version)
        return pb.ModelReadyResponse(ready=record.state is HeadState.LOADED)

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        record = self._runtime.registry.record(request.name)
        _check_version(request.name, request.version)
        metadata = self._signature(record.head)[0].metadata()
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        head = self._runtime.registry.get(request.model_name)
        _check_version(request.model_name, request.model_version)
        note = current_request()
        if note is not None:
            note.add_head(head.name)
        signature, validator = self._signature(head)
        check_inputs(signature, [(t.name, t.datatype, tuple(t.shape)) for t in request.inputs])
        tensors = input_tensors([_input(t) for t in request.inputs], list(request.raw_input_contents))
        items = task_inputs(signature, tensors, {k: _parameter(v) for k, v in request.parameters.items()})
        fields = TensorFields("inputs", tensors=signature.text_fields)
        parsed = parse_items(head, validator, items, fields)
        outputs = await self._runtime.run(head, parsed, context, fields=fields)
        rendered = [head.render_output(output) for output in outputs]
        result = output_tensors(signature, rendered, [o.name for o in request.outputs])
        described = [
            pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in result
        ]
        return pb.ModelInferResponse(
            model_name=head.name,
            model_version=VERSIONS[0],
            id=request.id,
            outputs=described,
            raw_output_contents=[encode_raw(t) for t in result],
        )

    def _signature(self, head: Head[Any, Any]) -> tuple[ModelSignature, SchemaValidator]:
        """The head's model signature and compiled input schema, from the schemas the registry recorded."""
        cached = self._signatures.get(head.name)
        if cached is None:
            record = self._runtime.registry.record(head.name)
            input_schema = record.input_schema or head.input_schema()
            output_schema = record.output_schema or head.output_schema()
            signature = head_signature(head, input_schema, output_schema)
            cached = self._signatures[head.name] = (signature, SchemaValidator(input_schema))
        return cached


class UnimplementedMethods(grpc.GenericRpcHandler):
    """Triton's other RPCs of the service (ModelStreamInfer, ModelConfig, ...): UNIMPLEMENTED, naming those served."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        prefix = f"/{SERVICE_NAME}/"
        method = handler_call_details.method
        if not method.startswith(prefix):
            return None
        message = (
            f"bertserve does not implement {method.removeprefix('/')}; its {SERVICE_NAME} serves {', '.join(SERVED)}"
        )

        async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        return grpc.stream_stream_rpc_method_handler(refuse)


def add_to_server(servicer: GRPCInferenceService, server: grpc.aio.Server) -> None:
    """Add the servicer, and UNIMPLEMENTED answers for the protocol's RPCs it does not serve."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((UnimplementedMethods(),))


def _check_version(name: str, version: str) -> None:
    if version and version not in VERSIONS:
        raise HeadNotFound(
            f"model {name!r} has no version {version!r}; its only version is {VERSIONS[0]} (or leave it empty)",
            reason="MODEL_VERSION_NOT_FOUND",
            metadata={"head": name, "version": version},
        )


def _input(tensor: pb.ModelInferRequest.InferInputTensor) -> dict[str, Any]:
    contents = {descriptor.name: list(values) for descriptor, values in tensor.contents.ListFields()}
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "contents": contents}


def _parameter(parameter: pb.InferParameter) -> Any:
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)
