"""Heads as Open Inference Protocol models: metadata, input tensors to task inputs, outputs to tensors.

The mapping, derived from a head's JSON Schemas alone (so a third-party head works unchanged):

- **Model**: the head's name, version ``"1"`` (an empty version means it too),
  platform ``bertserve``.
- **Inputs**: one BYTES tensor of shape ``[N]`` (``[N, 1]`` accepted) per
  text field, UTF-8 text: `Head.text_fields`, or, when a head names none, the
  required string properties of its input schema (question answering:
  ``question``, ``context``). Input i of the batch takes element i of each.
- **Options**: the request's ``parameters``, one value for all N inputs
  (``top_k``, ``truncate``, ...). A string parameter for an array or object
  option is read as JSON (``targets='["good", "bad"]'``). Triton's
  scheduling hints ``priority`` and ``timeout`` are ignored.
- **Outputs**: one tensor per leaf of the output schema, named by its
  property path (``label``, ``scores.label``, ``masks.predictions.token``):
  string (or string enum) → BYTES, integer → INT64, number → FP64,
  boolean → BOOL, anything else (maps, untyped) → BYTES holding JSON. The
  shape is ``[N]``, plus one dimension per array on the path; ragged arrays
  are padded to the longest with a zero value (``b""``, 0, 0.0, false) and
  every array gets an INT64 tensor ``<path>.length`` with its true lengths
  (shape of the array's parent, e.g. ``masks.length`` ``[N]``,
  ``masks.predictions.length`` ``[N, M]``). ``output_json`` (BYTES ``[N]``)
  holds each output as the JSON the native ``Predict`` RPC answers.
  Metadata shapes are -1 in every dimension.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertserve.plugin.errors import FieldViolation, InvalidArgument
from bertserve.plugin.head import Head
from bertserve.plugin.schema import SchemaValidator
from bertserve.plugin.service import InputFields
from bertserve.wire.oip.tensors import Tensor, invalid

PLATFORM = "bertserve"
VERSIONS = ("1",)
JSON_OUTPUT = "output_json"
IGNORED_PARAMETERS = frozenset({"priority", "timeout"})
_SCALARS = {"string": "BYTES", "integer": "INT64", "number": "FP64", "boolean": "BOOL"}
_PADS = {"BYTES": b"", "INT64": 0, "FP64": 0.0, "BOOL": False}


@dataclass(frozen=True)
class TensorSpec:
    """An input or output tensor of a model; `steps` is its property path (None: every array element)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    steps: tuple[str | None, ...] = ()
    kind: str = "leaf"  # leaf, json (a leaf sent as JSON text), length (of the array at steps), output (whole)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """A head as a model: its input tensors (text fields), output tensors, and input schema."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    input_schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def metadata(self) -> dict[str, Any]:
        """The model metadata of the protocol: name, versions, platform, inputs and outputs."""
        return {
            "name": self.name,
            "versions": list(VERSIONS),
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }


@dataclass(frozen=True)
class TensorFields(InputFields):
    """Field paths of input errors: ``text[3]`` (element 3 of tensor text), ``parameters.top_k``, ``batch[3]``."""

    tensors: tuple[str, ...] = ()

    def item(self, index: int, sub_field: str | None = None) -> str:
        if sub_field is None:
            return f"batch[{index}]"
        if sub_field in self.tensors:
            return f"{sub_field}[{index}]"
        return f"parameters.{sub_field}"


def model_signature(
    name: str, input_schema: Mapping[str, Any], output_schema: Mapping[str, Any], text_fields: Sequence[str] = ()
) -> ModelSignature:
    """The model a head is, from its name, schemas and `Head.text_fields`."""
    if not text_fields:
        properties = input_schema.get("properties", {})
        text_fields = [p for p in input_schema.get("required", ()) if properties.get(p, {}).get("type") == "string"]
    inputs = tuple(TensorSpec(f, "BYTES", (-1,), (f,)) for f in text_fields)
    outputs = (*_object_specs(output_schema, ()), TensorSpec(JSON_OUTPUT, "BYTES", (-1,), kind="output"))
    return ModelSignature(name, inputs, outputs, input_schema)


def head_signature(
    head: Head[Any, Any], input_schema: Mapping[str, Any], output_schema: Mapping[str, Any]
) -> ModelSignature:
    """`model_signature` of a registered head (its schemas as the registry recorded them)."""
    return model_signature(head.name, input_schema, output_schema, head.text_fields)


def check_inputs(signature: ModelSignature, inputs: Sequence[tuple[str, str, Sequence[int]]]) -> int:
    """Check the (name, datatype, shape) of a request's input tensors before decoding them; returns N.

    Unknown, duplicate or missing tensors, a datatype other than BYTES, a
    shape other than ``[N]``/``[N, 1]`` and tensors of different N are INVALID_ARGUMENT.
    """
    seen: set[str] = set()
    count = None
    known = ", ".join(signature.text_fields)
    for k, (name, datatype, shape) in enumerate(inputs):
        if name not in signature.text_fields or name in seen:
            problem = "is given twice" if name in seen else "is not an input of this model"
            raise invalid(f"inputs[{k}].name", f"{name!r} {problem}; the model's inputs: {known}")
        seen.add(name)
        if datatype != "BYTES":
            raise invalid(f"inputs[{k}].datatype", f"input {name!r} must be BYTES (UTF-8 text), not {datatype}")
        if len(shape) not in (1, 2) or tuple(shape[1:]) not in ((), (1,)):
            raise invalid(f"inputs[{k}].shape", f"must be [N] or [N, 1] (N texts), not {list(shape)}")
        if count is not None and shape[0] != count:
            raise invalid(f"inputs[{k}].shape", f"holds {shape[0]} elements, the other inputs {count}")
        count = shape[0]
    missing = [name for name in signature.text_fields if name not in seen]
    if missing:
        raise invalid("inputs", f"missing input tensor {missing[0]!r}; the model's inputs: {known}")
    return count or 0


def task_inputs(
    signature: ModelSignature, inputs: Sequence[Tensor], parameters: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One JSON task input per batch element: the text tensors' elements plus the parameters.

    The tensors are checked as `check_inputs` does; text that is not UTF-8 is INVALID_ARGUMENT.
    """
    count = check_inputs(signature, [(t.name, t.datatype, t.shape) for t in inputs])
    texts = {t.name: [_text(value, f"{t.name}[{i}]") for i, value in enumerate(t.data)] for t in inputs}
    options = task_options(signature, parameters)
    return [{**options, **{name: values[i] for name, values in texts.items()}} for i in range(count)]


def task_options(signature: ModelSignature, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The task options a request's parameters set (JSON text read for array and object options)."""
    properties = signature.input_schema.get("properties", {})
    options = {}
    for name, value in parameters.items():
        if name in IGNORED_PARAMETERS:
            continue
        if name in signature.text_fields:
            raise invalid(f"parameters.{name}", f"{name!r} is an input tensor, not a parameter")
        kind = properties.get(name, {}).get("type")
        if isinstance(value, str) and kind in ("array", "object"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise invalid(f"parameters.{name}", f"must be JSON text for a {kind}: {error}") from None
        options[name] = value
    return options


def parse_items(
    head: Head[Any, Any], validator: SchemaValidator, items: Sequence[Mapping[str, Any]], fields: TensorFields
) -> list[Any]:
    """The head's inputs from JSON task inputs, every schema violation reported at once (as `Predict` does)."""
    violations: dict[str, str] = {}
    for index, data in enumerate(items):
        for path, description in validator.violations(dict(data), prefix=""):
            violations.setdefault(_field_path(fields, index, path), description)
    if violations:
        found = [FieldViolation(path, description) for path, description in violations.items()]
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:3])
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise InvalidArgument(f"invalid input for head {head.name!r}: {summary}{more}", field_violations=found)
    return [head.parse_input(data) for data in items]


def output_tensors(
    signature: ModelSignature, outputs: Sequence[Mapping[str, Any]], requested: Sequence[str] = ()
) -> list[Tensor]:
    """The output tensors of N rendered outputs: all of them, or the `requested` names in that order."""
    specs = list(signature.outputs)
    if requested:
        by_name = {spec.name: spec for spec in specs}
        for j, name in enumerate(requested):
            if name not in by_name:
                known = ", ".join(by_name)
                problem = f"model {signature.name!r} has no output {name!r}; its outputs: {known}"
                raise invalid(f"outputs[{j}].name", problem)
        specs = [by_name[name] for name in requested]
    return [_output_tensor(spec, outputs) for spec in specs]


def _object_specs(schema: Mapping[str, Any], steps: tuple[str | None, ...]) -> Iterator[TensorSpec]:
    for name, sub in schema.get("properties", {}).items():
        yield from _specs(sub, (*steps, name))


def _specs(schema: Mapping[str, Any], steps: tuple[str | None, ...]) -> Iterator[TensorSpec]:
    schema = _without_null(schema)
    kind = schema.get("type")
    name, shape = _name(steps), (-1,) * (steps.count(None) + 1)
    if kind == "object" and "properties" in schema:
        yield from _object_specs(schema, steps)
    elif kind == "array" and "items" in schema:
        nested = _trailing_arrays(steps)
        yield TensorSpec(f"{name}{'[]' * nested}.length", "INT64", shape, steps, "length")
        yield from _specs(schema["items"], (*steps, None))
    elif _scalar(schema) is not None:
        yield TensorSpec(name, str(_scalar(schema)), shape, steps)
    else:
        yield TensorSpec(name, "BYTES", shape, steps, "json")


def _trailing_arrays(steps: Sequence[str | None]) -> int:
    """How deep an array sits directly in arrays: its length tensor is ``grid[].length`` for the rows of ``grid``."""
    count = 0
    for step in reversed(steps):
        if step is not None:
            break
        count += 1
    return count


def _without_null(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``X | None`` as X (a null becomes the pad value)."""
    members = [m for m in schema.get("anyOf", ()) if m.get("type") != "null"]
    return members[0] if "anyOf" in schema and len(members) == 1 else schema


def _scalar(schema: Mapping[str, Any]) -> str | None:
    if "enum" in schema:
        kinds = {type(v) for v in schema["enum"]}
        return "BYTES" if kinds == {str} else "INT64" if kinds == {int} else None
    kind = schema.get("type")
    return _SCALARS.get(kind) if isinstance(kind, str) else None


def _name(steps: Sequence[str | None]) -> str:
    """``masks.predictions.token`` for (masks, None, predictions, None, token): the property names."""
    return ".".join(step for step in steps if step is not None)


def _gather(value: Any, steps: Sequence[str | None]) -> Any:
    if not steps:
        return value
    step, rest = steps[0], steps[1:]
    if step is None:
        return [_gather(v, rest) for v in value] if isinstance(value, list) else []
    return _gather(value.get(step) if isinstance(value, Mapping) else None, rest)


def _output_tensor(spec: TensorSpec, outputs: Sequence[Mapping[str, Any]]) -> Tensor:
    if spec.kind == "output":
        return Tensor(spec.name, spec.datatype, (len(outputs),), [json.dumps(o).encode() for o in outputs])
    nested = [_gather(o, spec.steps) for o in outputs]
    dims = [len(nested)]
    level: list[Any] = nested
    for _ in range(len(spec.shape) - 1):
        dims.append(max((len(x) for x in level), default=0))
        level = [y for x in level for y in x]
    flat: list[Any] = []
    _fill(nested, dims, 0, spec, flat)
    return Tensor(spec.name, spec.datatype, tuple(dims), flat)


def _fill(values: list[Any], dims: Sequence[int], depth: int, spec: TensorSpec, flat: list[Any]) -> None:
    for i in range(dims[depth]):
        present = i < len(values)
        if depth + 1 < len(dims):
            _fill(values[i] if present else [], dims, depth + 1, spec, flat)
        else:
            flat.append(_element(values[i], spec) if present else _PADS[spec.datatype])


def _element(value: Any, spec: TensorSpec) -> Any:
    if spec.kind == "length":
        return len(value) if isinstance(value, list) else 0
    if spec.kind == "json":
        return json.dumps(value).encode()
    if value is None:
        return _PADS[spec.datatype]
    if spec.datatype == "BYTES":
        return str(value).encode()
    return {"INT64": int, "FP64": float, "BOOL": bool}[spec.datatype](value)


def _text(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except (UnicodeDecodeError, TypeError):
        raise invalid(path, "is not UTF-8 text") from None


def _field_path(fields: TensorFields, index: int, path: str) -> str:
    """A schema violation's path (``text``, ``targets[2]``) as a request field path (``text[0]``, ``parameters.targets[2]``)."""  # noqa: E501
    match = re.match(r"[^.\[]+", path)
    if match is None:
        return fields.item(index)
    return fields.item(index, match.group()) + path[match.end() :]
