"""Free-form JSON: `google.protobuf.Struct`, `Value` and `ListValue` to and from Python data.

The readers fill them at a nesting level (protobuf's decoders stop at MAX_NESTING message
levels); the writers give plain JSON data, optionally with every object's keys sorted (the
request bodies, see "Key order" in `aigateway_json.translate`).
"""

from __future__ import annotations

import threading
from typing import Any

from google.protobuf import struct_pb2

from aigateway_json.errors import MAX_NESTING, TranslationError, too_deep

_MAX_SAFE_INTEGER = 2**53


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


def list_to_python(values: struct_pb2.ListValue) -> list[Any]:
    """A `google.protobuf.ListValue` as a JSON array, with integral numbers as ints."""
    return [value_to_python(v) for v in values.values]


def sorted_value(value: struct_pb2.Value) -> Any:
    """`value_to_python`, with the keys of every object in it sorted (requests: see the
    module docstring, "Key order")."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return sorted_struct(value.struct_value)
    if kind == "list_value":
        return sorted_list(value.list_value)
    return value_to_python(value)


def sorted_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """`struct_to_python`, with the keys of every object sorted."""
    # Keys are unique, so sorting the pairs never compares two Values.
    return {key: sorted_value(v) for key, v in sorted(struct.fields.items())}


def sorted_list(values: struct_pb2.ListValue) -> list[Any]:
    """`list_to_python`, with the keys of every object sorted."""
    return [sorted_value(v) for v in values.values]


def set_value(target: struct_pb2.Value, data: Any, level: int) -> None:
    """Fill the Value at nesting `level` (see `too_deep`)."""
    if level > MAX_NESTING:
        raise too_deep()
    if data is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif data is True or data is False:
        target.bool_value = data
    elif isinstance(data, int | float):
        target.number_value = data
    elif isinstance(data, str):
        target.string_value = data
    elif isinstance(data, dict):
        fill_struct(target.struct_value, data, level + 1)
    elif isinstance(data, list):
        fill_list(target.list_value, data, level + 1)
    else:
        raise TranslationError(f"{type(data).__name__} is not a JSON value")


def fill_struct(target: struct_pb2.Struct, data: dict[str, Any], level: int) -> None:
    """Fill the Struct at nesting `level`: its map entries are one level down, their Values
    two, so a level of JSON object costs three levels of protobuf."""
    if level > MAX_NESTING:
        raise too_deep()
    target.SetInParent()
    fields = target.fields
    for key, item in data.items():
        set_value(fields[key], item, level + 2)


def fill_list(target: struct_pb2.ListValue, data: list[Any], level: int) -> None:
    """Fill the ListValue at nesting `level`, its Values one level down."""
    if level > MAX_NESTING:
        raise too_deep()
    target.SetInParent()
    for item in data:
        set_value(target.values.add(), item, level + 1)


class _Nesting(threading.local):
    """The nesting level of the message `aigateway_json.plans.fill` is filling, for the
    free-form fillers below it. One per thread: translation is synchronous, but Python users
    may call it from threads.
    """

    level = 0


nesting = _Nesting()
