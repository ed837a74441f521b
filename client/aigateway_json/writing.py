"""Writers: per-field functions that turn a field's Python value into its JSON value
(`to_json`'s work). A request writer (`request=True`) sorts the keys of every Struct, map and
`extra_fields` (see "Key order" in `aigateway_json.translate`). Writers of message fields call
the `nested` writer they are built with (`to_json` or the request form, from
`aigateway_json.plans`), so this module does not import it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from aigateway_json.descriptors import LIST_VALUE, STRUCT, VALUE, is_list_wrapper, is_repeated
from aigateway_json.freeform import (
    list_to_python,
    sorted_list,
    sorted_struct,
    sorted_value,
    struct_to_python,
    value_to_python,
)
from aigateway_json.json_text import parse_json_text

Writer = Callable[[Any], Any]
"""Turns a field's Python value into its JSON value."""
Nested = Callable[[Message], dict[str, Any]]
"""Writes a nested message as a JSON object: `to_json`, or `request_json` in a request."""


def field_writer(field: FieldDescriptor, request: bool, nested: Nested) -> Writer:
    """The writer of one field: bytes as standard base64 (RFC 4648, section 4), a message with
    `nested`, Struct/Value/ListValue as plain JSON data, a map as an object (its keys sorted
    when `request`), a repeated field as an array; other scalars as they are."""
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        value_type = message_type.fields_by_name["value"].message_type
        if value_type is None:
            return _sorted_map if request else dict
        element = _message_writer(value_type, request, nested)
        if request:
            return lambda m: {k: element(v) for k, v in sorted(m.items())}
        return lambda m: {k: element(v) for k, v in m.items()}
    if is_repeated(field):
        if message_type is None:
            if field.type == FieldDescriptor.TYPE_BYTES:
                return lambda values: [base64.b64encode(v).decode() for v in values]
            return list
        element = (
            wrapper_writer(message_type, request, nested)
            if is_list_wrapper(message_type)
            else _message_writer(message_type, request, nested)
        )
        return lambda values: [element(v) for v in values]
    if message_type is not None:
        return _message_writer(message_type, request, nested)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda v: base64.b64encode(v).decode()
    return _identity


def _identity(value: Any) -> Any:
    return value


def _sorted_map(value: Any) -> dict[Any, Any]:
    return dict(sorted(value.items()))


def text_writer(text: str) -> dict[str, Any]:
    """A `<key>_json` field written as its object; TranslationError as `parse_json_text`."""
    return parse_json_text(text)


def _message_writer(descriptor: Descriptor, request: bool, nested: Nested) -> Writer:
    full_name = descriptor.full_name
    if full_name == STRUCT:
        return sorted_struct if request else struct_to_python
    if full_name == VALUE:
        return sorted_value if request else value_to_python
    if full_name == LIST_VALUE:
        return sorted_list if request else list_to_python
    return nested


def wrapper_writer(descriptor: Descriptor, request: bool, nested: Nested) -> Writer:
    """The writer of a list wrapper (a message whose one field is a repeated `values`): the
    JSON array of its values."""
    values = field_writer(descriptor.fields[0], request, nested)
    return lambda wrapper: values(wrapper.values)


def with_type(writer: Writer, variant: str) -> Writer:
    """`writer`, with `"type": variant` first in the object it writes unless it has a `type`
    (an implied type, see `aigateway_json.descriptors`)."""

    def write(msg: Message) -> Any:
        out = writer(msg)
        return out if "type" in out else {"type": variant, **out}

    return write
