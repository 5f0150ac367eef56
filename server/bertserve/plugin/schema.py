"""JSON Schemas derived from head input/output dataclasses, and JSON conversion.

A head's input and output types are frozen dataclasses; their JSON Schemas
(draft 2020-12) are derived from the type hints, with constraints and
descriptions taken from `field(metadata=...)`. Supported field types: str,
int, float, bool, nested dataclasses, tuple[X, ...] / list[X], dict[str, X],
Literal[...] and X | None.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

import jsonschema

T = TypeVar("T")

# Keys of field metadata copied into the field's schema.
_SCHEMA_KEYS = {
    "description",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "examples",
}


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a dataclass: an object with exactly its fields."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        schema = _type_schema(hints[field.name])
        schema.update({k: v for k, v in field.metadata.items() if k in _SCHEMA_KEYS})
        if field.default is not dataclasses.MISSING and _json_default(field.default) is not None:
            schema["default"] = _json_default(field.default)
        properties[field.name] = schema
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        schema["description"] = cls.__doc__.strip().splitlines()[0]
    return schema


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, str | int | float | bool) else None


def _type_schema(tp: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if dataclasses.is_dataclass(tp):
        return json_schema(tp)  # type: ignore[arg-type]
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (tuple, list):
        item = args[0] if args else Any
        return {"type": "array", "items": _type_schema(item)} if item is not Any else {"type": "array"}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    if origin in (Union, types.UnionType):
        members = [_type_schema(arg) for arg in args if arg is not type(None)]
        if type(None) in args:
            members.append({"type": "null"})
        return {"anyOf": members}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON Schema for type {tp!r}")


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a dataclass from JSON data that already passed its schema."""
    hints = typing.get_type_hints(cls)
    values = {f.name: _convert(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data}  # type: ignore[arg-type]
    return cls(**values)


def _convert(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if tp is int:
        return int(value)  # Struct numbers arrive as floats
    if tp is float:
        return float(value)
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value)  # type: ignore[arg-type]
    if origin is tuple:
        return tuple(_convert(args[0], v) for v in value)
    if origin is list:
        return [_convert(args[0], v) for v in value]
    if origin is dict:
        return {k: _convert(args[1], v) for k, v in value.items()}
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None) and _matches(arg, value):
                return _convert(arg, value)
    return value


def _matches(tp: Any, value: Any) -> bool:
    try:
        jsonschema.validate(value, _type_schema(tp))
    except jsonschema.ValidationError:
        return False
    return True


def to_json(value: Any) -> Any:
    """JSON-ready data (dicts, lists, numbers, strings) from a dataclass output."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    return value


def schema_violations(schema: Mapping[str, Any], data: Any, *, prefix: str) -> list[tuple[str, str]]:
    """Every way `data` breaks `schema`, as (field path, description) pairs.

    Paths are dotted from `prefix` (``input.targets[2]``); a missing or
    unknown property is reported at its own path.
    """
    return SchemaValidator(schema).violations(data, prefix=prefix)


class SchemaValidator:
    """A JSON Schema compiled once, for checking many documents (`schema_violations` per call)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = jsonschema.Draft202012Validator(schema)

    def violations(self, data: Any, *, prefix: str) -> list[tuple[str, str]]:
        """Every way `data` breaks the schema; see `schema_violations`."""
        return _violations(self._validator, data, prefix)


def _violations(validator: jsonschema.Draft202012Validator, data: Any, prefix: str) -> list[tuple[str, str]]:
    violations: list[tuple[str, str]] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = _path(prefix, error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            violations.append((_path(path, [missing]), "is required"))
        elif error.validator == "additionalProperties":
            allowed = ", ".join(sorted(error.schema.get("properties", {})))
            for name in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
                violations.append((_path(path, [name]), f"is not a known field; allowed: {allowed}"))
        else:
            violations.append((path, error.message))
    return violations


def _path(prefix: str, parts: Any) -> str:
    path = prefix
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
