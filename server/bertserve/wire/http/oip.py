"""The Open Inference Protocol's REST routes (KServe v2), through the gateway to ``inference.GRPCInferenceService``.

``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}[/versions/{version}]``, ``.../ready`` and
``POST .../infer``. The JSON is translated to the service's gRPC messages
and back (input ``data`` goes out as ``raw_input_contents``; raw outputs come
back as ``data``), so the gRPC servicer is the one implementation. Health
answers 200 when true and 400 when false, as the protocol says; errors are
the `google.rpc.Status` JSON plus the protocol's ``"error"`` string.
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.message import Message

from bertserve.wire.http.gateway import Rpc
from bertserve.wire.oip.tensors import (
    Tensor,
    check_datatype,
    decode_json_data,
    decode_raw,
    encode_raw,
    invalid,
    json_data,
)


def _parameters(values: Any, field: str, message: Any) -> None:  # a map<string, InferParameter>
    """Fill a ``map<string, InferParameter>`` from JSON (bool, integer, number or string values)."""
    if not isinstance(values, dict):
        raise invalid(field, "must be an object")
    for key, value in values.items():
        slot = message[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, str):
            slot.string_param = value
        else:
            raise invalid(f"{field}.{key}", "must be a boolean, number or string")


def infer_request(rpc: Rpc, body: Any, name: str, version: str) -> Message:
    """A ``ModelInferRequest`` from the protocol's JSON inference request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise invalid("inputs", 'send {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    request: Any = rpc.request(model_name=name, model_version=version, id=str(body.get("id", "")))
    _parameters(body.get("parameters", {}), "parameters", request.parameters)
    for k, spec in enumerate(body["inputs"]):
        where = f"inputs[{k}]"
        if not isinstance(spec, dict):
            raise invalid(where, "must be an object")
        datatype, shape = str(spec.get("datatype", "")), spec.get("shape", [])
        check_datatype(datatype, field_path=f"{where}.datatype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise invalid(f"{where}.shape", "must be a list of integers")
        tensor = request.inputs.add(name=str(spec.get("name", "")), datatype=datatype, shape=shape)
        _parameters(spec.get("parameters", {}), f"{where}.parameters", tensor.parameters)
        data = decode_json_data(datatype, shape, spec.get("data", []), field_path=f"{where}.data")
        try:
            request.raw_input_contents.append(encode_raw(Tensor(tensor.name, datatype, tuple(shape), data)))
        except (struct.error, TypeError, ValueError, OverflowError, AttributeError) as error:
            raise invalid(f"{where}.data", f"elements do not fit datatype {datatype!r}: {error}") from None
    for output in body.get("outputs", []) or []:
        if not isinstance(output, dict):
            raise invalid("outputs", "must be a list of objects with a name")
        requested = request.outputs.add(name=str(output.get("name", "")))
        _parameters(output.get("parameters", {}), "outputs.parameters", requested.parameters)
    return request


def infer_response(response: Any) -> dict[str, Any]:
    """The protocol's JSON inference response from a ``ModelInferResponse`` (raw or typed contents)."""
    outputs = []
    for k, tensor in enumerate(response.outputs):
        shape = [int(d) for d in tensor.shape]
        if k < len(response.raw_output_contents):
            data = decode_raw(tensor.datatype, shape, response.raw_output_contents[k], field_path="outputs")
        else:
            data = [v for _, values in tensor.contents.ListFields() for v in values]
        outputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": shape,
                "data": json_data(Tensor(tensor.name, tensor.datatype, tuple(shape), data)),
            }
        )
    reply: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        reply["id"] = response.id
    if response.parameters:
        reply["parameters"] = {
            key: getattr(p, p.WhichOneof("parameter_choice")) for key, p in response.parameters.items()
        }
    reply["outputs"] = outputs
    return reply


def model_metadata(response: Any) -> dict[str, Any]:
    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]} for t in specs]

    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": tensors(response.inputs),
        "outputs": tensors(response.outputs),
    }
