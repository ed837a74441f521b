"""The one translation layer between OpenAI-style JSON and the `aigateway.v1` messages.

The bridge uses it for every request and response, and it is public so that Python users can
do the same (README, "Python translation API"):

* `from_json(MessageType, data)` / `to_json(msg)`: any message, from and to decoded JSON;
  `from_json_bytes` and `to_json_bytes` for JSON text. Raises only `TranslationError`.
* Typed shortcuts for each OpenAI document: `chat_request_from_json`,
  `stream_chat_request_from_json`, `embeddings_request_from_json`,
  `chat_completion_from_json`, `chat_chunk_from_json`, `embeddings_from_json`,
  `model_list_from_json`, `model_from_json`; and `request_body(request)`, the exact JSON
  the bridge sends upstream for a request message.

It is driven by the message descriptors, so a field added to the protos is translated
without code here. The rules (also written at the top of common.proto):

* A field's JSON key is its name (or the camelCase key in `_JSON_KEYS`).
* A oneof whose members are all named `<oneof>_<variant>` is a JSON union: the JSON key is
  the oneof name and the JSON value's form picks the member (a string, an array, an object
  whose `type` is `<variant>`, ...). Other oneofs are plain: each member is its own key;
  if JSON has two of them, the first is typed and the second kept in `extra_fields`.
* Messages with a single repeated field `values` stand for JSON arrays inside unions.
* A message whose fields all form one oneof of messages, among them one named `other`, is
  a JSON object tagged by its `type` key (the Responses API's items, parts, tools and
  events): the member named after the type, dots as underscores, holds the whole object;
  an object without `type` goes to the first member, one of any other type to `other`.
* `extra_fields` holds every key the message does not model and every value its typed
  field cannot hold: `null`, an empty array or object (so presence survives), a value of
  an unexpected JSON type. `to_json` merges it back, so JSON -> proto -> JSON is exact
  (integers in free-form JSON stay integers, within +-2**53, beyond which a JSON number is
  a double anyway). The one loss: a lone UTF-16 surrogate escaped in JSON (`"\\ud83d"`)
  cannot be a protobuf string and becomes U+FFFD.

* Key order. A `google.protobuf.Struct` (or any protobuf map) keeps no order: Python's
  protobuf iterates a map in hash order, which differs from one process to the next. In a
  request (`request_body`) the keys of every Struct, map and `extra_fields` are therefore
  written sorted, so identical requests give identical bytes wherever they are translated.
  Where the order is the caller's to choose (a JSON Schema's `properties`), a message has
  a `string <key>_json` beside its Struct `<key>`: JSON text, written as `<key>` with the
  keys in the order written (`parse_json_text`). Such a field is never read from JSON.

Plans are compiled once per message type; the per-call work is a dict lookup and a
setattr per key, which keeps streaming chunk translation cheap.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2, responses_pb2
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

__all__ = [
    "EXTRA_FIELDS",
    "ChatRequest",
    "ResponseRequest",
    "TranslationError",
    "chat_chunk_from_json",
    "chat_completion_from_json",
    "chat_request_from_json",
    "embeddings_from_json",
    "embeddings_request_from_json",
    "from_json",
    "from_json_bytes",
    "json_text_fields",
    "model_from_json",
    "model_list_from_json",
    "parse_json_text",
    "request_body",
    "response_event_from_json",
    "response_from_json",
    "response_request_from_json",
    "stream_chat_request_from_json",
    "stream_response_request_from_json",
    "struct_to_python",
    "to_json",
    "to_json_bytes",
    "type_oneof",
    "value_to_python",
]

EXTRA_FIELDS = "extra_fields"
"""Name of the field that carries unmodelled JSON keys in every object message."""

_JSON_KEYS = {"provider_options": "providerOptions", "provider_metadata": "providerMetadata"}
"""Fields whose JSON key is not their name (proto field names are lower_snake_case)."""

_MAX_SAFE_INTEGER = 2**53
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_NUMBER_TYPES = frozenset({float, int})
"""Element types a repeated double/float field takes (bool is its own type, so it is out)."""

M = TypeVar("M", bound=Message)

Reader = Callable[[Message, Any], bool]
"""Stores a JSON value into a message; False when the field cannot hold it."""
Writer = Callable[[Any], Any]
"""Turns a field's Python value into its JSON value."""


class TranslationError(ValueError):
    """JSON that cannot become the requested message at all (e.g. not an object)."""


# --------------------------------------------------------------------------- free-form JSON


def value_to_python(value: struct_pb2.Value) -> Any:
    """A `google.protobuf.Value` as plain JSON data, with integral numbers as ints."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and -_MAX_SAFE_INTEGER <= number <= _MAX_SAFE_INTEGER:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_python(value.struct_value)
    if kind == "list_value":
        return [value_to_python(v) for v in value.list_value.values]
    return None


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A `google.protobuf.Struct` as a JSON object, with integral numbers as ints."""
    return {key: value_to_python(v) for key, v in struct.fields.items()}


def _list_to_python(values: struct_pb2.ListValue) -> list[Any]:
    return [value_to_python(v) for v in values.values]


def _sorted_value(value: struct_pb2.Value) -> Any:
    """`value_to_python`, with the keys of every object in it sorted (requests: see the
    module docstring, "Key order")."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _sorted_struct(value.struct_value)
    if kind == "list_value":
        return _sorted_list(value.list_value)
    return value_to_python(value)


def _sorted_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    # Keys are unique, so sorting the pairs never compares two Values.
    return {key: _sorted_value(v) for key, v in sorted(struct.fields.items())}


def _sorted_list(values: struct_pb2.ListValue) -> list[Any]:
    return [_sorted_value(v) for v in values.values]


def parse_json_text(text: str) -> dict[str, Any]:
    """The JSON object in a `<key>_json` field, its keys in the order written.

    TranslationError unless `text` is JSON text of one object that the upstream body can
    carry as it is: no NaN or Infinity (nor a number too large for a double), no key twice
    in an object (which of the two would count is up to each parser), no lone UTF-16
    surrogate escape (the body is UTF-8), and no deeper than MAX_NESTING objects and arrays.
    """
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise TranslationError(f"JSON nested deeper than {MAX_NESTING} levels") from None
    except TranslationError:
        raise
    except ValueError as exc:
        raise TranslationError(f"not JSON: {exc}") from None
    if type(data) is not dict:
        raise TranslationError(f"got {_json_kind(data)}")
    _check_json_text(data)
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise TranslationError(f"the key {json.dumps(key)} appears twice in an object")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise TranslationError(f"{name} is not JSON; send a finite number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (math.inf, -math.inf):
        raise TranslationError(f"{literal[:40]} is beyond the range of a double (about 1e308)")
    return value


def _json_kind(data: Any) -> str:
    if type(data) is list:
        return "an array"
    if type(data) is str:
        return "a string"
    if data is None:
        return "null"
    return "a boolean" if type(data) is bool else "a number"


def _check_json_text(data: dict[str, Any]) -> None:
    """Nesting depth and lone surrogates, walked without recursion."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise TranslationError(f"JSON nested deeper than {MAX_NESTING} levels")
        if type(value) is dict:
            for key, item in value.items():
                _check_string(key)
                pending.append((item, depth + 1))
        elif type(value) is list:
            pending.extend((item, depth + 1) for item in value)
        elif type(value) is str:
            _check_string(value)


def _check_string(value: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise TranslationError(
                "a lone UTF-16 surrogate escape (such as \\ud83d), which is not a character; "
                "send the character or its full surrogate pair"
            ) from None


def _set_value(target: struct_pb2.Value, data: Any, level: int) -> None:
    """Fill the Value at nesting `level` (see `_too_deep`)."""
    if level > MAX_NESTING:
        raise _too_deep()
    if data is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif data is True or data is False:
        target.bool_value = data
    elif isinstance(data, int | float):
        target.number_value = data
    elif isinstance(data, str):
        target.string_value = data
    elif isinstance(data, dict):
        _fill_struct(target.struct_value, data, level + 1)
    elif isinstance(data, list):
        _fill_list(target.list_value, data, level + 1)
    else:
        raise TranslationError(f"{type(data).__name__} is not a JSON value")


def _fill_struct(target: struct_pb2.Struct, data: dict[str, Any], level: int) -> None:
    """Fill the Struct at nesting `level`: its map entries are one level down, their Values
    two, so a level of JSON object costs three levels of protobuf."""
    if level > MAX_NESTING:
        raise _too_deep()
    target.SetInParent()
    fields = target.fields
    for key, item in data.items():
        _set_value(fields[key], item, level + 2)


def _fill_list(target: struct_pb2.ListValue, data: list[Any], level: int) -> None:
    if level > MAX_NESTING:
        raise _too_deep()
    target.SetInParent()
    for item in data:
        _set_value(target.values.add(), item, level + 1)


MAX_NESTING = 100
"""How deep messages may nest below the top one: the default recursion limit of the protobuf
parsers of C++, Java, Python (upb) and C#. A message nested deeper serializes, but the
caller's generated client cannot decode it, so `from_json` refuses JSON that would need it
(a JSON object inside a Struct costs 3 levels, so about 32 levels of JSON fit)."""


class _Nesting(threading.local):
    """The nesting level of the message `_fill` is filling, for the free-form fillers below
    it. One per thread: translation is synchronous, but Python users may call it from threads.
    """

    level = 0


_nesting = _Nesting()


def _too_deep() -> TranslationError:
    return TranslationError(
        f"JSON nested deeper than protobuf's limit of {MAX_NESTING} message levels, which "
        "generated clients cannot decode"
    )


# --------------------------------------------------------------------------- plans

_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
_VALUE = struct_pb2.Value.DESCRIPTOR.full_name
_LIST_VALUE = struct_pb2.ListValue.DESCRIPTOR.full_name


class _Plan:
    """How one message type reads and writes JSON.

    A request plan (`_request_plan`) writes only, and writes the `type` that a oneof member
    implies when the message does not say it (`implied`, and `_with_type` on union members).
    A tagged message (`tagged`) reads and writes through the member its `type` picks.
    """

    __slots__ = ("has_extra", "implied", "readers", "request", "tagged", "texts", "writers")

    def __init__(self) -> None:
        self.readers: dict[str, Reader] = {}
        self.writers: dict[int, tuple[str, Writer]] = {}
        self.texts: dict[int, int] = {}
        """Number of each `<key>_json` field -> number of its Struct `<key>`."""
        self.has_extra = False
        self.implied: tuple[str, dict[str, str]] | None = None
        self.tagged: _Tagged | None = None
        self.request = False


class _Tagged:
    """How a tagged message (see the module docstring) picks its member."""

    __slots__ = ("by_type", "first", "other")

    def __init__(self, oneof: OneofDescriptor) -> None:
        fields = list(oneof.fields)
        self.by_type = {f.name: f.name for f in fields if f.name != _OTHER}
        self.first = fields[0].name
        self.other = _OTHER

    def member(self, data: dict[str, Any]) -> str:
        tag = data.get("type", _ABSENT)
        if tag is _ABSENT:
            return self.first
        if type(tag) is str:
            return self.by_type.get(tag.replace(".", "_"), self.other)
        return self.other


_OTHER = "other"
"""The member of a tagged message that holds objects of types the protos do not model."""
_ABSENT = object()


_plans: dict[str, _Plan] = {}
_request_plans: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = _Plan()
        # Registered before it is filled, so recursive message types terminate.
        _plans[descriptor.full_name] = plan
        _compile(descriptor, plan, request=False)
    return plan


def _request_plan(descriptor: Descriptor) -> _Plan:
    plan = _request_plans.get(descriptor.full_name)
    if plan is None:
        plan = _Plan()
        _request_plans[descriptor.full_name] = plan
        _compile(descriptor, plan, request=True)
    return plan


# Implied types ------------------------------------------------------------
# Two shapes in the protos name a JSON `type` by the oneof member that is set, and the OpenAI
# API requires that `type` in a request. Both are found from the descriptors, so a message
# added in either shape is covered without code here:
# * a message with a `type` and one oneof: `type` is the JSON key of the member that is set
#   (ContentPart `image_url` -> "image_url", Tool `function` -> "function", ToolChoice
#   `allowed_tools`, ToolCall `custom`, Prediction's `content` union -> "content");
# * a member of a union whose message has a `type` and no oneof of its own: `type` is the
#   member's variant (`response_format_json_object` -> "json_object").


def _written_oneofs(descriptor: Descriptor) -> list[OneofDescriptor]:
    return [o for o in descriptor.oneofs if not _is_synthetic(o)]


def _has_type(descriptor: Descriptor) -> bool:
    field = descriptor.fields_by_name.get("type")
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def type_oneof(descriptor: Descriptor) -> OneofDescriptor | None:
    """The oneof whose set member names `descriptor`'s JSON `type`, if it has one: a request
    body carries the member's JSON key as `type` when the message does not set it."""
    name = descriptor.full_name
    if name not in _type_oneofs:
        oneofs = _written_oneofs(descriptor)
        _type_oneofs[name] = oneofs[0] if _has_type(descriptor) and len(oneofs) == 1 else None
    return _type_oneofs[name]


_type_oneofs: dict[str, OneofDescriptor | None] = {}


def _implied_by_member(descriptor: Descriptor) -> tuple[str, dict[str, str]] | None:
    oneof = type_oneof(descriptor)
    if oneof is None:
        return None
    union = _is_union(oneof)
    keys = {f.name: oneof.name if union else _JSON_KEYS.get(f.name, f.name) for f in oneof.fields}
    return oneof.name, keys


def _implied_by_variant(oneof: OneofDescriptor, field: FieldDescriptor) -> str | None:
    message_type = field.message_type
    if message_type is None or not _has_type(message_type) or _written_oneofs(message_type):
        return None
    return field.name[len(oneof.name) + 1 :]


def _with_type(writer: Writer, variant: str) -> Writer:
    def write(msg: Message) -> Any:
        out = writer(msg)
        return out if "type" in out else {"type": variant, **out}

    return write


def json_text_fields(descriptor: Descriptor) -> dict[str, str]:
    """The `string <key>_json` fields of `descriptor` that stand for its Struct `<key>`
    (JSON text of the same object, with the caller's key order), by name -> `<key>`."""
    name = descriptor.full_name
    texts = _json_texts.get(name)
    if texts is None:
        texts = {}
        for field in descriptor.fields:
            anchor = descriptor.fields_by_name.get(field.name.removesuffix(_TEXT_SUFFIX))
            if (
                field.name.endswith(_TEXT_SUFFIX)
                and field.type == FieldDescriptor.TYPE_STRING
                and not _is_repeated(field)
                and anchor is not None
                and anchor.message_type is not None
                and anchor.message_type.full_name == _STRUCT
                and not _is_repeated(anchor)
            ):
                texts[field.name] = anchor.name
        _json_texts[name] = texts
    return texts


_TEXT_SUFFIX = "_json"
_json_texts: dict[str, dict[str, str]] = {}


def _is_union(oneof: OneofDescriptor) -> bool:
    prefix = oneof.name + "_"
    return all(f.name.startswith(prefix) for f in oneof.fields)


def _is_list_wrapper(descriptor: Descriptor) -> bool:
    fields = descriptor.fields
    return len(fields) == 1 and fields[0].name == "values" and _is_repeated(fields[0])


def _message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field (the stubs type it as optional)."""
    message_type = field.message_type
    assert message_type is not None, field.full_name
    return message_type


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_synthetic(oneof: OneofDescriptor) -> bool:
    """The oneof protoc makes for a proto3 `optional` field, not one written in the proto."""
    fields = oneof.fields
    return len(fields) == 1 and oneof.name == "_" + fields[0].name


def _tagged_oneof(descriptor: Descriptor) -> OneofDescriptor | None:
    """The oneof of a tagged message, or None when the message is not one."""
    oneofs = [o for o in descriptor.oneofs if not _is_synthetic(o)]
    if len(oneofs) != 1 or len(oneofs[0].fields) != len(descriptor.fields):
        return None
    members = oneofs[0].fields
    if not all(f.message_type is not None for f in members):
        return None
    return oneofs[0] if any(f.name == _OTHER for f in members) else None


def _compile(descriptor: Descriptor, plan: _Plan, *, request: bool) -> None:
    plan.request = request
    tagged = _tagged_oneof(descriptor)
    if tagged is not None:
        plan.tagged = _Tagged(tagged)
        return
    if request:
        plan.implied = _implied_by_member(descriptor)
    unions = [o for o in descriptor.oneofs if _is_union(o) and not _is_synthetic(o)]
    in_union = {f.name for o in unions for f in o.fields}
    plain = {
        f.name: o.name
        for o in descriptor.oneofs
        if not _is_union(o) and not _is_synthetic(o)
        for f in o.fields
    }
    texts = json_text_fields(descriptor)
    for field in descriptor.fields:
        if field.name == EXTRA_FIELDS:
            plan.has_extra = True
            continue
        if field.name in in_union:
            continue
        if field.name in texts:
            # Written under its Struct's key, in its Struct's place; never read.
            anchor = descriptor.fields_by_name[texts[field.name]]
            plan.writers[field.number] = (_JSON_KEYS.get(anchor.name, anchor.name), _text_writer)
            plan.texts[field.number] = anchor.number
            continue
        key = _JSON_KEYS.get(field.name, field.name)
        if not request:
            reader = _field_reader(field)
            if field.name in plain:
                reader = _first_member_wins(reader, plain[field.name], field.name)
            plan.readers[key] = reader
        plan.writers[field.number] = (key, _field_writer(field, request))
    for oneof in unions:
        if not request:
            plan.readers[oneof.name] = _union_reader(oneof)
        for field in oneof.fields:
            writer = (
                _wrapper_writer(field.message_type, request)
                if field.message_type is not None and _is_list_wrapper(field.message_type)
                else _field_writer(field, request)
            )
            variant = _implied_by_variant(oneof, field) if request else None
            if variant is not None:
                writer = _with_type(writer, variant)
            plan.writers[field.number] = (oneof.name, writer)


def _first_member_wins(reader: Reader, oneof: str, name: str) -> Reader:
    """Members of a plain oneof are separate JSON keys (`text`, `image_url`, ...). When JSON
    has two of them, the second goes to extra_fields instead of silently replacing the first.
    """

    def read(msg: Message, value: Any) -> bool:
        current = msg.WhichOneof(oneof)
        return (current is None or current == name) and reader(msg, value)

    return read


# Scalars ------------------------------------------------------------------


def _scalar_check(field: FieldDescriptor) -> Callable[[Any], bool]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return lambda v: type(v) is str
    if t == FieldDescriptor.TYPE_BOOL:
        return lambda v: type(v) is bool
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return lambda v: type(v) is float or type(v) is int
    if t == FieldDescriptor.TYPE_BYTES:
        return _is_canonical_base64
    low, high = {
        FieldDescriptor.TYPE_INT32: _INT32,
        FieldDescriptor.TYPE_SINT32: _INT32,
        FieldDescriptor.TYPE_SFIXED32: _INT32,
        FieldDescriptor.TYPE_UINT32: _UINT32,
        FieldDescriptor.TYPE_FIXED32: _UINT32,
        FieldDescriptor.TYPE_UINT64: _UINT64,
        FieldDescriptor.TYPE_FIXED64: _UINT64,
    }.get(t, _INT64)
    return lambda v: type(v) is int and low <= v <= high


def _is_canonical_base64(value: Any) -> bool:
    """Only base64 that re-encodes to the same text is stored as bytes (exact round trip)."""
    if type(value) is not str:
        return False
    try:
        return base64.b64encode(base64.b64decode(value, validate=True)).decode() == value
    except (binascii.Error, ValueError):
        return False


def _scalar_converter(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64decode
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float
    return None


def _field_reader(field: FieldDescriptor) -> Reader:
    name = field.name
    message_type = field.message_type
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _map_reader(field)
    if _is_repeated(field):
        if message_type is None:
            return _repeated_scalar_reader(field)
        return _repeated_message_reader(field)
    if message_type is not None:
        return _message_reader(name, message_type)
    check = _scalar_check(field)
    convert = _scalar_converter(field)
    if convert is None:

        def read_scalar(msg: Message, value: Any) -> bool:
            if not check(value):
                return False
            setattr(msg, name, value)
            return True

        return read_scalar

    def read_converted(msg: Message, value: Any) -> bool:
        if not check(value):
            return False
        setattr(msg, name, convert(value))
        return True

    return read_converted


def _message_reader(name: str, message_type: Descriptor) -> Reader:
    full_name = message_type.full_name
    if full_name == _STRUCT:

        def read_struct(msg: Message, value: Any) -> bool:
            if type(value) is not dict:
                return False
            _fill_struct(getattr(msg, name), value, _nesting.level + 1)
            return True

        return read_struct
    if full_name == _VALUE:

        def read_value(msg: Message, value: Any) -> bool:
            _set_value(getattr(msg, name), value, _nesting.level + 1)
            return True

        return read_value
    if full_name == _LIST_VALUE:

        def read_list_value(msg: Message, value: Any) -> bool:
            if type(value) is not list:
                return False
            _fill_list(getattr(msg, name), value, _nesting.level + 1)
            return True

        return read_list_value

    def read_message(msg: Message, value: Any) -> bool:
        if type(value) is not dict:
            return False
        sub = getattr(msg, name)
        sub.SetInParent()
        _fill(sub, value, _nesting.level + 1)
        return True

    return read_message


def _repeated_scalar_reader(field: FieldDescriptor) -> Reader:
    name = field.name
    check = _scalar_check(field)
    convert = _scalar_converter(field)
    if convert is float:
        # Embedding vectors: 1536 numbers each, hundreds per answer. Checking the set of
        # element types and converting only when an int is there is exact and 4x cheaper
        # than a check and a float() per element.

        def read_numbers(msg: Message, value: Any) -> bool:
            if type(value) is not list or not value:
                return False
            kinds = set(map(type, value))
            if not kinds <= _NUMBER_TYPES:
                return False
            getattr(msg, name).extend(value if int not in kinds else [float(v) for v in value])
            return True

        return read_numbers

    def read(msg: Message, value: Any) -> bool:
        if type(value) is not list or not value or not all(check(v) for v in value):
            return False
        getattr(msg, name).extend(value if convert is None else [convert(v) for v in value])
        return True

    return read


def _repeated_message_reader(field: FieldDescriptor) -> Reader:
    name = field.name
    message_type = _message_type(field)
    full_name = message_type.full_name
    if full_name in (_STRUCT, _LIST_VALUE, _VALUE):
        filler: Callable[[Any, Any, int], None] = {  # type: ignore[assignment]
            _STRUCT: _fill_struct,
            _LIST_VALUE: _fill_list,
            _VALUE: _set_value,
        }[full_name]
        expected: type | None = {_STRUCT: dict, _LIST_VALUE: list, _VALUE: None}[full_name]

        def read_wkt(msg: Message, value: Any) -> bool:
            if type(value) is not list or not value:
                return False
            if expected is not None and not all(type(v) is expected for v in value):
                return False
            target = getattr(msg, name)
            level = _nesting.level + 1
            for item in value:
                filler(target.add(), item, level)
            return True

        return read_wkt

    if _is_list_wrapper(message_type):
        values_reader = _field_reader(message_type.fields[0])

        def read_lists(msg: Message, value: Any) -> bool:
            if type(value) is not list or not value or not all(type(v) is list for v in value):
                return False
            target = getattr(msg, name)
            for item in value:
                if not values_reader(target.add(), item):
                    msg.ClearField(name)
                    return False
            return True

        return read_lists

    def read(msg: Message, value: Any) -> bool:
        if type(value) is not list or not value or not all(type(v) is dict for v in value):
            return False
        target = getattr(msg, name)
        level = _nesting.level + 1
        for item in value:
            _fill(target.add(), item, level)
        return True

    return read


def _map_reader(field: FieldDescriptor) -> Reader:
    name = field.name
    value_field = _message_type(field).fields_by_name["value"]
    if value_field.message_type is None:
        check = _scalar_check(value_field)

        def read_scalar_map(msg: Message, value: Any) -> bool:
            if type(value) is not dict or not value or not all(check(v) for v in value.values()):
                return False
            getattr(msg, name).update(value)
            return True

        return read_scalar_map
    expected = {_STRUCT: dict, _LIST_VALUE: list, _VALUE: object}.get(
        value_field.message_type.full_name, dict
    )

    def read_message_map(msg: Message, value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        if expected is not object and not all(type(v) is expected for v in value.values()):
            return False
        target = getattr(msg, name)
        level = _nesting.level + 2  # below the map entry
        for key, item in value.items():
            _fill_any(target[key], item, level)
        return True

    return read_message_map


def _fill_any(target: Message, value: Any, level: int) -> None:
    full_name = target.DESCRIPTOR.full_name
    if full_name == _STRUCT:
        _fill_struct(target, value, level)  # type: ignore[arg-type]
    elif full_name == _LIST_VALUE:
        _fill_list(target, value, level)  # type: ignore[arg-type]
    elif full_name == _VALUE:
        _set_value(target, value, level)  # type: ignore[arg-type]
    else:
        target.SetInParent()
        _fill(target, value, level)


# Unions -------------------------------------------------------------------


def _union_reader(oneof: OneofDescriptor) -> Reader:
    """Pick the member by the JSON value's form; see the module docstring."""
    by_json_type: dict[type, list[FieldDescriptor]] = {str: [], list: [], dict: [], bool: []}
    numbers: list[FieldDescriptor] = []
    by_variant: dict[str, FieldDescriptor] = {}
    prefix_len = len(oneof.name) + 1
    for field in oneof.fields:
        message_type = field.message_type
        if message_type is None:
            if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                by_json_type[str].append(field)
            elif field.type == FieldDescriptor.TYPE_BOOL:
                by_json_type[bool].append(field)
            else:
                numbers.append(field)
        elif _is_list_wrapper(message_type):
            by_json_type[list].append(field)
        else:
            by_json_type[dict].append(field)
            by_variant[field.name[prefix_len:]] = field
    # Strings before bytes, so that a string member wins over a base64 one.
    by_json_type[str].sort(key=lambda f: f.type != FieldDescriptor.TYPE_STRING)
    readers = {f.name: _member_reader(f) for f in oneof.fields}
    objects = by_json_type[dict]

    def read(msg: Message, value: Any) -> bool:
        kind = type(value)
        if kind is dict and len(objects) > 1:
            tag = value.get("type")
            variant = by_variant.get(tag) if type(tag) is str else None
            candidates = [variant] if variant is not None else []
        elif kind is int or kind is float:
            candidates = numbers
        else:
            candidates = by_json_type.get(kind, [])
        for field in candidates:
            if readers[field.name](msg, value):
                return True
            msg.ClearField(field.name)
        return False

    return read


def _member_reader(field: FieldDescriptor) -> Reader:
    if field.message_type is not None and _is_list_wrapper(field.message_type):
        values_reader = _field_reader(field.message_type.fields[0])
        name = field.name

        def read_list(msg: Message, value: Any) -> bool:
            wrapper = getattr(msg, name)
            wrapper.SetInParent()
            # An empty array still selects the member; it writes back as [].
            return not value or values_reader(wrapper, value)

        return read_list
    return _field_reader(field)


# Writers ------------------------------------------------------------------


def _field_writer(field: FieldDescriptor, request: bool) -> Writer:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        value_type = message_type.fields_by_name["value"].message_type
        if value_type is None:
            return _sorted_map if request else dict
        element = _message_writer(value_type, request)
        if request:
            return lambda m: {k: element(v) for k, v in sorted(m.items())}
        return lambda m: {k: element(v) for k, v in m.items()}
    if _is_repeated(field):
        if message_type is None:
            if field.type == FieldDescriptor.TYPE_BYTES:
                return lambda values: [base64.b64encode(v).decode() for v in values]
            return list
        element = (
            _wrapper_writer(message_type, request)
            if _is_list_wrapper(message_type)
            else _message_writer(message_type, request)
        )
        return lambda values: [element(v) for v in values]
    if message_type is not None:
        return _message_writer(message_type, request)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda v: base64.b64encode(v).decode()
    return _identity


def _identity(value: Any) -> Any:
    return value


def _sorted_map(value: Any) -> dict[Any, Any]:
    return dict(sorted(value.items()))


def _text_writer(text: str) -> dict[str, Any]:
    return parse_json_text(text)


def _message_writer(descriptor: Descriptor, request: bool) -> Writer:
    full_name = descriptor.full_name
    if full_name == _STRUCT:
        return _sorted_struct if request else struct_to_python
    if full_name == _VALUE:
        return _sorted_value if request else value_to_python
    if full_name == _LIST_VALUE:
        return _sorted_list if request else _list_to_python
    return _request_json if request else to_json


def _wrapper_writer(descriptor: Descriptor, request: bool) -> Writer:
    values = _field_writer(descriptor.fields[0], request)
    return lambda wrapper: values(wrapper.values)


# --------------------------------------------------------------------------- public API


def _fill(msg: Message, data: dict[str, Any], level: int) -> None:
    """Fill `msg`, which is nested `level` messages below the top one."""
    if level > MAX_NESTING:
        raise _too_deep()
    plan = _plan(msg.DESCRIPTOR)  # type: ignore[arg-type]
    if plan.tagged is not None:
        member = getattr(msg, plan.tagged.member(data))
        member.SetInParent()
        _fill(member, data, level + 1)
        return
    readers = plan.readers
    extra: dict[str, Any] | None = None
    nesting = _nesting
    outer = nesting.level
    nesting.level = level
    try:
        for key, value in data.items():
            reader = readers.get(key)
            if reader is None or value is None or not reader(msg, value):
                if extra is None:
                    extra = {}
                extra[key] = value
        if extra:
            if not plan.has_extra:
                names = ", ".join(sorted(extra))
                raise TranslationError(f"{msg.DESCRIPTOR.full_name} has no field for {names}")
            _fill_struct(getattr(msg, EXTRA_FIELDS), extra, level + 1)
    finally:
        nesting.level = outer


def from_json(message_type: type[M], data: Any) -> M:
    """Build a message of `message_type` from decoded JSON (a dict), losing nothing."""
    if type(data) is not dict:
        raise TranslationError(
            f"expected a JSON object for {message_type.DESCRIPTOR.full_name}, "
            f"got {type(data).__name__}"
        )
    msg = message_type()
    try:
        try:
            _fill(msg, data, 0)
        except UnicodeEncodeError:
            # JSON may escape a lone UTF-16 surrogate ("\ud83d", half of an emoji); protobuf
            # strings must be valid UTF-8. Such characters become U+FFFD, as in any UTF-8
            # decoder, rather than failing the whole message. The only lossy case, off the
            # fast path.
            msg = message_type()
            _fill(msg, _replace_surrogates(data), 0)
    except OverflowError:
        # An integer literal beyond 1e308 (Python's JSON decoder keeps it exact; no double,
        # and so no protobuf number, can hold it).
        raise TranslationError("a number beyond the range of a double (about 1e308)") from None
    except RecursionError:
        # Only `_replace_surrogates` on JSON nested near Python's recursion limit gets here:
        # `_fill` stops at MAX_NESTING long before.
        raise _too_deep() from None
    return msg


def _replace_surrogates(value: Any) -> Any:
    if type(value) is str:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if type(value) is dict:
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if type(value) is list:
        return [_replace_surrogates(v) for v in value]
    return value


def from_json_bytes(message_type: type[M], raw: bytes | str) -> M:
    """Like `from_json`, from JSON text; TranslationError when it is not JSON."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TranslationError(f"not JSON: {exc}") from None
    return from_json(message_type, data)


def to_json(msg: Message) -> dict[str, Any]:
    """The message as the JSON object the OpenAI API uses; the inverse of `from_json`."""
    return _write(msg, _plan(msg.DESCRIPTOR))  # type: ignore[arg-type]


def _request_json(msg: Message) -> dict[str, Any]:
    """`to_json`, with the `type` that a oneof member implies where the message does not set
    it (see "Implied types"); a `type` the caller set, as a field or in extra_fields, stays."""
    plan = _request_plan(msg.DESCRIPTOR)  # type: ignore[arg-type]
    out = _write(msg, plan)
    implied = plan.implied
    if implied is not None and "type" not in out:
        member = msg.WhichOneof(implied[0])
        if member is not None:
            out = {"type": implied[1][member], **out}
    return out


def _write(msg: Message, plan: _Plan) -> dict[str, Any]:
    if plan.tagged is not None:
        members = msg.ListFields()
        if not members:
            return {}
        # The member is the object itself. In a response its `type` is written only when it
        # was given. In a request the member names the `type` the API requires (a
        # `function` tool is `{"type": "function", ...}`), except a `message` item, whose
        # type OpenAI's short form leaves out, and `other`, which holds its own.
        field, member = members[0]
        if not plan.request:
            return _write(member, _plan(member.DESCRIPTOR))
        written = _write(member, _request_plan(member.DESCRIPTOR))
        if "type" not in written and field.name not in (_OTHER, "message"):
            written = {"type": field.name, **written}
        return written
    writers = plan.writers
    out: dict[str, Any] = {}
    extra: struct_pb2.Struct | None = None
    fields = msg.ListFields()
    if plan.texts:
        fields = _in_place_of_structs(fields, plan.texts)
    for field, value in fields:
        entry = writers.get(field.number)
        if entry is None:  # extra_fields
            extra = value
            continue
        key, writer = entry
        out[key] = writer(value)
    if extra is not None:
        if plan.request:
            for key, item in sorted(extra.fields.items()):
                if key not in out:
                    out[key] = _sorted_value(item)
        else:
            for key, item in extra.fields.items():
                if key not in out:
                    out[key] = value_to_python(item)
    return out


def _in_place_of_structs(
    fields: Sequence[tuple[FieldDescriptor, Any]], texts: dict[int, int]
) -> Sequence[tuple[FieldDescriptor, Any]]:
    """`fields` with each set `<key>_json` moved to where its Struct `<key>` would be, so
    that both forms give the same key order around them; both set is a TranslationError."""
    numbers = {field.number: field for field, _ in fields}
    moved = False
    for text, anchor in texts.items():
        if text in numbers:
            if anchor in numbers:
                raise TranslationError(
                    f"{numbers[anchor].full_name} and {numbers[text].name} are both set; set one"
                )
            moved = True
    if not moved:
        return fields
    return sorted(fields, key=lambda item: texts.get(item[0].number, item[0].number))


def to_json_bytes(msg: Message) -> bytes:
    """The message as compact UTF-8 JSON text (what goes on the wire to the upstream).

    JSON has no NaN or Infinity: a message holding one is a TranslationError, not the
    tokens `NaN` / `Infinity` that Python's encoder writes by default and parsers refuse."""
    try:
        return json.dumps(
            to_json(msg), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError as exc:
        raise TranslationError(str(exc)) from None


# --------------------------------------------------------------------------- typed shortcuts
# One function per OpenAI JSON document, so that callers get the right message type (and
# type checkers the right return type) without naming it. `to_json` is the inverse of each.

ChatRequest = chat_pb2.CreateChatCompletionRequest | chat_pb2.StreamChatCompletionRequest
"""Either chat request message: the two share every field but `stream_options`."""

ResponseRequest = responses_pb2.CreateResponseRequest | responses_pb2.StreamResponseRequest
"""Either Responses API request message: the two share every field but `stream_options`."""


def _chat_request(message_type: type[M], data: Any, stream: bool) -> M:
    if type(data) is dict and "stream" in data:
        if data["stream"] not in (stream, None):
            other = "stream_chat_request_from_json" if data["stream"] else "chat_request_from_json"
            raise TranslationError(f'"stream": {json.dumps(data["stream"])} needs {other}')
        data = {k: v for k, v in data.items() if k != "stream"}
    return from_json(message_type, data)


def chat_request_from_json(data: Any) -> chat_pb2.CreateChatCompletionRequest:
    """An OpenAI `POST /chat/completions` body as the request of CreateChatCompletion.

    `"stream": false` is dropped (the RPC decides); `"stream": true` is a TranslationError.
    """
    return _chat_request(chat_pb2.CreateChatCompletionRequest, data, stream=False)


def stream_chat_request_from_json(data: Any) -> chat_pb2.StreamChatCompletionRequest:
    """An OpenAI chat body as the request of StreamChatCompletion; `"stream": true` is
    dropped (the RPC streams), `"stream": false` is a TranslationError."""
    return _chat_request(chat_pb2.StreamChatCompletionRequest, data, stream=True)


def embeddings_request_from_json(data: Any) -> embeddings_pb2.CreateEmbeddingsRequest:
    """An OpenAI `POST /embeddings` body as the request of CreateEmbeddings."""
    return from_json(embeddings_pb2.CreateEmbeddingsRequest, data)


def request_body(
    request: ChatRequest | embeddings_pb2.CreateEmbeddingsRequest | ResponseRequest,
) -> dict[str, Any]:
    """The JSON body the bridge sends upstream for `request`: `to_json`, with `stream` set by
    the RPC (true for StreamChatCompletionRequest and StreamResponseRequest, absent
    otherwise) whatever extra_fields says, so a stray key cannot turn a unary call into a
    stream or the reverse, and with the `type` each set oneof member implies where the
    message leaves it out (a content part with only `image_url` is sent as
    `{"type": "image_url", ...}`, as the API requires)."""
    body = _request_json(request)
    if isinstance(
        request, chat_pb2.StreamChatCompletionRequest | responses_pb2.StreamResponseRequest
    ):
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def _response_request(message_type: type[M], data: Any, stream: bool) -> M:
    if type(data) is dict and data.get("stream") not in (stream, None):
        other = (
            "stream_response_request_from_json" if data["stream"] else "response_request_from_json"
        )
        raise TranslationError(f'"stream": {json.dumps(data["stream"])} needs {other}')
    if type(data) is dict and "stream" in data:
        data = {k: v for k, v in data.items() if k != "stream"}
    return from_json(message_type, data)


def response_request_from_json(data: Any) -> responses_pb2.CreateResponseRequest:
    """An OpenAI `POST /responses` body as the request of CreateResponse; `"stream": false`
    is dropped, `"stream": true` is a TranslationError (use the stream variant)."""
    return _response_request(responses_pb2.CreateResponseRequest, data, stream=False)


def stream_response_request_from_json(data: Any) -> responses_pb2.StreamResponseRequest:
    """An OpenAI `POST /responses` body as the request of StreamResponse; `"stream": true`
    is dropped, `"stream": false` is a TranslationError."""
    return _response_request(responses_pb2.StreamResponseRequest, data, stream=True)


def response_from_json(data: Any) -> responses_pb2.CreateResponseResponse:
    """A `response` object (the unary Responses API answer)."""
    return from_json(responses_pb2.CreateResponseResponse, data)


def response_event_from_json(data: Any) -> responses_pb2.StreamResponseResponse:
    """One Responses API stream event (the JSON of one server-sent event), by its `type`."""
    return from_json(responses_pb2.StreamResponseResponse, data)


def chat_completion_from_json(data: Any) -> chat_pb2.CreateChatCompletionResponse:
    """A `chat.completion` object (the unary chat response)."""
    return from_json(chat_pb2.CreateChatCompletionResponse, data)


def chat_chunk_from_json(data: Any) -> chat_pb2.StreamChatCompletionResponse:
    """One `chat.completion.chunk` (the JSON of one server-sent event of a chat stream)."""
    return from_json(chat_pb2.StreamChatCompletionResponse, data)


def embeddings_from_json(data: Any) -> embeddings_pb2.CreateEmbeddingsResponse:
    """The `POST /embeddings` response (`{"object": "list", "data": [...]}`)."""
    return from_json(embeddings_pb2.CreateEmbeddingsResponse, data)


def model_list_from_json(data: Any) -> models_pb2.ListModelsResponse:
    """The `GET /models` response."""
    return from_json(models_pb2.ListModelsResponse, data)


def model_from_json(data: Any) -> models_pb2.Model:
    """One model object (`GET /models/{model}`, or an item of the list)."""
    return from_json(models_pb2.Model, data)
