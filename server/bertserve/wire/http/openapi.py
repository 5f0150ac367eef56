"""The OpenAPI 3 document of the HTTP/JSON gateway, generated from the protobuf descriptors.

One ``POST`` path per RPC (a streaming one with NDJSON request and reply
bodies, one message per line), request and response schemas from the
message descriptors in the proto3 JSON mapping (lowerCamelCase names, 64-bit
integers as strings, enums as their names, ``google.protobuf.Struct`` as an
object), and every error as a ``google.rpc.Status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from bertserve.wire.http.gateway import Rpc
from bertserve.wire.http.ndjson import NDJSON

_T = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _T.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    _T.TYPE_INT64: {"type": "string", "format": "int64"},
    _T.TYPE_SINT64: {"type": "string", "format": "int64"},
    _T.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _T.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _T.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "any JSON value"},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "description": "seconds with an `s` suffix, e.g. `1.5s`"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
_WRAPPERS = {
    "DoubleValue": _T.TYPE_DOUBLE,
    "FloatValue": _T.TYPE_FLOAT,
    "Int64Value": _T.TYPE_INT64,
    "UInt64Value": _T.TYPE_UINT64,
    "Int32Value": _T.TYPE_INT32,
    "UInt32Value": _T.TYPE_UINT32,
    "BoolValue": _T.TYPE_BOOL,
    "StringValue": _T.TYPE_STRING,
    "BytesValue": _T.TYPE_BYTES,
}
_WELL_KNOWN.update({f"google.protobuf.{name}": dict(_SCALARS[kind]) for name, kind in _WRAPPERS.items()})

STATUS_SCHEMA = "google.rpc.Status"


class _Schemas:
    """Collects `components.schemas` while walking message descriptors."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder: recursive messages
            self.schemas[message.full_name] = self._message(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def _message(self, message: Descriptor) -> dict[str, Any]:
        properties = {field.json_name: self._field(field) for field in message.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        oneofs = [oneof for oneof in message.oneofs if not oneof.name.startswith("_")]
        if oneofs:
            schema["description"] = "; ".join(
                f"at most one of {', '.join(f.json_name for f in oneof.fields)}" for oneof in oneofs
            )
        return schema

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type in (_T.TYPE_MESSAGE, _T.TYPE_GROUP):
            return self.ref(field.message_type)
        if field.type == _T.TYPE_ENUM:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        return dict(_SCALARS[field.type])


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "google.rpc.Status: the gRPC code, a message and typed details (ErrorInfo, BadRequest, ...)",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "google.rpc.Code number"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
        },
    }


_STREAM_NOTE = (
    "A streaming RPC over HTTP: send the request messages as NDJSON (`Content-Type: application/x-ndjson`, "
    "one JSON message per line); the 200 reply is chunked NDJSON, one reply message per line, written as each "
    "comes while the request body is still read. Errors before the stream opens (authentication, a server not "
    "ready) are HTTP errors with a google.rpc.Status body. After the 200 the status cannot change: a malformed "
    'line, or a call that fails mid-stream, ends the stream with a last line `{"error": <google.rpc.Status>}`.'
)


def _operation(rpc: Rpc, schemas: _Schemas) -> dict[str, Any]:
    service = rpc.descriptor.containing_service
    status = {"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}
    request, reply = schemas.ref(rpc.descriptor.input_type), schemas.ref(rpc.descriptor.output_type)
    operation: dict[str, Any] = {
        "operationId": f"{service.full_name}.{rpc.descriptor.name}",
        "tags": [service.full_name],
        "summary": f"{service.name}.{rpc.descriptor.name} (gRPC {rpc.path})",
        "requestBody": {"required": True, "content": _json(request)},
        "responses": {
            "200": {"description": "the reply", "content": _json(reply)},
            "default": {"description": "the call failed", "content": _json(status)},
        },
    }
    if rpc.streaming:
        end = {"type": "object", "properties": {"error": status}, "required": ["error"]}
        operation["description"] = _STREAM_NOTE
        operation["requestBody"]["content"] = {NDJSON: {"schema": request}}
        operation["responses"]["200"] = {
            "description": "one reply message per line; an error ends the stream with a last line {error: Status}",
            "content": {NDJSON: {"schema": {"anyOf": [reply, end]}}},
        }
    return operation


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def openapi_document(
    rpcs: Mapping[str, Rpc], *, version: str, bearer: bool, extra_paths: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.0 document: a path per RPC (streaming ones with NDJSON bodies) plus `extra_paths`."""
    schemas = _Schemas()
    paths: dict[str, Any] = {path: {"post": _operation(rpc, schemas)} for path, rpc in sorted(rpcs.items())}
    paths.update(extra_paths or {})
    components: dict[str, Any] = {"schemas": {**schemas.schemas, STATUS_SCHEMA: _status_schema()}}
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "bertserve HTTP/JSON gateway",
            "version": version,
            "description": "Every unary gRPC method as POST /package.Service/Method with its request message as "
            "JSON (the proto3 JSON mapping); streaming methods take and answer NDJSON (application/x-ndjson), "
            "one message per line.",
        },
        "paths": paths,
        "components": components,
    }
    if bearer:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
