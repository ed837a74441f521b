"""The recursive core: one plan per message type, compiled from its descriptor into readers
and writers, and the two walks that run the plans, `fill` (JSON -> message) and `to_json` /
`request_json` (message -> JSON).

Plans are compiled once per message type; the per-call work is a dict lookup and a call per
key, which keeps streaming chunk translation cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

from aigateway_json.descriptors import (
    EXTRA_FIELDS,
    JSON_KEYS,
    OTHER,
    implied_by_member,
    implied_by_variant,
    is_list_wrapper,
    is_synthetic,
    is_union,
    json_text_fields,
    tagged_oneof,
)
from aigateway_json.errors import MAX_NESTING, TranslationError, too_deep
from aigateway_json.freeform import fill_struct, nesting, sorted_value, value_to_python
from aigateway_json.reading import Reader, field_reader, first_member_wins, union_reader
from aigateway_json.writing import Writer, field_writer, text_writer, with_type, wrapper_writer


class Plan:
    """How one message type reads and writes JSON.

    A request plan (`request_plan_for`) writes only, and writes the `type` that a oneof member
    implies when the message does not say it (`implied`, and `with_type` on union members).
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
        self.tagged: Tagged | None = None
        self.request = False


class Tagged:
    """How a tagged message (see the module docstring) picks its member."""

    __slots__ = ("by_type", "first", "other")

    def __init__(self, oneof: OneofDescriptor) -> None:
        fields = list(oneof.fields)
        self.by_type = {f.name: f.name for f in fields if f.name != OTHER}
        # Only an item may leave its `type` out: OpenAI's short form of a message item
        # (`{"role": ..., "content": ...}`). Any other object without one (a stream event, a
        # tool, a content part) is kept whole in `other` rather than given a type it lacks.
        self.first = fields[0].name if fields[0].name == "message" else OTHER
        self.other = OTHER

    def member(self, data: dict[str, Any]) -> str:
        """The member's name for the JSON object `data`: by its `type` (dots as
        underscores); without one, `message` where that is the first member (an item in
        OpenAI's short form), else `other`; `other` for an unknown type."""
        tag = data.get("type", _ABSENT)
        if tag is _ABSENT:
            return self.first
        if type(tag) is str:
            return self.by_type.get(tag.replace(".", "_"), self.other)
        return self.other


_ABSENT = object()

_plans: dict[str, Plan] = {}
_request_plans: dict[str, Plan] = {}


def plan_for(descriptor: Descriptor) -> Plan:
    """The plan that reads and writes messages of `descriptor` (compiled on first use)."""
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = Plan()
        # Registered before it is filled, so recursive message types terminate.
        _plans[descriptor.full_name] = plan
        _compile(descriptor, plan, request=False)
    return plan


def request_plan_for(descriptor: Descriptor) -> Plan:
    """The plan that writes messages of `descriptor` in a request body (implied types)."""
    plan = _request_plans.get(descriptor.full_name)
    if plan is None:
        plan = Plan()
        _request_plans[descriptor.full_name] = plan
        _compile(descriptor, plan, request=True)
    return plan


def _compile(descriptor: Descriptor, plan: Plan, *, request: bool) -> None:
    plan.request = request
    nested = request_json if request else to_json
    tagged = tagged_oneof(descriptor)
    if tagged is not None:
        plan.tagged = Tagged(tagged)
        return
    if request:
        plan.implied = implied_by_member(descriptor)
    unions = [o for o in descriptor.oneofs if is_union(o) and not is_synthetic(o)]
    in_union = {f.name for o in unions for f in o.fields}
    plain = {
        f.name: o.name
        for o in descriptor.oneofs
        if not is_union(o) and not is_synthetic(o)
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
            plan.writers[field.number] = (JSON_KEYS.get(anchor.name, anchor.name), text_writer)
            plan.texts[field.number] = anchor.number
            continue
        key = JSON_KEYS.get(field.name, field.name)
        if not request:
            reader = field_reader(field, fill)
            if field.name in plain:
                reader = first_member_wins(reader, plain[field.name], field.name)
            plan.readers[key] = reader
        plan.writers[field.number] = (key, field_writer(field, request, nested))
    for oneof in unions:
        if not request:
            plan.readers[oneof.name] = union_reader(oneof, fill)
        for field in oneof.fields:
            writer = (
                wrapper_writer(field.message_type, request, nested)
                if field.message_type is not None and is_list_wrapper(field.message_type)
                else field_writer(field, request, nested)
            )
            variant = implied_by_variant(oneof, field) if request else None
            if variant is not None:
                writer = with_type(writer, variant)
            plan.writers[field.number] = (oneof.name, writer)


def fill(msg: Message, data: dict[str, Any], level: int) -> None:
    """Fill `msg`, which is nested `level` messages below the top one, from the JSON object
    `data`: each key by its reader, the rest into `extra_fields`. TranslationError when the
    message has no `extra_fields` for a key it cannot hold, or nesting passes MAX_NESTING."""
    if level > MAX_NESTING:
        raise too_deep()
    plan = plan_for(msg.DESCRIPTOR)  # type: ignore[arg-type]
    if plan.tagged is not None:
        member = getattr(msg, plan.tagged.member(data))
        member.SetInParent()
        fill(member, data, level + 1)
        return
    readers = plan.readers
    extra: dict[str, Any] | None = None
    state = nesting
    outer = state.level
    state.level = level
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
            fill_struct(getattr(msg, EXTRA_FIELDS), extra, level + 1)
    finally:
        state.level = outer


def to_json(msg: Message) -> dict[str, Any]:
    """The message as the JSON object the OpenAI API uses; the inverse of `from_json`.

    Raises TranslationError only when a `<key>_json` field holds text `parse_json_text`
    refuses or is set together with its Struct `<key>`."""
    return _write(msg, plan_for(msg.DESCRIPTOR))  # type: ignore[arg-type]


def request_json(msg: Message) -> dict[str, Any]:
    """`to_json`, with the `type` that a oneof member implies where the message does not set
    it (see `aigateway_json.descriptors`); a `type` the caller set, as a field or in
    extra_fields, stays. Every Struct, map and extra_fields is written with sorted keys."""
    plan = request_plan_for(msg.DESCRIPTOR)  # type: ignore[arg-type]
    out = _write(msg, plan)
    implied = plan.implied
    if implied is not None and "type" not in out:
        member = msg.WhichOneof(implied[0])
        if member is not None:
            out = {"type": implied[1][member], **out}
    return out


def _write(msg: Message, plan: Plan) -> dict[str, Any]:
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
            return _write(member, plan_for(member.DESCRIPTOR))
        written = _write(member, request_plan_for(member.DESCRIPTOR))
        if "type" not in written and field.name not in (OTHER, "message"):
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
                    out[key] = sorted_value(item)
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
