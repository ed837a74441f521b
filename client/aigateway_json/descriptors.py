"""What the message descriptors say about a message's JSON shape (the rules: the docstring of
`aigateway_json.translate`): JSON keys, unions, list wrappers, tagged messages, the `type` a
oneof member implies and the `<key>_json` text fields. Pure functions of the descriptors,
cached per message type where they are asked per call.

Implied types: two shapes in the protos name a JSON `type` by the oneof member that is set,
and the OpenAI API requires that `type` in a request. Both are found from the descriptors, so
a message added in either shape is covered without code here:

* a message with a `type` and one oneof: `type` is the JSON key of the member that is set
  (ContentPart `image_url` -> "image_url", Tool `function` -> "function", ToolChoice
  `allowed_tools`, ToolCall `custom`, Prediction's `content` union -> "content");
* a member of a union whose message has a `type` and no oneof of its own: `type` is the
  member's variant (`response_format_json_object` -> "json_object").
"""

from __future__ import annotations

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor

EXTRA_FIELDS = "extra_fields"
"""Name of the field that carries unmodelled JSON keys in every object message."""

JSON_KEYS = {"provider_options": "providerOptions", "provider_metadata": "providerMetadata"}
"""Fields whose JSON key is not their name (proto field names are lower_snake_case)."""

OTHER = "other"
"""The member of a tagged message that holds objects of types the protos do not model."""

# Full names of the well-known types that stand for free-form JSON.
STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
VALUE = struct_pb2.Value.DESCRIPTOR.full_name
LIST_VALUE = struct_pb2.ListValue.DESCRIPTOR.full_name


def written_oneofs(descriptor: Descriptor) -> list[OneofDescriptor]:
    """The oneofs written in the proto (not those protoc makes for `optional` fields)."""
    return [o for o in descriptor.oneofs if not is_synthetic(o)]


def has_type(descriptor: Descriptor) -> bool:
    """Whether the message has a `string type` field."""
    field = descriptor.fields_by_name.get("type")
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def type_oneof(descriptor: Descriptor) -> OneofDescriptor | None:
    """The oneof whose set member names `descriptor`'s JSON `type`, if it has one: a request
    body carries the member's JSON key as `type` when the message does not set it."""
    name = descriptor.full_name
    if name not in _type_oneofs:
        oneofs = written_oneofs(descriptor)
        _type_oneofs[name] = oneofs[0] if has_type(descriptor) and len(oneofs) == 1 else None
    return _type_oneofs[name]


_type_oneofs: dict[str, OneofDescriptor | None] = {}


def implied_by_member(descriptor: Descriptor) -> tuple[str, dict[str, str]] | None:
    """(oneof name, member name -> the `type` it implies) for a message whose `type` its
    set oneof member names (see the module docstring), else None."""
    oneof = type_oneof(descriptor)
    if oneof is None:
        return None
    union = is_union(oneof)
    keys = {f.name: oneof.name if union else JSON_KEYS.get(f.name, f.name) for f in oneof.fields}
    return oneof.name, keys


def implied_by_variant(oneof: OneofDescriptor, field: FieldDescriptor) -> str | None:
    """The `type` the union member `field` of `oneof` implies (its variant, the name after
    `<oneof>_`) when its message has a `type` and no oneof of its own, else None."""
    message_type = field.message_type
    if message_type is None or not has_type(message_type) or written_oneofs(message_type):
        return None
    return field.name[len(oneof.name) + 1 :]


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
                and not is_repeated(field)
                and anchor is not None
                and anchor.message_type is not None
                and anchor.message_type.full_name == STRUCT
                and not is_repeated(anchor)
            ):
                texts[field.name] = anchor.name
        _json_texts[name] = texts
    return texts


_TEXT_SUFFIX = "_json"
_json_texts: dict[str, dict[str, str]] = {}


def is_union(oneof: OneofDescriptor) -> bool:
    """Whether `oneof` is a JSON union: every member is named `<oneof>_<variant>`."""
    prefix = oneof.name + "_"
    return all(f.name.startswith(prefix) for f in oneof.fields)


def is_list_wrapper(descriptor: Descriptor) -> bool:
    """Whether the message stands for a JSON array: its one field is a repeated `values`."""
    fields = descriptor.fields
    return len(fields) == 1 and fields[0].name == "values" and is_repeated(fields[0])


def message_type_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field (the stubs type it as optional); AssertionError
    for a scalar field."""
    message_type = field.message_type
    assert message_type is not None, field.full_name
    return message_type


def is_repeated(field: FieldDescriptor) -> bool:
    """Whether the field is repeated (a map is too)."""
    return bool(field.is_repeated)


def is_synthetic(oneof: OneofDescriptor) -> bool:
    """The oneof protoc makes for a proto3 `optional` field, not one written in the proto."""
    fields = oneof.fields
    return len(fields) == 1 and oneof.name == "_" + fields[0].name


def tagged_oneof(descriptor: Descriptor) -> OneofDescriptor | None:
    """The oneof of a tagged message, or None when the message is not one: every field is a
    message member of one oneof, among them `other` (the Responses API's items, parts, tools
    and events, tagged by their `type`: https://platform.openai.com/docs/api-reference/responses)."""
    oneofs = [o for o in descriptor.oneofs if not is_synthetic(o)]
    if len(oneofs) != 1 or len(oneofs[0].fields) != len(descriptor.fields):
        return None
    members = oneofs[0].fields
    if not all(f.message_type is not None for f in members):
        return None
    return oneofs[0] if any(f.name == OTHER for f in members) else None
