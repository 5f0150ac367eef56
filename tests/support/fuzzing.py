"""Property-based fuzzing of every door of a running server: hypothesis strategies, calls and the checks.

What a fuzzed server must do, whatever it is sent: answer with any status but
INTERNAL or UNKNOWN (HTTP: no 500, and no INTERNAL or UNKNOWN code in a
`google.rpc.Status` body or in a per-input error), with an error small enough
for a client to read (`TRAILER_BUDGET`), stay SERVING on grpc.health.v1, and
keep answering a fixed sentinel request exactly as before.

- Strategies are general: `messages(descriptor, vocabulary)` walks a request
  message's fields through its protobuf `DESCRIPTOR` (strings, integers and
  floats at their edges, repeated and map fields, nested messages, oneofs,
  ``google.protobuf.Struct``/``Value`` as random JSON), wild or `plausible`
  (known names, small numbers), and `requests()` mixes both; `malformed()` makes
  serialized bytes that are not (quite) the message; `json_bodies()` and
  `ndjson_bodies()` make the HTTP door's bodies, valid and broken;
  `infer_requests()` makes Open Inference Protocol requests whose tensors are
  coherent often enough to get past the first check.
- A `Vocabulary` is what the server says about itself (head and model names,
  schema field names, labels, tensor names and datatypes), so generated
  requests reach past "no such head" often.
- `discover_rpcs()` lists every RPC of every service the server registers,
  through its reflection service; `door()` says which door an RPC belongs to.
- `call_rpc()` sends serialized bytes on any RPC shape; `http_call()` one HTTP
  request; `Guard` checks every outcome, the health and the sentinel.

Profiles: ``ci`` (fast, the default) and ``long`` (thousands of examples per
test), chosen with ``HYPOTHESIS_PROFILE``; no example database is kept, and
hypothesis's own storage goes to the system's temp folder, not the checkout.
``FUZZ_SEED`` fixes the random seed (else one is drawn and named in failures).
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import random
import struct
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # never a .hypothesis/ folder in the checkout
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "bertserve-hypothesis")

from bertserve_client.oip import grpc_service_pb2 as oip_pb2  # noqa: E402 (after the storage folder is set)
from bertserve_client.v1 import (  # noqa: E402
    fill_mask_pb2,
    inference_pb2,
    model_pb2,
    model_pb2_grpc,
    next_sentence_pb2,
    question_answering_pb2,
    sentiment_pb2,
)
from google.protobuf import descriptor_pool, json_format, message_factory, struct_pb2  # noqa: E402
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402

# The generated modules whose descriptors must be in the default pool for their services to be fuzzed.
STUB_MODULES = (
    fill_mask_pb2,
    inference_pb2,
    model_pb2,
    next_sentence_pb2,
    question_answering_pb2,
    sentiment_pb2,
    oip_pb2,
    health_pb2,
    reflection_pb2,
)

# --- profiles ------------------------------------------------------------------------------------------------------

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    # The server fixture is module-scoped; the function-scoped one only checks the sentinel once per test.
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=40, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=3000, **_COMMON)  # type: ignore[arg-type]

FUZZ_SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
SENTINEL_EVERY = 25  # examples between two sentinel checks (besides the check at the end of every test)


def fuzz_settings() -> settings:
    """The profile named by ``HYPOTHESIS_PROFILE`` (default ``ci``), for use as a test decorator."""
    return settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# --- what the server says about itself ------------------------------------------------------------------------------

OIP_DATATYPES = tuple("BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BYTES BF16".split())
EDGE_TEXTS = ("", " ", "\x00", "\u200b", "\ufeff", "\U0001f600", "é" * 3, "\n", "\r\n", "\t")


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor of an Open Inference Protocol model, as its metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Vocabulary:
    """What generated requests draw on: `words` (all), `names` (heads, models, labels, tensor names, datatypes),
    `fields` (the heads' input field names), `markers` (words a plausible sentence often has, e.g. ``[MASK]``)
    the models' input tensors (the heads are the models) and each head's input fields."""

    words: tuple[str, ...]
    names: tuple[str, ...]
    fields: tuple[str, ...]
    markers: tuple[str, ...] = ()
    models: Mapping[str, tuple[TensorSpec, ...]] = field(default_factory=dict)
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # each head's input field names

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(sorted(self.models))

    def focused(self, head: str) -> Vocabulary:
        """This vocabulary with one head (model) only, so that a plausible request's fields agree on it (itself for
        a name that is no head)."""
        if head not in self.models:
            return self
        return dataclasses.replace(self, models={head: self.models[head]}, inputs={head: self.inputs.get(head, ())})

    def __repr__(self) -> str:  # short in hypothesis's reports
        return f"Vocabulary({len(self.words)} words, models {sorted(self.models)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # (hypothesis prints dataclasses field by field)
        printer.text(repr(self))


def gather_vocabulary(
    channel: grpc.Channel, extra_words: Iterable[str] = (), markers: Sequence[str] = ()
) -> Vocabulary:
    """Head names, labels, schema field names and tensor specs, asked of the server itself; `extra_words` (the
    tokenizer's, say) and `markers` (words plausible sentences often have) come from the caller."""
    names: set[str] = set(OIP_DATATYPES)
    fields: set[str] = set()
    heads = model_pb2_grpc.ModelServiceStub(channel).ListHeads(model_pb2.ListHeadsRequest(), timeout=30).heads
    models: dict[str, tuple[TensorSpec, ...]] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    metadata_of = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelMetadata",
        request_serializer=oip_pb2.ModelMetadataRequest.SerializeToString,
        response_deserializer=oip_pb2.ModelMetadataResponse.FromString,
    )
    for head in heads:
        names |= {head.name, head.task, *head.labels}
        inputs[head.name] = tuple(sorted(_schema_names(json_format.MessageToDict(head.input_schema))))
        fields |= {*head.text_fields, *inputs[head.name]}
        metadata = metadata_of(oip_pb2.ModelMetadataRequest(name=head.name), timeout=30)
        models[head.name] = tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs)
        names |= {*metadata.versions, *(t.name for t in [*metadata.inputs, *metadata.outputs])}
    words = {*names, *fields, *EDGE_TEXTS, *extra_words, *markers}
    return Vocabulary(tuple(sorted(words)), tuple(sorted(names)), tuple(sorted(fields)), tuple(markers), models, inputs)


def _schema_names(schema: Any) -> set[str]:
    """Every property name anywhere in a JSON schema."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties") or {})
        for value in schema.values():
            names |= _schema_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _schema_names(value)
    return names


# --- scalars --------------------------------------------------------------------------------------------------------

_T = FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1),
    _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_INT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1),
    _T.TYPE_FIXED64: (0, 2**64 - 1),
}
HUGE_TEXT = 60_000  # characters at most in one huge string (well under the 4 MiB message limit)


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in [low, high], often small or at an edge (0, ±1, the bounds, 2**31, ...)."""
    edges = {low, high, low + 1, high - 1, 0, -1, 1, 2, 8, 64, 512, 513, 1024, 1025, 2**15, 2**31 - 1, 2**31, -(2**31)}
    return st.one_of(
        st.integers(max(low, -3), min(high, 12)),
        st.sampled_from(sorted(e for e in edges if low <= e <= high)),
        st.integers(low, high),
    )


def words(vocabulary: Vocabulary, kind: str = "words") -> st.SearchStrategy[str]:
    """One of the vocabulary's `kind` (words, names or fields), drawn by index (short in hypothesis's statistics)."""
    items: tuple[str, ...] = getattr(vocabulary, kind)
    return st.integers(0, len(items) - 1).map(items.__getitem__)


def texts(vocabulary: Vocabulary, *, surrogates: bool = False, plausible: bool = False) -> st.SearchStrategy[str]:
    """Unicode text: random, the server's own words, sentences of them, edge cases and huge repeats.

    `surrogates`: lone surrogates too (valid in JSON escapes, never in a protobuf string).
    `plausible`: only a name the server uses or a short sentence of its words.
    """
    known = words(vocabulary)
    if plausible:
        return st.one_of(st.sampled_from(vocabulary.heads), words(vocabulary, "names"), _sentences(vocabulary))
    alphabet = st.characters() if surrogates else st.characters(codec="utf-8")  # (utf-8: no lone surrogates)
    return st.one_of(
        st.text(alphabet, max_size=24),
        known,
        st.lists(st.one_of(known, st.text(alphabet, max_size=6)), max_size=40).map(" ".join),
        st.builds(lambda unit, n: unit * n, st.text(alphabet, min_size=1, max_size=4), st.integers(1, HUGE_TEXT // 4)),
    )


def _sentences(vocabulary: Vocabulary) -> st.SearchStrategy[str]:
    """1 to 12 known words, often with a marker among them."""
    marked: st.SearchStrategy[list[str]] = st.just([])
    if vocabulary.markers:
        marked = st.one_of(st.lists(st.sampled_from(vocabulary.markers), min_size=1, max_size=2), marked)
    return st.builds(
        lambda w, m, at: " ".join([*w[:at], *m, *w[at:]]),
        st.lists(words(vocabulary), min_size=1, max_size=12),
        marked,
        st.integers(0, 12),
    )


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` three times in four, else `other` (hypothesis picks among the branches of one_of alike)."""
    return st.one_of(usual, usual, usual, other)


def binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=64), st.binary(min_size=1, max_size=4).map(lambda b: b * 4096))


def _scalars(fd: FieldDescriptor, vocabulary: Vocabulary, plausible: bool) -> st.SearchStrategy[Any]:
    """The values of one scalar (or enum) field; `plausible`: small, finite, known ones."""
    if fd.type in _INT_RANGES:
        return st.integers(0, 8) if plausible else integers(*_INT_RANGES[fd.type])
    if fd.type in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return st.floats(0, 1) if plausible else st.floats(width=64 if fd.type == _T.TYPE_DOUBLE else 32)
    if fd.type == _T.TYPE_BOOL:
        return st.booleans()
    if fd.type == _T.TYPE_STRING and plausible and fd.is_repeated:  # texts, not names
        return _sentences(vocabulary)
    if fd.type == _T.TYPE_STRING:
        return texts(vocabulary, plausible=plausible)
    if fd.type == _T.TYPE_BYTES:
        return texts(vocabulary, plausible=True).map(str.encode) if plausible else binaries()
    if fd.type == _T.TYPE_ENUM:
        assert fd.enum_type is not None
        known = st.sampled_from([value.number for value in fd.enum_type.values])
        return known if plausible else st.one_of(known, integers(-(2**31), 2**31 - 1))  # proto3 enums are open
    raise AssertionError(f"no strategy for field {fd.full_name} of type {fd.type}")


# --- JSON and google.protobuf.Struct --------------------------------------------------------------------------------


def json_values(vocabulary: Vocabulary, *, wire: bool = False) -> st.SearchStrategy[Any]:
    """Random JSON (with NaN and infinities); `wire`: for an HTTP body (lone surrogates, integers past 64 bits)."""
    numbers = st.integers() if wire else st.integers(-(2**53), 2**53)
    keys = st.one_of(words(vocabulary), st.text(max_size=10))
    scalars = st.one_of(st.none(), st.booleans(), numbers, st.floats(), texts(vocabulary, surrogates=wire))
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=16
    )


def deep_json(depth: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """JSON nested `depth` lists or objects deep (past parsers' and protobuf's recursion limits)."""
    return st.builds(_nest, depth, st.booleans())


def _nest(depth: int, objects: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value} if objects else [value]
    return value


def _json_objects(vocabulary: Vocabulary, plausible: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Objects keyed mostly by the server's own words; `plausible`: by one head's input fields, plain values."""
    if plausible:
        values = st.one_of(_sentences(vocabulary), st.integers(0, 8), st.booleans())
        fields = st.sampled_from(sorted(vocabulary.inputs.values())).map(st.sampled_from)
        return fields.flatmap(lambda keys: st.dictionaries(keys, values, min_size=1, max_size=4))
    keys = st.one_of(words(vocabulary), st.text(max_size=10))
    return st.one_of(
        st.dictionaries(keys, json_values(vocabulary), max_size=8),
        st.builds(lambda d: {"a": d}, deep_json(st.integers(1, 150))),
    )


def to_value(value: Any, out: struct_pb2.Value) -> struct_pb2.Value:
    """`value` (JSON) into a `google.protobuf.Value`, NaN and all."""
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = float(value)
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, list):
        out.list_value.SetInParent()
        for item in value:
            to_value(item, out.list_value.values.add())
    else:
        to_struct(value, out.struct_value)
    return out


def to_struct(value: Mapping[str, Any], out: struct_pb2.Struct) -> struct_pb2.Struct:
    for key, item in value.items():
        to_value(item, out.fields[key])
    return out


def _well_known(full_name: str, vocabulary: Vocabulary, plausible: bool) -> st.SearchStrategy[Message] | None:
    if full_name == "google.protobuf.Struct":
        return _json_objects(vocabulary, plausible).map(lambda d: to_struct(d, struct_pb2.Struct()))
    if full_name == "google.protobuf.Value":
        return st.one_of(json_values(vocabulary), deep_json(st.integers(1, 150))).map(
            lambda v: to_value(v, struct_pb2.Value())
        )
    if full_name == "google.protobuf.ListValue":
        return st.lists(json_values(vocabulary), max_size=5).map(lambda v: to_value(v, struct_pb2.Value()).list_value)
    return None


# --- messages -------------------------------------------------------------------------------------------------------

MAX_REPEATED = 6


def requests(descriptor: Descriptor, vocabulary: Vocabulary) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`, half of them plausible (so that many get past validation), half wild.

    A plausible message is about one head: its names and inputs come from that head only.
    """
    focused = st.sampled_from(vocabulary.heads).map(vocabulary.focused)
    plausible = focused.flatmap(lambda v: messages(descriptor, v, plausible=True))
    return st.one_of(plausible, messages(descriptor, vocabulary))


def messages(
    descriptor: Descriptor, vocabulary: Vocabulary, depth: int = 4, *, plausible: bool = False
) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`: each field set or not, at most one field of each oneof, nested `depth` deep.

    `plausible`: known names, sentences of known words, small numbers, 1 to 3 elements in a repeated field.
    """
    known = _well_known(descriptor.full_name, vocabulary, plausible)
    if known is not None:
        return known
    return _message(descriptor, vocabulary, depth, plausible)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, vocabulary: Vocabulary, depth: int, plausible: bool) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    chosen = {oneof.full_name: draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs}
    for fd in descriptor.fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            wanted = chosen[oneof.full_name] is fd
        else:  # plausible: a repeated field always, another mostly
            wanted = draw(st.booleans()) if not plausible else fd.is_repeated or draw(st.integers(0, 7)) > 0
        if wanted and (fd.message_type is None or depth > 0):
            _set(message, fd, draw(_field_values(fd, vocabulary, depth, plausible)))
    return message


def _field_values(fd: FieldDescriptor, vocabulary: Vocabulary, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
    """A value of `fd`: a dict for a map, a list for a repeated field, else one value."""
    least, most = (1, 3) if plausible else (0, MAX_REPEATED)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key, value = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        plausible_key = plausible and key.type == _T.TYPE_STRING
        keys = words(vocabulary, "fields") if plausible_key else _field_values(key, vocabulary, depth, plausible)
        return st.dictionaries(keys, _single(value, vocabulary, depth, plausible), min_size=least, max_size=most)
    one = _single(fd, vocabulary, depth, plausible)
    return st.lists(one, min_size=least, max_size=most) if fd.is_repeated else one


def _single(fd: FieldDescriptor, vocabulary: Vocabulary, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
    if fd.message_type is not None:
        return messages(fd.message_type, vocabulary, depth - 1, plausible=plausible)
    return _scalars(fd, vocabulary, plausible)


def _set(message: Message, fd: FieldDescriptor, value: Any) -> None:
    target = getattr(message, fd.name)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif isinstance(value, list) and fd.message_type is not None:
        for item in value:
            target.add().CopyFrom(item)  # (extend would reparse: past protobuf's depth limit it fails)
    elif isinstance(value, list):
        target.extend(value)
    elif isinstance(value, Message):
        target.CopyFrom(value)
    else:
        setattr(message, fd.name, value)


# --- malformed bytes and bodies -------------------------------------------------------------------------------------


def malformed(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Bytes that are not (quite) a valid message: random, or a valid one cut, flipped or spliced."""
    return st.one_of(st.binary(max_size=256), _mutated(valid))


@st.composite
def _mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "flip", "insert"]))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


PATHOLOGICAL_JSON = (
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"1" * 5000,
    b'"\\ud800"',
    b'{"a": 1, "a": 2}',
    b"\xef\xbb\xbf{}",
    b"null",
    b"[]",
    b'""',
    b"{",
    b"\xff\xfe{",
)


def raw_json(vocabulary: Vocabulary) -> st.SearchStrategy[bytes]:
    """Bodies that are not the request's JSON: random JSON, deep nesting, odd literals, bytes."""
    depth = st.integers(1, 200_000)
    return st.one_of(
        json_values(vocabulary, wire=True).map(_dumps),
        st.builds(lambda n, objects: _nested_text(n, objects), depth, st.booleans()),
        st.sampled_from(PATHOLOGICAL_JSON),
        st.binary(max_size=128),
    )


def _nested_text(depth: int, objects: bool) -> bytes:
    if objects:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def message_json(message: Message) -> dict[str, Any]:
    """`message` in the proto3 JSON mapping, or {} when it has none (NaN in a Struct)."""
    try:
        return json_format.MessageToDict(message)
    except (ValueError, TypeError, json_format.Error):
        return {}


DEEP = "\x00deep\x00"  # a placeholder for a value nested too deep for json.dumps itself


@st.composite
def _edited(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]], vocabulary: Vocabulary) -> bytes:
    """A valid JSON request with a few members of its objects replaced by random JSON (wrong types, huge numbers,
    lone surrogates, deep nesting, ...)."""
    body = draw(base)
    objects = list(_objects(body))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(objects))
        key = draw(st.one_of(st.sampled_from(sorted(target) or ["x"]), words(vocabulary)))
        target[key] = draw(st.one_of(json_values(vocabulary, wire=True), st.just(DEEP)))
    text = _dumps(body)
    if DEEP.encode() not in text and json.dumps(DEEP).encode() in text:
        depth = draw(st.integers(1, 5000))
        text = text.replace(json.dumps(DEEP).encode(), _nested_text(depth, draw(st.booleans())), 1)
    return text


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in `value`, itself first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


def json_bodies(descriptor: Descriptor, vocabulary: Vocabulary) -> st.SearchStrategy[bytes]:
    """HTTP bodies for a unary RPC: its message as JSON, that JSON edited, or anything else."""
    valid = requests(descriptor, vocabulary).map(message_json)
    return st.one_of(valid.map(_dumps), _edited(valid, vocabulary), raw_json(vocabulary))


def ndjson_bodies(descriptor: Descriptor, vocabulary: Vocabulary) -> st.SearchStrategy[bytes]:
    """HTTP bodies for a streaming RPC: lines of its messages as JSON, some edited or broken."""
    valid = requests(descriptor, vocabulary).map(message_json)
    line = st.one_of(valid.map(_dumps), _edited(valid, vocabulary), raw_json(vocabulary).map(lambda b: b[:4096]))
    return st.lists(line, max_size=MAX_REPEATED).map(lambda lines: b"\n".join(lines))


# --- Open Inference Protocol tensors --------------------------------------------------------------------------------

_ELEMENT_FORMATS = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b"}
_ELEMENT_FORMATS |= {"INT16": "h", "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}
_INT_DATATYPES = {f"UINT{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)}
_INT_DATATYPES |= {f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)}
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents"}
_CONTENTS |= {"INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents"}
_CONTENTS |= {"UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents"}
_CONTENTS |= {"FP64": "fp64_contents", "BYTES": "bytes_contents"}


@dataclass(frozen=True)
class Tensor:
    """A generated input tensor: its name, datatype, shape and elements (BYTES as bytes)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]

    def raw(self) -> bytes:
        """The protocol's raw encoding, or random-ish bytes when the elements do not fit the datatype."""
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(v)) + v for v in self.data if isinstance(v, bytes))
        try:
            return struct.pack(f"<{len(self.data)}{_ELEMENT_FORMATS.get(self.datatype, 'q')}", *self.data)
        except (struct.error, TypeError, OverflowError):
            return repr(self.data).encode()[:64]

    def json(self) -> dict[str, Any]:
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in self.data]
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape, "data": data}


def _elements(datatype: str, vocabulary: Vocabulary, plausible: bool = False) -> st.SearchStrategy[Any]:
    if datatype == "BYTES":
        text = texts(vocabulary, plausible=True)
        return (text if plausible else st.one_of(text, texts(vocabulary))).map(str.encode)
    if datatype == "BOOL":
        return st.booleans()
    if datatype.startswith(("FP", "BF")):
        return st.floats(width=32) if datatype in ("FP16", "FP32", "BF16") else st.floats()
    if datatype in _INT_DATATYPES:
        return integers(*_INT_DATATYPES[datatype])
    return st.one_of(st.booleans(), integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=8))


@st.composite
def tensors(draw: st.DrawFn, specs: Sequence[TensorSpec], vocabulary: Vocabulary) -> Tensor:
    """A tensor named and typed as one of `specs` (or not), its shape fitting its elements (or not)."""
    spec = draw(st.sampled_from(specs)) if len(specs) > 0 and draw(st.integers(0, 3)) > 0 else None
    name = spec.name if spec is not None else draw(texts(vocabulary))
    datatype = draw(st.sampled_from([spec.datatype] if spec else OIP_DATATYPES) | texts(vocabulary))
    data = draw(st.lists(_elements(datatype, vocabulary), max_size=MAX_REPEATED))
    shape = draw(
        st.one_of(
            st.just([len(data)]),
            st.just([1, len(data)]),
            st.lists(integers(-(2**63), 2**63 - 1), max_size=4),
        )
    )
    return Tensor(name, datatype, shape, data)


@st.composite
def model_inputs(draw: st.DrawFn, specs: Sequence[TensorSpec], vocabulary: Vocabulary) -> list[Tensor]:
    """A model's input tensors: all of `specs` as they say (same length, plausible text), or any tensors."""
    if len(specs) > 0 and draw(st.booleans()):
        count = draw(st.integers(1, 3))
        elements = _elements("BYTES", vocabulary, plausible=True)
        return [
            Tensor(spec.name, spec.datatype, [count], draw(st.lists(elements, min_size=count, max_size=count)))
            if spec.datatype == "BYTES"
            else draw(tensors([spec], vocabulary))
            for spec in specs
        ]
    return draw(st.lists(tensors(specs, vocabulary), max_size=len(specs) + 2))


@st.composite
def infer_requests(draw: st.DrawFn, vocabulary: Vocabulary) -> oip_pb2.ModelInferRequest:
    """ModelInfer requests for a served model: tensors as typed contents, raw, both, or with bad raw entries."""
    model = draw(st.sampled_from(vocabulary.heads))  # (`requests()` makes the requests for models not served)
    focus = vocabulary.focused(model)
    descriptor = oip_pb2.ModelInferRequest.DESCRIPTOR
    request = draw(st.one_of(messages(descriptor, focus, plausible=True), messages(descriptor, vocabulary)))
    del request.inputs[:], request.raw_input_contents[:]
    if draw(st.booleans()):  # often no parameters or outputs, which then cannot be wrong
        request.ClearField("parameters")
        request.ClearField("outputs")
    request.model_name = model
    request.model_version = draw(mostly(st.sampled_from(["", "1"]), texts(vocabulary)))
    inputs = draw(model_inputs(vocabulary.models.get(request.model_name, ()), vocabulary))
    encoding = draw(st.sampled_from(["contents", "raw", "contents", "raw", "both", "random raw"]))
    for tensor in inputs:
        added = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if encoding in ("contents", "both"):
            contents = _CONTENTS.get(tensor.datatype) or draw(st.sampled_from(sorted(set(_CONTENTS.values()))))
            _fill_contents(added, contents, tensor.data)
    if encoding in ("raw", "both"):
        request.raw_input_contents.extend(tensor.raw() for tensor in inputs)
    elif encoding == "random raw":
        request.raw_input_contents.extend(draw(st.lists(binaries(), max_size=len(inputs) + 1)))
    return request


def _fill_contents(tensor: Any, contents: str, data: list[Any]) -> None:
    """Put `data` in the named contents field, as much of it as the field's type takes."""
    target = getattr(tensor.contents, contents)
    for value in data:
        try:
            target.append(value)
        except (TypeError, ValueError, OverflowError):
            pass


@st.composite
def infer_json(draw: st.DrawFn, vocabulary: Vocabulary, model: str) -> bytes:
    """The HTTP protocol's inference body for `model`: tensors with JSON ``data``, maybe edited, or anything."""
    inputs = [t.json() for t in draw(model_inputs(vocabulary.models.get(model, ()), vocabulary))]
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        body["parameters"] = draw(st.dictionaries(words(vocabulary), json_values(vocabulary)))
    if draw(st.booleans()):
        body["outputs"] = draw(
            st.lists(st.dictionaries(st.sampled_from(["name", "parameters"]), json_values(vocabulary)))
        )
    return draw(st.one_of(st.just(_dumps(body)), _edited(st.just(body), vocabulary), raw_json(vocabulary)))


# --- discovering the RPCs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC of the server: its path and descriptor."""

    path: str
    method: MethodDescriptor

    @property
    def service(self) -> str:
        return self.method.containing_service.full_name

    @property
    def request(self) -> Descriptor:
        return self.method.input_type

    @property
    def response(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)


def discover_rpcs(channel: grpc.Channel) -> list[Rpc]:
    """Every RPC of every service the server lists through reflection (their descriptors: the default pool)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=30))
    pool = descriptor_pool.Default()
    rpcs = []
    for name in sorted(s.name for s in reply.list_services_response.service):
        service = pool.FindServiceByName(name)  # KeyError: import the service's stubs in STUB_MODULES
        rpcs += [Rpc(f"/{name}/{method.name}", method) for method in service.methods]
    return rpcs


def door(rpc: Rpc) -> str:
    """Which door `rpc` is: native, generic, streaming, oip (Open Inference Protocol) or grpc (health, reflection)."""
    if rpc.service.startswith("grpc."):
        return "grpc"
    if rpc.service.startswith("inference."):
        return "oip"
    if rpc.method.client_streaming or rpc.method.server_streaming:
        return "streaming"
    if rpc.service in ("bertserve.v1.InferenceService", "bertserve.v1.ModelService"):
        return "generic"
    return "native"


# --- calling --------------------------------------------------------------------------------------------------------

TIMEOUT = 60.0


@dataclass
class Outcome:
    """How one call ended: its code and message, and the replies it got (serialized)."""

    code: grpc.StatusCode
    details: str
    replies: list[bytes]


def call_rpc(channel: grpc.Channel, rpc: Rpc, payloads: Sequence[bytes]) -> Outcome:
    """Send `payloads` (serialized requests; only the first for a unary request) and read every reply.

    A server-streaming RPC with a unary request (health's Watch never ends) is
    read until its first reply (or its status), then cancelled.
    """
    method = rpc.method
    try:
        if not method.client_streaming and not method.server_streaming:
            reply = channel.unary_unary(rpc.path)(payloads[0] if payloads else b"", timeout=TIMEOUT)
            return Outcome(grpc.StatusCode.OK, "", [reply])
        if method.client_streaming:
            replies = channel.stream_stream(rpc.path)(iter(payloads), timeout=TIMEOUT)
            return Outcome(grpc.StatusCode.OK, "", list(replies))
        stream = channel.unary_stream(rpc.path)(payloads[0] if payloads else b"", timeout=TIMEOUT)
        first = next(stream, None)
        stream.cancel()
        return Outcome(grpc.StatusCode.OK, "", [] if first is None else [first])
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", [])  # type: ignore[attr-defined]


@dataclass
class HttpReply:
    """An HTTP reply; status 0: the server closed the connection while the body was being sent."""

    status: int
    content_type: str
    body: bytes


def http_headers() -> st.SearchStrategy[dict[str, str]]:
    """Optional headers the gateway reads, with odd values (a timeout of 0, not a number, a bad request id)."""
    ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
    timeouts = st.one_of(
        st.sampled_from(["0", "-1", "1e3", "", " 5", "99999999999"]), st.integers(2000, 10**10).map(str)
    )
    values = {"Connect-Timeout-Ms": timeouts | ascii_text, "X-Request-Id": ascii_text}
    return st.fixed_dictionaries({}, optional=values)


def http_call(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpReply:
    """One HTTP request on its own connection; any status is a reply."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    headers = {**(headers or {}), "Connection": "close"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        try:
            connection.request(method, path, body=body, headers=headers)
        except ConnectionError:  # the server answered before reading all the body, and closed
            broken = True
        else:
            broken = False
        try:
            response = connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            if not broken:
                raise
            return HttpReply(0, "", b"")  # (its reset can discard its answer: status 0, "refused mid-body")
        return HttpReply(response.status, response.getheader("Content-Type") or "", response.read())
    finally:
        connection.close()


def quote(segment: str) -> str:
    """One path segment, percent-encoded (so that any text can name a model)."""
    return urllib.parse.quote(segment, safe="")


# --- the checks -----------------------------------------------------------------------------------------------------

FORBIDDEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
FORBIDDEN_NUMBERS = frozenset({2, 13})  # google.rpc.Code UNKNOWN, INTERNAL
# The 5xx a fuzzed call may get, from the gateway's code table: UNIMPLEMENTED, UNAVAILABLE, DEADLINE_EXCEEDED.
ALLOWED_5XX = frozenset({501, 503, 504})
# What gRPC's client says when it drops a reply whose trailers (the error status) are too big: the server's own
# status is lost (RESOURCE_EXHAUSTED in its place; HTTP 429), so an error must stay small whatever the request.
TRAILERS_TOO_BIG = "metadata size exceeds"
TRAILER_BUDGET = 8192 - 1024  # gRPC's default limit, less room for its own headers (:status, content-type, ...)


def trailer_bytes(status: grpc.Status) -> int:
    """What a failed call's trailers weigh on the wire, as gRPC counts them (32 bytes more per entry):
    ``grpc-status``, the message percent-encoded, ``-bin`` values in base64."""
    printable = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
    entries = [("grpc-status", "13"), ("grpc-message", urllib.parse.quote(status.details.encode(), safe=printable))]
    for key, value in status.trailing_metadata:
        raw = value.encode() if isinstance(value, str) else value
        entries.append((key, base64.b64encode(raw).decode() if key.endswith("-bin") else raw.decode()))
    return sum(len(key) + len(value) + 32 for key, value in entries)


def embedded_codes(message: Message) -> Iterator[int]:
    """The ``code`` of every status-like message inside `message` (per-input errors of Analyze, PredictStream)."""
    for fd, value in message.ListFields():
        if fd.name == "code" and fd.type in _INT_RANGES:
            yield int(value)
        elif fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            for item in value if fd.is_repeated else [value]:
                yield from embedded_codes(item)


def json_codes(value: Any) -> Iterator[int]:
    """The ``code`` of every status-like object (with an integer code and a message) in a JSON reply."""
    if isinstance(value, dict):
        if isinstance(value.get("code"), int) and isinstance(value.get("message"), str):
            yield value["code"]
        for item in value.values():
            yield from json_codes(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_codes(item)


def reply_json(reply: HttpReply) -> list[Any]:
    """The JSON documents of an HTTP reply (one per NDJSON line); [] when it is not JSON."""
    try:
        text = reply.body.decode("utf-8")
        if "ndjson" in reply.content_type:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return [json.loads(text)] if "json" in reply.content_type else []
    except ValueError:
        return [{"code": 13, "message": f"the reply is not the JSON it says it is: {reply.body[:200]!r}"}]


def sentinel_requests() -> list[tuple[str, Message]]:
    """Fixed requests whose answers must not change while the server is fuzzed."""
    return [
        (
            "/bertserve.v1.SentimentService/ClassifySentiment",
            sentiment_pb2.ClassifySentimentRequest(texts=["a great film", "a dull film"]),
        ),
        (
            "/bertserve.v1.FillMaskService/FillMask",
            fill_mask_pb2.FillMaskRequest(texts=["paris is the [MASK] of france"], top_k=5),
        ),
        (
            "/bertserve.v1.QuestionAnsweringService/AnswerQuestion",
            question_answering_pb2.AnswerQuestionRequest(
                inputs=[question_answering_pb2.QuestionContext(question="who went home", context="john went home")]
            ),
        ),
    ]


def sentinel_answers(channel: grpc.Channel) -> list[bytes]:
    """The serialized answers to `sentinel_requests()` (the same bytes for the same messages: no maps)."""
    call: Callable[..., bytes]
    answers = []
    for path, request in sentinel_requests():
        call = channel.unary_unary(path)
        answers.append(call(request.SerializeToString(), timeout=TIMEOUT))
    return answers


class Guard:
    """Checks every fuzzed outcome, the server's health after it, and every `SENTINEL_EVERY` examples the sentinel."""

    def __init__(self, channel: grpc.Channel, sentinel: list[bytes]) -> None:
        self.channel = channel
        self.sentinel = sentinel
        self.examples = 0
        self._health = health_pb2_grpc.HealthStub(channel)

    def rpc(self, rpc: Rpc, outcome: Outcome, sent: object) -> None:
        event(f"{rpc.path.rsplit('/', 1)[-1]}: {outcome.code.name}")  # (--hypothesis-show-statistics counts them)
        where = f"{rpc.path} ({_seed_note()}) sent {_short(sent)}"
        assert outcome.code not in FORBIDDEN, f"{outcome.code.name}: {outcome.details!r} from {where}"
        assert TRAILERS_TOO_BIG not in outcome.details, f"{outcome.details!r}: an error too big to read, from {where}"
        for reply in outcome.replies:
            codes = set(embedded_codes(rpc.response.FromString(reply))) & FORBIDDEN_NUMBERS
            assert not codes, f"a per-input error with code {codes} in a reply of {where}: {reply[:300]!r}"
        self.after()

    def http(self, method: str, path: str, reply: HttpReply, sent: object) -> None:
        event(f"HTTP {reply.status}")
        where = f"{method} {path} ({_seed_note()}) sent {_short(sent)}"
        assert reply.status < 500 or reply.status in ALLOWED_5XX, f"HTTP {reply.status} {reply.body[:300]!r} {where}"
        documents = reply_json(reply) if method != "HEAD" else []  # (a reply to HEAD has no body)
        codes = {code for document in documents for code in json_codes(document)} & FORBIDDEN_NUMBERS
        assert not codes, f"code {codes} in the reply ({reply.status}) {reply.body[:300]!r} to {where}"
        assert TRAILERS_TOO_BIG.encode() not in reply.body, f"an error too big to read, {reply.body[:300]!r} {where}"
        self.after()

    def after(self) -> None:
        """Health after every example; the sentinel every `SENTINEL_EVERY`."""
        status = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT).status
        assert status == health_pb2.HealthCheckResponse.SERVING, f"the server is {status} ({_seed_note()})"
        self.examples += 1
        if self.examples % SENTINEL_EVERY == 0:
            self.check_sentinel()

    def check_sentinel(self) -> None:
        now = sentinel_answers(self.channel)
        for (path, _), before, after in zip(sentinel_requests(), self.sentinel, now):
            assert after == before, f"the answer of {path} to the sentinel changed ({_seed_note()})"


def _seed_note() -> str:
    return f"FUZZ_SEED={FUZZ_SEED} reruns this draw"


def _short(value: object, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
