"""Open Inference Protocol tensors: datatypes, raw byte encoding, typed contents and JSON data.

A `Tensor` holds its elements flat, in row-major order; BYTES elements are
`bytes`. Raw encoding (``raw_input_contents``/``raw_output_contents``): the
elements little-endian without padding, each BYTES element preceded by its
length as a 4-byte little-endian unsigned integer. Errors are the contract's
`InvalidArgument` with the request field at fault.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertserve.plugin.errors import FieldViolation, InvalidArgument

# datatype -> struct format of one element (BYTES has none: length-prefixed)
_FORMATS = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
DATATYPES = frozenset({*_FORMATS, "BYTES"})

# datatype -> field of InferTensorContents holding its elements (FP16 travels raw only)
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class Tensor:
    """A named tensor: datatype, shape and its elements flat in row-major order (BYTES as `bytes`)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any] = field(default_factory=list)


def invalid(field_path: str, description: str) -> InvalidArgument:
    """INVALID_ARGUMENT for one bad field of an inference request."""
    violation = FieldViolation(field_path, description)
    return InvalidArgument(f"invalid inference request: {field_path}: {description}", field_violations=[violation])


def element_count(shape: Sequence[int], *, field_path: str = "shape") -> int:
    """The number of elements of `shape`; a negative dimension is INVALID_ARGUMENT."""
    if any(dim < 0 for dim in shape):
        raise invalid(field_path, f"dimensions must not be negative, got {list(shape)}")
    return math.prod(shape)


def encode_raw(tensor: Tensor) -> bytes:
    """The raw bytes of `tensor`'s elements (BYTES: each with a 4-byte little-endian length prefix)."""
    if tensor.datatype == "BYTES":
        parts = []
        for value in tensor.data:
            data = value.encode() if isinstance(value, str) else bytes(value)
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return struct.pack(f"<{len(tensor.data)}{_format(tensor.datatype)}", *tensor.data)


def decode_raw(datatype: str, shape: Sequence[int], raw: bytes, *, field_path: str) -> list[Any]:
    """The elements of a raw-encoded tensor; a size that does not fit `shape` is INVALID_ARGUMENT."""
    count = element_count(shape)
    if datatype != "BYTES":
        size = struct.calcsize(f"<{_format(datatype)}")
        if len(raw) != count * size:
            raise invalid(field_path, f"{len(raw)} bytes for {count} {datatype} elements of {size} bytes")
        return list(struct.unpack(f"<{count}{_format(datatype)}", raw))
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise invalid(field_path, "a BYTES element's 4-byte length prefix is cut short")
        (length,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + length > len(raw):
            raise invalid(field_path, f"a BYTES element of {length} bytes runs past the end of the data")
        values.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if len(values) != count:
        raise invalid(field_path, f"{len(values)} BYTES elements for shape {list(shape)} ({count} elements)")
    return values


def decode_contents(
    datatype: str, shape: Sequence[int], contents: Mapping[str, Sequence[Any]], *, field_path: str
) -> list[Any]:
    """The elements of a tensor sent as typed contents ({"bytes_contents": [...]}, ...).

    Only the field of `datatype` may be set, with exactly the element count of `shape`.
    """
    wanted = CONTENTS_FIELDS.get(datatype)
    if wanted is None:
        raise invalid(field_path, f"{datatype} tensors must be sent in raw_input_contents")
    others = sorted(name for name, values in contents.items() if name != wanted and len(values))
    if others:
        raise invalid(f"{field_path}.{others[0]}", f"a {datatype} tensor's elements go in {wanted}")
    values = list(contents.get(wanted, ()))
    count = element_count(shape)
    if len(values) != count:
        raise invalid(f"{field_path}.{wanted}", f"{len(values)} elements for shape {list(shape)} ({count} elements)")
    return values


def decode_json_data(datatype: str, shape: Sequence[int], data: Any, *, field_path: str) -> list[Any]:
    """The elements of a tensor in JSON form (the HTTP protocol's ``data``): nested or flat lists, text for BYTES."""
    values = list(_flatten(data))
    count = element_count(shape)
    if len(values) != count:
        raise invalid(field_path, f"{len(values)} elements for shape {list(shape)} ({count} elements)")
    if datatype == "BYTES":
        return [v.encode() if isinstance(v, str) else v for v in values]
    return values


def json_data(tensor: Tensor) -> list[Any]:
    """`tensor`'s elements for JSON (the HTTP protocol's ``data``): BYTES as UTF-8 text, NaN as None."""
    if tensor.datatype == "BYTES":
        return [bytes(v).decode("utf-8", errors="replace") for v in tensor.data]
    return [None if isinstance(v, float) and math.isnan(v) else v for v in tensor.data]


def check_datatype(datatype: str, *, field_path: str) -> None:
    if datatype not in DATATYPES:
        raise invalid(field_path, f"unknown datatype {datatype!r}; one of {', '.join(sorted(DATATYPES))}")


def _format(datatype: str) -> str:
    fmt = _FORMATS.get(datatype)
    if fmt is None:
        raise ValueError(f"no fixed-size encoding for datatype {datatype!r}")
    return fmt


def _flatten(data: Any) -> Any:
    if isinstance(data, list | tuple):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def input_tensors(inputs: Sequence[Mapping[str, Any]], raw: Sequence[bytes] = ()) -> list[Tensor]:
    """Decode a request's input tensors.

    Each input is ``{"name", "datatype", "shape"}`` with its elements in
    ``"contents"`` (typed, as gRPC's InferTensorContents: ``{"bytes_contents":
    [...]}``), in ``"data"`` (JSON, as the HTTP protocol), or, when `raw` is
    given (``raw_input_contents``), in ``raw[k]`` for input k.
    """
    if raw and len(raw) != len(inputs):
        problem = f"{len(raw)} entries for {len(inputs)} inputs; send one per input, in the order of inputs"
        raise invalid("raw_input_contents", problem)
    tensors = []
    for k, spec in enumerate(inputs):
        path = f"inputs[{k}]"
        datatype = str(spec.get("datatype", ""))
        check_datatype(datatype, field_path=f"{path}.datatype")
        shape = tuple(int(dim) for dim in spec.get("shape", ()))
        element_count(shape, field_path=f"{path}.shape")
        contents = spec.get("contents") or {}
        if raw:
            if any(len(values) for values in contents.values()):
                raise invalid(f"{path}.contents", "must not be set when raw_input_contents is")
            data = decode_raw(datatype, shape, raw[k], field_path=f"raw_input_contents[{k}]")
        elif "data" in spec:
            data = decode_json_data(datatype, shape, spec["data"], field_path=f"{path}.data")
        else:
            data = decode_contents(datatype, shape, contents, field_path=f"{path}.contents")
        tensors.append(Tensor(str(spec.get("name", "")), datatype, shape, data))
    return tensors
