"""Readers: per-field functions that store a JSON value into a message (`from_json`'s work).

A reader returns False when its field cannot hold the value (wrong JSON type, out of range,
non-canonical base64, ...); `fill` then keeps the value in `extra_fields`. Readers of message
fields call the `fill` they are built with, the recursive core of `aigateway_json.plans`,
so this module does not import it.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

from aigateway_json.descriptors import (
    LIST_VALUE,
    STRUCT,
    VALUE,
    is_list_wrapper,
    is_repeated,
    message_type_of,
)
from aigateway_json.freeform import fill_list, fill_struct, nesting, set_value

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_NUMBER_TYPES = frozenset({float, int})
"""Element types a repeated double/float field takes (bool is its own type, so it is out)."""
_MAX_PACKED = 65_536
"""Longer arrays are read element by element: `struct.pack` takes them as one argument tuple
(for a million numbers, slower than `extend` and three times the memory at its peak)."""


Reader = Callable[[Message, Any], bool]
"""Stores a JSON value into a message; False when the field cannot hold it."""
Fill = Callable[[Message, dict[str, Any], int], None]
"""`aigateway_json.plans.fill`: fills a message from a JSON object at a nesting level."""


def first_member_wins(reader: Reader, oneof: str, name: str) -> Reader:
    """Members of a plain oneof are separate JSON keys (`text`, `image_url`, ...). When JSON
    has two of them, the second goes to extra_fields instead of silently replacing the first.
    """

    def read(msg: Message, value: Any) -> bool:
        current = msg.WhichOneof(oneof)
        return (current is None or current == name) and reader(msg, value)

    return read


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


def field_reader(field: FieldDescriptor, fill: Fill) -> Reader:
    """The reader of one field that is its own JSON key: a scalar (type and range checked:
    int32/uint32/int64/uint64 bounds, canonical base64 for bytes), a message (read with
    `fill`), Struct/Value/ListValue, a repeated field (a non-empty JSON array) or a map (a
    non-empty JSON object). Raises TranslationError only through `fill`."""
    name = field.name
    message_type = field.message_type
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _map_reader(field, fill)
    if is_repeated(field):
        if message_type is None:
            return _repeated_scalar_reader(field)
        return _repeated_message_reader(field, fill)
    if message_type is not None:
        return _message_reader(name, message_type, fill)
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


def _message_reader(name: str, message_type: Descriptor, fill: Fill) -> Reader:
    full_name = message_type.full_name
    if full_name == STRUCT:

        def read_struct(msg: Message, value: Any) -> bool:
            if type(value) is not dict:
                return False
            fill_struct(getattr(msg, name), value, nesting.level + 1)
            return True

        return read_struct
    if full_name == VALUE:

        def read_value(msg: Message, value: Any) -> bool:
            set_value(getattr(msg, name), value, nesting.level + 1)
            return True

        return read_value
    if full_name == LIST_VALUE:

        def read_list_value(msg: Message, value: Any) -> bool:
            if type(value) is not list:
                return False
            fill_list(getattr(msg, name), value, nesting.level + 1)
            return True

        return read_list_value

    def read_message(msg: Message, value: Any) -> bool:
        if type(value) is not dict:
            return False
        sub = getattr(msg, name)
        sub.SetInParent()
        fill(sub, value, nesting.level + 1)
        return True

    return read_message


def _repeated_scalar_reader(field: FieldDescriptor) -> Reader:
    name = field.name
    check = _scalar_check(field)
    convert = _scalar_converter(field)
    if convert is float:
        # Checking the set of element types and converting only when an int is there is
        # exact and 4x cheaper than a check and a float() per element. A double field's
        # numbers (embedding vectors: 1536 each, hundreds per answer) then go in as packed
        # bytes instead of through upb's extend: 50 -> 38 µs per vector of 1536 (issue 16).
        header = (
            _varint(field.number << 3 | 2) if field.type == FieldDescriptor.TYPE_DOUBLE else None
        )

        def read_numbers(msg: Message, value: Any) -> bool:
            if type(value) is not list or not value:
                return False
            kinds = set(map(type, value))
            if not kinds <= _NUMBER_TYPES:
                return False
            if header is not None and (packed := _packed_doubles(value)) is not None:
                msg.MergeFromString(b"".join((header, _varint(len(packed)), packed)))
                return True
            getattr(msg, name).extend(value if int not in kinds else [float(v) for v in value])
            return True

        return read_numbers

    def read(msg: Message, value: Any) -> bool:
        if type(value) is not list or not value or not all(check(v) for v in value):
            return False
        getattr(msg, name).extend(value if convert is None else [convert(v) for v in value])
        return True

    return read


def _packed_doubles(values: list[Any]) -> bytes | None:
    """`values` (ints and floats, as `read_numbers` checked them) as protobuf's packed
    doubles (IEEE 754, little endian:
    https://protobuf.dev/programming-guides/encoding/#packed), the field's tag and length
    left to the caller; None for more than `_MAX_PACKED` numbers or an int beyond a double,
    which upb's `extend` then takes (or refuses) as before.

    `struct` converts each number as `float()` does, in C, about twice as fast as `extend`,
    so the message is the same byte for byte.
    """
    if len(values) > _MAX_PACKED:
        return None
    try:
        return struct.pack(f"<{len(values)}d", *values)
    except (OverflowError, struct.error):
        return None


def _varint(n: int) -> bytes:
    """A non-negative int as a protobuf base-128 varint (the encoding guide's "Base 128
    Varints")."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _repeated_message_reader(field: FieldDescriptor, fill: Fill) -> Reader:
    name = field.name
    message_type = message_type_of(field)
    full_name = message_type.full_name
    if full_name in (STRUCT, LIST_VALUE, VALUE):
        filler: Callable[[Any, Any, int], None] = {  # type: ignore[assignment]
            STRUCT: fill_struct,
            LIST_VALUE: fill_list,
            VALUE: set_value,
        }[full_name]
        expected: type | None = {STRUCT: dict, LIST_VALUE: list, VALUE: None}[full_name]

        def read_wkt(msg: Message, value: Any) -> bool:
            if type(value) is not list or not value:
                return False
            if expected is not None and not all(type(v) is expected for v in value):
                return False
            target = getattr(msg, name)
            level = nesting.level + 1
            for item in value:
                filler(target.add(), item, level)
            return True

        return read_wkt

    if is_list_wrapper(message_type):
        values_reader = field_reader(message_type.fields[0], fill)

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
        level = nesting.level + 1
        for item in value:
            fill(target.add(), item, level)
        return True

    return read


def _map_reader(field: FieldDescriptor, fill: Fill) -> Reader:
    name = field.name
    value_field = message_type_of(field).fields_by_name["value"]
    if value_field.message_type is None:
        check = _scalar_check(value_field)

        def read_scalar_map(msg: Message, value: Any) -> bool:
            if type(value) is not dict or not value or not all(check(v) for v in value.values()):
                return False
            getattr(msg, name).update(value)
            return True

        return read_scalar_map
    expected = {STRUCT: dict, LIST_VALUE: list, VALUE: object}.get(
        value_field.message_type.full_name, dict
    )

    def read_message_map(msg: Message, value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        if expected is not object and not all(type(v) is expected for v in value.values()):
            return False
        target = getattr(msg, name)
        level = nesting.level + 2  # below the map entry
        for key, item in value.items():
            _fill_any(target[key], item, level, fill)
        return True

    return read_message_map


def _fill_any(target: Message, value: Any, level: int, fill: Fill) -> None:
    full_name = target.DESCRIPTOR.full_name
    if full_name == STRUCT:
        fill_struct(target, value, level)  # type: ignore[arg-type]
    elif full_name == LIST_VALUE:
        fill_list(target, value, level)  # type: ignore[arg-type]
    elif full_name == VALUE:
        set_value(target, value, level)  # type: ignore[arg-type]
    else:
        target.SetInParent()
        fill(target, value, level)


def union_reader(oneof: OneofDescriptor, fill: Fill) -> Reader:
    """The reader of a JSON union (a oneof whose members are all `<oneof>_<variant>`, read
    under the key `<oneof>`): the JSON value's form picks the member (a string, a boolean, a
    number, an array, an object; among several object members, the one its `type` names).
    See the docstring of `aigateway_json.translate`."""
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
        elif is_list_wrapper(message_type):
            by_json_type[list].append(field)
        else:
            by_json_type[dict].append(field)
            by_variant[field.name[prefix_len:]] = field
    # Strings before bytes, so that a string member wins over a base64 one.
    by_json_type[str].sort(key=lambda f: f.type != FieldDescriptor.TYPE_STRING)
    readers = {f.name: _member_reader(f, fill) for f in oneof.fields}
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


def _member_reader(field: FieldDescriptor, fill: Fill) -> Reader:
    if field.message_type is not None and is_list_wrapper(field.message_type):
        values_reader = field_reader(field.message_type.fields[0], fill)
        name = field.name

        def read_list(msg: Message, value: Any) -> bool:
            wrapper = getattr(msg, name)
            wrapper.SetInParent()
            # An empty array still selects the member; it writes back as [].
            return not value or values_reader(wrapper, value)

        return read_list
    return field_reader(field, fill)
