"""The Open Inference Protocol (inference.GRPCInferenceService): pure tensor and model mapping, the raw stubs on a
live server, and Triton's own client (tritonclient[grpc], in its own environment) against the native API."""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.plugin import tasks
from bertserve.plugin.errors import InvalidArgument
from bertserve.plugin.schema import json_schema
from bertserve.wire.oip.models import model_signature, output_tensors, task_inputs
from bertserve.wire.oip.tensors import Tensor, decode_contents, decode_raw, encode_raw, input_tensors, json_data
from bertserve_client import BertServeClient
from bertserve_client.oip import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rpc import call_failure

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = "john went home at night . mary went to school in the day ."
SENTIMENT = tasks.TextClassificationInput, tasks.ClassificationOutput
FILL_MASK = tasks.FillMaskInput, tasks.FillMaskOutput
QA = tasks.QuestionAnsweringInput, tasks.QuestionAnsweringOutput


def signature(types: tuple[type, type], name: str = "m", text_fields: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return model_signature(name, json_schema(types[0]), json_schema(types[1]), text_fields)


def violation(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.field_violations[0].field


# --- (a) pure: tensors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("BYTES", [b"a", b"", "\u00e9t\u00e9".encode()]),
        ("FP64", [0.5, -1.25, 1e-300]),
        ("FP32", [0.5, -2.0]),
        ("INT64", [1, -(2**40), 0]),
        ("INT32", [7, -7]),
        ("BOOL", [True, False, True]),
        ("UINT8", [0, 255]),
    ],
)
def test_raw_encoding_round_trips(datatype: str, data: list[Any]) -> None:
    raw = encode_raw(Tensor("t", datatype, (len(data),), data))
    assert decode_raw(datatype, (len(data),), raw, field_path="raw") == data


def test_bytes_raw_encoding_is_a_little_endian_length_prefix_per_element() -> None:
    assert encode_raw(Tensor("t", "BYTES", (2,), [b"ab", "c"])) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    assert encode_raw(Tensor("t", "INT64", (1,), [1])) == struct.pack("<q", 1)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("BYTES", (1,), b"\x02\x00", "cut short"),
        ("BYTES", (1,), b"\x05\x00\x00\x00ab", "past the end"),
        ("BYTES", (2,), b"\x01\x00\x00\x00a", "1 BYTES elements for shape [2]"),
        ("FP64", (2,), b"\x00" * 8, "8 bytes for 2 FP64"),
    ],
)
def test_bad_raw_data_is_invalid_argument(datatype: str, shape: tuple[int, ...], raw: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)) as error:
        decode_raw(datatype, shape, raw, field_path="raw_input_contents[0]")
    assert violation(error) == "raw_input_contents[0]"


def test_typed_contents_must_use_the_datatype_field_with_the_shape_count() -> None:
    assert decode_contents("BYTES", (2, 1), {"bytes_contents": [b"a", b"b"]}, field_path="c") == [b"a", b"b"]
    with pytest.raises(InvalidArgument) as error:
        decode_contents("BYTES", (1,), {"fp32_contents": [1.0]}, field_path="inputs[0].contents")
    assert violation(error) == "inputs[0].contents.fp32_contents"
    with pytest.raises(InvalidArgument) as error:
        decode_contents("INT64", (3,), {"int64_contents": [1]}, field_path="inputs[0].contents")
    assert violation(error) == "inputs[0].contents.int64_contents"
    with pytest.raises(InvalidArgument, match="raw_input_contents"):
        decode_contents("FP16", (1,), {}, field_path="c")


def test_input_tensors_take_raw_contents_or_json_data() -> None:
    spec = {"name": "text", "datatype": "BYTES", "shape": [2]}
    raw = encode_raw(Tensor("text", "BYTES", (2,), [b"a", b"b"]))
    assert input_tensors([spec], [raw])[0].data == [b"a", b"b"]
    assert input_tensors([{**spec, "contents": {"bytes_contents": [b"a", b"b"]}}])[0].data == [b"a", b"b"]
    assert input_tensors([{**spec, "data": [["a"], ["b"]]}])[0] == Tensor("text", "BYTES", (2,), [b"a", b"b"])
    with pytest.raises(InvalidArgument) as error:
        input_tensors([spec, spec], [raw])
    assert violation(error) == "raw_input_contents"
    with pytest.raises(InvalidArgument) as error:
        input_tensors([{**spec, "contents": {"bytes_contents": [b"a", b"b"]}}], [raw])
    assert violation(error) == "inputs[0].contents"
    with pytest.raises(InvalidArgument) as error:
        input_tensors([{**spec, "datatype": "STRING"}], [raw])
    assert violation(error) == "inputs[0].datatype"
    with pytest.raises(InvalidArgument) as error:
        input_tensors([{**spec, "shape": [-1]}], [raw])
    assert violation(error) == "inputs[0].shape"


def test_json_data_is_text_for_bytes() -> None:
    assert json_data(Tensor("t", "BYTES", (1,), [b"caf\xc3\xa9"])) == ["caf\u00e9"]
    assert json_data(Tensor("t", "FP64", (2,), [1.5, math.nan])) == [1.5, None]


# --- (a) pure: models -------------------------------------------------------------------------------------------


def test_metadata_inputs_are_the_text_fields_and_outputs_every_leaf() -> None:
    metadata = signature(SENTIMENT, "sentiment", ("text",)).metadata()
    assert metadata["name"] == "sentiment" and metadata["versions"] == ["1"] and metadata["platform"] == "bertserve"
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "score", "datatype": "FP64", "shape": [-1]},
        {"name": "scores.length", "datatype": "INT64", "shape": [-1]},
        {"name": "scores.label", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "scores.score", "datatype": "FP64", "shape": [-1, -1]},
        {"name": "output_json", "datatype": "BYTES", "shape": [-1]},
    ]


def test_a_head_without_text_fields_takes_its_required_strings_and_booleans_map_to_bool() -> None:
    metadata = signature(QA).metadata()
    assert [i["name"] for i in metadata["inputs"]] == ["question", "context"]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs["answers.start"] == ("INT64", [-1, -1])
    assert outputs["answers.no_answer"] == ("BOOL", [-1, -1])


def test_ragged_nested_outputs_are_padded_with_their_lengths() -> None:
    fill_mask = signature(FILL_MASK)
    outputs = [
        {"masks": [{"token_index": 3, "predictions": [{"token": "a", "token_id": 7, "score": 0.5, "sequence": "s"}]}]},
        {"masks": []},
    ]
    tensors = {t.name: t for t in output_tensors(fill_mask, outputs)}
    assert tensors["masks.length"] == Tensor("masks.length", "INT64", (2,), [1, 0])
    assert tensors["masks.token_index"] == Tensor("masks.token_index", "INT64", (2, 1), [3, 0])
    assert tensors["masks.predictions.length"].data == [1, 0]
    assert tensors["masks.predictions.token"] == Tensor("masks.predictions.token", "BYTES", (2, 1, 1), [b"a", b""])
    assert tensors["masks.predictions.score"].data == [0.5, 0.0]
    assert [json.loads(v) for v in tensors["output_json"].data] == outputs


def test_requested_outputs_come_in_request_order_and_unknown_ones_are_invalid() -> None:
    sentiment = signature(SENTIMENT, text_fields=("text",))
    output = {
        "label": "pos",
        "score": 0.75,
        "scores": [{"label": "neg", "score": 0.25}, {"label": "pos", "score": 0.75}],
    }
    score, label = output_tensors(sentiment, [output], ["score", "label"])
    assert (score.data, label.data) == ([0.75], [b"pos"])
    with pytest.raises(InvalidArgument, match="no output 'labels'") as error:
        output_tensors(sentiment, [output], ["label", "labels"])
    assert violation(error) == "outputs[1].name"


def test_map_and_untyped_leaves_travel_as_json_and_arrays_of_arrays_are_named_with_brackets() -> None:
    schema = {
        "type": "object",
        "properties": {
            "extra": {"type": "object", "additionalProperties": {"type": "number"}},
            "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        },
    }
    sig = model_signature("m", {"type": "object", "properties": {}}, schema, ("text",))
    tensors = {t.name: t for t in output_tensors(sig, [{"extra": {"a": 1.0}, "grid": [[1, 2], [3]]}])}
    assert tensors["extra"].data == [b'{"a": 1.0}']
    assert tensors["grid.length"].data == [2]
    assert tensors["grid[].length"] == Tensor("grid[].length", "INT64", (1, 2), [2, 1])
    assert tensors["grid"] == Tensor("grid", "INT64", (1, 2, 2), [1, 2, 3, 0])


def test_task_inputs_join_the_text_tensors_element_wise_with_the_parameters() -> None:
    qa = signature(QA)
    question = Tensor("question", "BYTES", (2,), [b"who ?", b"where ?"])
    context = Tensor("context", "BYTES", (2, 1), [b"c1", b"c2"])
    assert task_inputs(qa, [context, question], {"top_k": 2, "priority": 1}) == [
        {"top_k": 2, "question": "who ?", "context": "c1"},
        {"top_k": 2, "question": "where ?", "context": "c2"},
    ]
    fill_mask = signature(FILL_MASK, text_fields=("text",))
    text = Tensor("text", "BYTES", (1,), [b"a [MASK]"])
    assert task_inputs(fill_mask, [text], {"targets": '["good", "bad"]'})[0]["targets"] == ["good", "bad"]


@pytest.mark.parametrize(
    ("tensors", "parameters", "field"),
    [
        ([Tensor("question", "BYTES", (1,), [b"q"])], {}, "inputs"),
        ([Tensor("text", "BYTES", (1,), [b"q"])], {}, "inputs[0].name"),
        ([Tensor("question", "FP32", (1,), [1.0])], {}, "inputs[0].datatype"),
        ([Tensor("question", "BYTES", (1, 2), [b"q", b"r"])], {}, "inputs[0].shape"),
        (
            [Tensor("question", "BYTES", (1,), [b"q"]), Tensor("context", "BYTES", (2,), [b"c", b"d"])],
            {},
            "inputs[1].shape",
        ),  # noqa: E501
        ([Tensor("question", "BYTES", (1,), [b"q"]), Tensor("question", "BYTES", (1,), [b"q"])], {}, "inputs[1].name"),
        ([Tensor("question", "BYTES", (1,), [b"\xff"]), Tensor("context", "BYTES", (1,), [b"c"])], {}, "question[0]"),
        (
            [Tensor("question", "BYTES", (1,), [b"q"]), Tensor("context", "BYTES", (1,), [b"c"])],
            {"context": "x"},
            "parameters.context",
        ),  # noqa: E501
    ],
)
def test_bad_input_tensors_are_invalid_argument(tensors: list[Tensor], parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        task_inputs(signature(QA), tensors, parameters)
    assert violation(error) == field


# --- (b) the raw generated stubs on the shared server -----------------------------------------------------------


@pytest.fixture(scope="module")
def stub(server: BackgroundServer) -> Any:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(model: str, texts: dict[str, list[str]], raw: bool = True, **parameters: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="req-1")
    for name, values in texts.items():
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(values)])
        if raw:
            request.raw_input_contents.append(encode_raw(Tensor(name, "BYTES", (len(values),), values)))
        else:
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
    for name, value in parameters.items():
        parameter = request.parameters[name]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        else:
            parameter.string_param = value
    return request


def outputs_of(response: pb.ModelInferResponse) -> dict[str, Tensor]:
    found = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        shape = tuple(output.shape)
        found[output.name] = Tensor(
            output.name, output.datatype, shape, decode_raw(output.datatype, shape, raw, field_path="out")
        )  # noqa: E501
    return found


def test_server_live_ready_and_metadata(stub: Any) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert metadata.name == "bertserve" and metadata.version


@pytest.mark.parametrize("model", ["sentiment", "fill-mask", "next-sentence", "question-answering"])
def test_every_head_is_a_ready_model_with_metadata(stub: Any, model: str) -> None:
    assert stub.ModelReady(pb.ModelReadyRequest(name=model)).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=model, version="1")).ready
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model))
    assert (metadata.name, list(metadata.versions), metadata.platform) == (model, ["1"], "bertserve")
    assert all(i.datatype == "BYTES" and list(i.shape) == [-1] for i in metadata.inputs) and metadata.inputs
    assert metadata.outputs[-1].name == "output_json"


def test_infer_matches_the_native_api_with_raw_or_typed_contents(stub: Any, server: BackgroundServer) -> None:
    texts = ["a good film .", "the film was bad ."]
    with BertServeClient(server.address) as client:
        native = client.sentiment(texts)
    for raw in (True, False):
        response = stub.ModelInfer(infer_request("sentiment", {"text": texts}, raw=raw))
        assert (response.model_name, response.model_version, response.id) == ("sentiment", "1", "req-1")
        tensors = outputs_of(response)
        assert [v.decode() for v in tensors["label"].data] == [r.label for r in native]
        assert tensors["score"].data == pytest.approx([r.score for r in native], abs=1e-5)
        assert tensors["scores.score"].shape == (2, len(native[0].scores))


def test_infer_takes_options_as_parameters_and_returns_requested_outputs(stub: Any, server: BackgroundServer) -> None:
    request = infer_request("fill-mask", {"text": ["the [MASK] was good ."]}, top_k=3)
    request.outputs.add(name="masks.predictions.token")
    request.outputs.add(name="output_json")
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["masks.predictions.token", "output_json"]
    with BertServeClient(server.address) as client:
        native = client.fill_mask("the [MASK] was good .", top_k=3)
    tokens = outputs_of(response)["masks.predictions.token"]
    assert tokens.shape == (1, 1, 3)
    assert [t.decode() for t in tokens.data] == [p.token for p in native.masks[0].predictions]
    rendered = json.loads(outputs_of(response)["output_json"].data[0])
    assert [p["score"] for p in rendered["masks"][0]["predictions"]] == pytest.approx(
        [p.score for p in native.masks[0].predictions], abs=1e-5
    )


def test_unknown_model_or_version_is_not_found(stub: Any) -> None:
    for call, request in [
        (stub.ModelInfer, infer_request("no-such-head", {"text": ["a"]})),
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="no-such-head")),
        (stub.ModelReady, pb.ModelReadyRequest(name="no-such-head")),
        (stub.ModelReady, pb.ModelReadyRequest(name="sentiment", version="2")),
    ]:
        failure = call_failure(call, request)
        assert failure.code == grpc.StatusCode.NOT_FOUND, request
        assert failure.domain == "bertserve"
    failure = call_failure(stub.ModelInfer, pb.ModelInferRequest(model_name="sentiment", model_version="7"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "MODEL_VERSION_NOT_FOUND")


@pytest.mark.parametrize(
    ("model", "change", "field"),
    [
        ("sentiment", lambda r: r.inputs[0].__setattr__("name", "texts"), "inputs[0].name"),
        ("sentiment", lambda r: r.inputs[0].__setattr__("datatype", "FP32"), "inputs[0].datatype"),
        ("sentiment", lambda r: r.inputs[0].shape.append(2), "inputs[0].shape"),  # checked before the contents
        ("sentiment", lambda r: r.raw_input_contents.__setitem__(0, b"\x09\x00\x00\x00ab"), "raw_input_contents[0]"),
        ("sentiment", lambda r: r.parameters["top_k"].__setattr__("int64_param", 3), "parameters.top_k"),
        ("question-answering", lambda r: r.parameters["top_k"].__setattr__("int64_param", 0), "parameters.top_k"),
        ("question-answering", lambda r: (r.inputs.pop(), r.raw_input_contents.pop()), "inputs"),
        ("fill-mask", lambda r: None, "text[1]"),  # the second text has no mask: the head's own InputError
    ],
)
def test_bad_requests_are_invalid_argument_with_field_violations(
    stub: Any, model: str, change: Any, field: str
) -> None:  # noqa: E501
    texts = {
        "sentiment": {"text": ["good ."]},
        "fill-mask": {"text": ["the [MASK] was good .", "no mask here ."]},
        "question-answering": {"question": ["who went home ?"], "context": [CONTEXT]},
    }[model]
    request = infer_request(model, texts)
    change(request)
    failure = call_failure(stub.ModelInfer, request)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure.message
    assert field in failure.violations, failure.violations
    assert failure.domain == "bertserve"


def test_empty_text_is_reported_at_its_element(stub: Any) -> None:
    failure = call_failure(stub.ModelInfer, infer_request("sentiment", {"text": ["good .", ""]}))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "text[1]" in failure.violations


def test_a_head_that_is_not_loaded_is_not_ready_and_refuses_inference(tiny_checkpoint: Path) -> None:
    with BackgroundServer(ServerConfig(model=str(tiny_checkpoint), device="cpu", port=0)) as bare:  # no head files
        with grpc.insecure_channel(bare.address) as channel:
            bare_stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert not bare_stub.ModelReady(pb.ModelReadyRequest(name="sentiment")).ready
            assert bare_stub.ModelReady(pb.ModelReadyRequest(name="fill-mask")).ready
            assert bare_stub.ModelMetadata(pb.ModelMetadataRequest(name="sentiment")).inputs[0].name == "text"
            failure = call_failure(bare_stub.ModelInfer, infer_request("sentiment", {"text": ["good ."]}))
            assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HEAD_NOT_LOADED")


def test_tritons_other_rpcs_are_unimplemented_with_a_clear_message(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        for method in ("ModelConfig", "ModelStatistics", "RepositoryIndex", "ModelStreamInfer"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.RpcError) as raised:
                call(b"")
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert f"does not implement inference.GRPCInferenceService/{method}" in (raised.value.details() or "")
            assert "ModelInfer" in (raised.value.details() or "")


def test_the_service_has_health_and_its_stubs_are_marked_generated(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        reflected = ProtoReflectionDescriptorDatabase(channel).FindFileContainingSymbol(
            "inference.GRPCInferenceService"
        )
        assert reflected.name == "inference/grpc_service.proto"
        assert [m.name for m in reflected.service[0].method][-1] == "ModelInfer"
    for path in (ROOT / "clients/python/src/bertserve_client/oip").glob("*_pb2*.py*"):
        assert path.read_text().startswith("# @generated"), path


# --- (c) Triton's own client in its own environment -------------------------------------------------------------

TRITON_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(sys.argv[1])
    calls = json.loads(sys.argv[2])
    answer = {"live": client.is_server_live(), "ready": client.is_server_ready(), "results": {}}
    for model, call in calls.items():
        answer["results"][model] = result = {"ready": client.is_model_ready(model)}
        metadata = client.get_model_metadata(model, as_json=True)
        result["inputs"] = [i["name"] for i in metadata["inputs"]]
        inputs = []
        for name, values in call["inputs"].items():
            tensor = triton.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput(name) for name in call["outputs"]]
        response = client.infer(model, inputs, outputs=outputs, parameters=call["parameters"])
        for name in call["outputs"]:
            array = response.as_numpy(name)
            if array.dtype == np.object_:
                array = np.vectorize(lambda b: b.decode(), otypes=[object])(array)
            result[name] = array.tolist()
    try:
        client.get_model_metadata("no-such-head")
    except triton.InferenceServerException as error:
        answer["unknown_model"] = error.status()
    print(json.dumps(answer))
    """
)

TRITON_CALLS = {
    "sentiment": {
        "inputs": {"text": ["a good film .", "the film was bad ."]},
        "parameters": {},
        "outputs": ["label", "score"],
    },  # noqa: E501
    "fill-mask": {
        "inputs": {"text": ["the [MASK] was good ."]},
        "parameters": {"top_k": 3},
        "outputs": ["masks.length", "masks.predictions.token", "masks.predictions.score"],
    },
    "next-sentence": {
        "inputs": {"first": ["he went home ."], "second": ["he slept ."]},
        "parameters": {},
        "outputs": ["is_next_probability"],
    },
    "question-answering": {
        "inputs": {"question": ["who went home ?"], "context": [CONTEXT]},
        "parameters": {"top_k": 2},
        "outputs": ["answers.length", "answers.text", "answers.score", "answers.start"],
    },
}


def test_tritonclient_calls_every_head_and_agrees_with_the_native_api(
    triton_python: Path, server: BackgroundServer
) -> None:
    run = [str(triton_python), "-c", TRITON_SCRIPT, server.address, json.dumps(TRITON_CALLS)]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["live"] and answer["ready"]
    assert answer["unknown_model"] == "StatusCode.NOT_FOUND"
    got = answer["results"]
    assert all(r["ready"] for r in got.values())
    assert got["question-answering"]["inputs"] == ["question", "context"]
    with BertServeClient(server.address) as client:
        sentiment = client.sentiment(TRITON_CALLS["sentiment"]["inputs"]["text"])
        fill_mask = client.fill_mask("the [MASK] was good .", top_k=3)
        next_sentence = client.next_sentence("he went home .", "he slept .")
        qa = client.answer("who went home ?", CONTEXT, top_k=2)
    assert got["sentiment"]["label"] == [r.label for r in sentiment]
    assert got["sentiment"]["score"] == pytest.approx([r.score for r in sentiment], abs=1e-5)
    predictions = fill_mask.masks[0].predictions
    assert got["fill-mask"]["masks.length"] == [1]
    assert got["fill-mask"]["masks.predictions.token"] == [[[p.token for p in predictions]]]
    assert got["fill-mask"]["masks.predictions.score"][0][0] == pytest.approx([p.score for p in predictions], abs=1e-5)
    assert got["next-sentence"]["is_next_probability"] == pytest.approx([next_sentence.is_next_probability], abs=1e-5)
    answers = got["question-answering"]
    assert answers["answers.length"] == [len(qa.answers)]
    assert answers["answers.text"][0][: len(qa.answers)] == [a.text for a in qa.answers]
    assert answers["answers.start"][0][: len(qa.answers)] == [a.start for a in qa.answers]
    assert answers["answers.score"][0][: len(qa.answers)] == pytest.approx([a.score for a in qa.answers], abs=1e-5)


def test_probes_answer_while_the_server_loads(tiny_config: ServerConfig) -> None:
    """ServerLive is true and ServerReady false before the encoder has loaded, not UNAVAILABLE."""
    import asyncio

    from bertserve.app import BertServeServer

    async def run() -> tuple[bool, bool]:
        server = BertServeServer(tiny_config)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                live = await stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
                ready = await stub.ServerReady(pb.ServerReadyRequest(), timeout=10)
                return live.live, ready.ready
        finally:
            await server.stop(grace=None)

    assert asyncio.run(run()) == (True, False)
