"""JSON-like values as ``google.protobuf.Struct``, both ways, keeping JSON's integers.

The inputs and outputs of ``InferenceService`` and the head schemas travel
as Structs; :func:`struct_to_dict` and :func:`dict_to_struct` (exported by
:mod:`bertserve_client.results` and the package) convert them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Final

from google.protobuf import json_format, struct_pb2

__all__ = ["dict_to_struct", "struct_to_dict"]

# Integers beyond this magnitude cannot all be held exactly by the double a
# google.protobuf.Value carries numbers in.
_MAX_EXACT_INT: Final = 2**53


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Convert a ``google.protobuf.Struct`` to a plain JSON-like dict.

    A Struct holds every number as a double, so a JSON integer (a token id, an
    offset, a schema's ``"minimum": 1``) arrives as a float; every float that
    is a whole number comes back as an int, as the JSON it stands for reads
    (up to 2**53 in magnitude, beyond which a double holds no exact integer).
    """
    data: dict[str, Any] = _whole_floats_to_int(json_format.MessageToDict(struct))
    return data


def dict_to_struct(data: Mapping[str, Any], *, name: str = "data") -> struct_pb2.Struct:
    """Convert a JSON-like mapping to a ``google.protobuf.Struct``.

    Values may be mappings with str keys, sequences (not str or bytes), str,
    bool, None and finite numbers.

    Args:
        data: The mapping.
        name: What to call ``data`` in error messages.

    Raises:
        TypeError: A key is not a str, or a value is of no JSON type; the
            message names where, e.g. ``input.targets[2]``.
        ValueError: A number is not finite, or an int too large to be sent
            exactly (more than 2**53 in magnitude).
    """
    struct = struct_pb2.Struct()
    _fill_struct(struct, data, name)
    return struct


def _whole_floats_to_int(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _MAX_EXACT_INT else value
    if isinstance(value, dict):
        return {key: _whole_floats_to_int(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_floats_to_int(item) for item in value]
    return value


def _fill_struct(struct: struct_pb2.Struct, data: Any, where: str) -> None:
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} must be a mapping, not {type(data).__name__}")
    for key, item in data.items():
        if not isinstance(key, str):
            raise TypeError(f"{where} has a key of type {type(key).__name__}; keys must be str")
        _fill_value(struct.fields[key], item, f"{where}.{key}")


def _fill_value(target: struct_pb2.Value, value: Any, where: str) -> None:
    # bool before numbers: a bool is an int too.
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, numbers.Integral):  # int, and e.g. numpy integers
        if abs(int(value)) > _MAX_EXACT_INT:
            raise ValueError(f"{where} = {value} is too large to send exactly (more than 2**53 in magnitude)")
        target.number_value = int(value)
    elif isinstance(value, numbers.Real):  # float, and e.g. numpy floats
        if not math.isfinite(value):
            raise ValueError(f"{where} = {value} is not a JSON number")
        target.number_value = float(value)
    elif isinstance(value, Mapping):
        target.struct_value.SetInParent()  # an empty mapping is still an object
        _fill_struct(target.struct_value, value, where)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items = target.list_value
        items.SetInParent()  # an empty sequence is still a list
        for index, item in enumerate(value):
            _fill_value(items.values.add(), item, f"{where}[{index}]")
    else:
        raise TypeError(f"{where} is of type {type(value).__name__}, which has no JSON form")
