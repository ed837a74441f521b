"""The fast path of `from_json`: the JSON object checked against a per-type shape in one walk,
then handed to the message's constructor (upb, in C) as keyword arguments.

A streamed chunk or event is a few strings and ints, one or two nested objects, and some
nulls; the generic walk (`aigateway_json.plans.fill`) calls a reader per key and a setter per
field, about five times the cost of the constructor. This walk only checks: a value of the
field's exact JSON type is passed as it is (the constructor receives the caller's own dicts
and lists where nothing changes), a null, an unknown key or a wrongly typed value goes to
`extra_fields` as `fill` would put it there (a prebuilt Struct for the usual extras: nulls,
empty arrays and objects, short scalars), a plain oneof's first member wins, a tagged
message's `type` picks its member; anything else (free-form Struct/Value fields, maps,
unions, bytes, repeated numbers, deep nesting, a message without `extra_fields` for what it
cannot hold) raises `Slow`, and so does any failure of the constructor (a lone surrogate, an
integer beyond its field's range): `from_json` then runs the generic walk, which is the
reference. Every input gives the same message either way, the same deterministic wire bytes
(tests/test_translate_fast.py checks it); only the iteration order of an extra_fields map,
which upb keeps in hash order and which differs between processes anyway, may differ (a
Struct is copied into the message). The upb constructor is lenient where the readers are
strict (None is "unset", a bool is taken for an int, bytes for a string), so nothing reaches
it that a reader would refuse.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from aigateway_json.descriptors import (
    EXTRA_FIELDS,
    LIST_VALUE,
    OTHER,
    STRUCT,
    VALUE,
    is_list_wrapper,
    is_synthetic,
    is_union,
    tagged_oneof,
)
from aigateway_json.errors import MAX_NESTING
from aigateway_json.freeform import fill_struct
from aigateway_json.plans import Tagged, plan_for


class Slow(Exception):
    """The JSON needs the generic walk (raised, never escapes `from_json`)."""


_LEVELS = MAX_NESTING - 8
"""The deepest message level handled here; deeper, `fill`'s limit checks decide."""


class _Message:
    __slots__ = ("shape",)

    def __init__(self, shape: Shape) -> None:
        self.shape = shape


class _Repeated:
    """A repeated field of messages (`shape`) or of strings (`shape` None)."""

    __slots__ = ("shape",)

    def __init__(self, shape: Shape | None) -> None:
        self.shape = shape


class _Member:
    """A member of a plain oneof: `spec` when no other member came before it in the JSON
    object, else an extra (the first member wins)."""

    __slots__ = ("oneof", "spec")

    def __init__(self, spec: object, oneof: str) -> None:
        self.spec = spec
        self.oneof = oneof


_GENERIC = object()
"""A field only the generic walk reads (any value but null)."""

_INTS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
"""Integer fields whose range the constructor checks exactly as the readers do: it raises
ValueError beyond it, and the generic walk then keeps the number in extra_fields."""


class Shape:
    """What the fast walk accepts for one message type: JSON key -> spec (`str`, `bool`,
    `int` or `float` for a field that takes exactly that type, `_Message`, `_Repeated` or
    `_GENERIC`); a key not there is unknown (extra_fields)."""

    __slots__ = ("by_tag", "has_extra", "members", "specs", "tagged")

    def __init__(self) -> None:
        self.specs: dict[str, object] = {}
        self.has_extra = False
        self.tagged: Tagged | None = None
        self.members: dict[str, Shape] = {}
        self.by_tag: dict[str, str] = {}
        """A tagged message's member by the `type` strings seen (those Tagged.member maps
        to a modelled member; up to _MAX_STRUCTS)."""


_shapes: dict[str, Shape] = {}
_by_class: dict[type, Shape] = {}


def shape_of(message_type: type) -> Shape:
    """The shape of a message class (compiled on first use)."""
    shape = _by_class.get(message_type)
    if shape is None:
        shape = _by_class[message_type] = _shape(message_type.DESCRIPTOR)  # type: ignore[attr-defined]
    return shape


def _shape(descriptor: Descriptor) -> Shape:
    shape = _shapes.get(descriptor.full_name)
    if shape is None:
        shape = Shape()
        # Registered before it is filled, so recursive message types terminate.
        _shapes[descriptor.full_name] = shape
        _compile(descriptor, shape)
    return shape


def _compile(descriptor: Descriptor, shape: Shape) -> None:
    plan = plan_for(descriptor)
    shape.has_extra = plan.has_extra
    tagged = tagged_oneof(descriptor)
    if tagged is not None:
        shape.tagged = plan.tagged
        shape.members = {f.name: _shape(f.message_type) for f in tagged.fields}  # type: ignore[arg-type]
        return
    # Every key the generic walk reads; those read by a field's own reader under the
    # field's name (a member of a plain oneof included) get a spec of their own, the rest
    # (unions, keys that differ from the field's name) stay generic.
    shape.specs = dict.fromkeys(plan.readers, _GENERIC)
    oneofs = {
        f.name: o.name
        for o in descriptor.oneofs
        if not is_synthetic(o) and not is_union(o)
        for f in o.fields
    }
    for field in descriptor.fields:
        name = field.name
        if name in shape.specs and name != EXTRA_FIELDS:
            spec = _spec(field)
            shape.specs[name] = _Member(spec, oneofs[name]) if name in oneofs else spec


def _spec(field: FieldDescriptor) -> object:
    message_type = field.message_type
    if message_type is not None:
        if (
            message_type.GetOptions().map_entry
            or message_type.full_name in (STRUCT, VALUE, LIST_VALUE)
            # A list wrapper (one repeated `values`) stands for a JSON array, not an object:
            # its readers take arrays only (`reading.read_lists`).
            or is_list_wrapper(message_type)
        ):
            return _GENERIC
        shape = _shape(message_type)
        return _Repeated(shape) if field.is_repeated else _Message(shape)
    t = field.type
    if field.is_repeated:
        return _Repeated(None) if t == FieldDescriptor.TYPE_STRING else _GENERIC
    if t == FieldDescriptor.TYPE_STRING:
        return str
    if t == FieldDescriptor.TYPE_BOOL:
        return bool
    if t == FieldDescriptor.TYPE_DOUBLE:
        return float
    return int if t in _INTS else _GENERIC


def kwargs(shape: Shape, data: dict[str, Any], level: int) -> dict[str, Any]:
    """The constructor's keyword arguments for `data` (`data` itself when it needs no
    change), for a message nested `level` below the top one; Slow when only the generic
    walk can tell."""
    if level > _LEVELS:
        raise Slow
    if shape.tagged is not None:
        tag = data.get("type")
        member = shape.by_tag.get(tag) if type(tag) is str else None
        if member is None:
            member = shape.tagged.member(data)
            if type(tag) is str and member != OTHER and len(shape.by_tag) < _MAX_STRUCTS:
                shape.by_tag[tag] = member
        return {member: kwargs(shape.members[member], data, level + 1)}
    specs = shape.specs
    out: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    taken: set[str] | None = None  # plain oneofs with a member set
    # Whether every extra is a null or an empty array or object (the usual case: then the
    # Struct is prebuilt, by its keys and the types of their values).
    simple = True
    nulls = True
    for key, value in data.items():
        spec = specs.get(key)
        kind = type(value)
        if spec is kind:
            # A string, bool, float or integer, as its field takes it (an integer beyond
            # the field's range makes the constructor raise ValueError).
            continue
        if value is not None and spec is not None:
            spec_kind = type(spec)
            if spec_kind is _Message:
                if kind is dict:
                    sub = kwargs(spec.shape, value, level + 1)  # type: ignore[attr-defined]
                    if sub is not value:
                        if out is None:
                            out = dict(data)
                        out[key] = sub
                    continue
            elif spec_kind is _Repeated:
                if kind is list and value:
                    element = spec.shape  # type: ignore[attr-defined]
                    if element is None:
                        if all(type(v) is str for v in value):
                            continue
                    else:
                        # Raising Slow midway is harmless: nothing is built until the end.
                        items = _items(element, value, level + 1)
                        if items is not None:
                            if items is not value:
                                if out is None:
                                    out = dict(data)
                                out[key] = items
                            continue
            elif spec is float:
                if kind is int:
                    if out is None:
                        out = dict(data)
                    out[key] = float(value)
                    continue
            elif spec_kind is _Member:
                accepted = _member_value(spec.spec, value, level)  # type: ignore[attr-defined]
                if accepted is not _REFUSED:
                    oneof = spec.oneof  # type: ignore[attr-defined]
                    if taken is None:
                        taken = set()
                    if oneof not in taken:
                        taken.add(oneof)
                        if accepted is not value:
                            if out is None:
                                out = dict(data)
                            out[key] = accepted
                        continue
            elif spec is _GENERIC:
                raise Slow
        # Unknown, null, or a value its field cannot hold: extra_fields.
        if extra is None:
            if not shape.has_extra:
                raise Slow
            extra = {}
            if out is None:
                out = dict(data)
        extra[key] = value
        del out[key]  # type: ignore[union-attr]
        if value is not None:
            nulls = False
            if value or (kind is not list and kind is not dict):
                simple = False
    if extra is not None:
        if nulls:
            names: tuple[Any, ...] = tuple(extra)
            struct = _null_structs.get(names)
            if struct is None:
                struct = _simple_struct(_null_structs, names, names, extra, level)
        elif simple:
            names = (tuple(extra), tuple(map(type, extra.values())))
            struct = _simple_structs.get(names)
            if struct is None:
                struct = _simple_struct(_simple_structs, names, names[0], extra, level)
        else:
            struct = _extra_struct(extra, level)
        out[EXTRA_FIELDS] = struct  # type: ignore[index]
    return data if out is None else out


def _items(shape: Shape, values: list[Any], level: int) -> list[Any] | None:
    """The kwargs of each object of a repeated message field (`values` itself when none
    changes); None when one is not an object (then the whole array is an extra)."""
    items: list[Any] | None = None
    for i, value in enumerate(values):
        if type(value) is not dict:
            return None
        sub = kwargs(shape, value, level)
        if items is None:
            if sub is value:
                continue
            items = values[:i]
        items.append(sub)
    return values if items is None else items


_REFUSED = object()


def _member_value(spec: object, value: Any, level: int) -> Any:
    """What the constructor gets for a plain oneof member's (non-null) value, or _REFUSED
    when its reader would refuse it (an extra)."""
    kind = type(value)
    if spec is kind:
        return value
    if type(spec) is _Message:
        if kind is dict:
            return kwargs(spec.shape, value, level + 1)
    elif spec is float:
        if kind is int:
            return float(value)
    elif spec is _GENERIC or type(spec) is _Repeated:
        raise Slow
    return _REFUSED


_CACHEABLE = frozenset({type(None), bool, int})
_EMPTY = ()
_structs: dict[tuple[Any, ...], struct_pb2.Struct] = {}
_MAX_STRUCTS = 512
_MAX_STR = 64
_MAX_NAMES = 256
"""Bounds of what the caches keep: at most _MAX_STRUCTS Structs, each of keys and string
values of at most _MAX_STR characters (_MAX_NAMES for all the keys of a Struct of nulls)."""


_null_structs: dict[tuple[Any, ...], struct_pb2.Struct] = {}
"""extra_fields of nulls, by their keys."""
_simple_structs: dict[tuple[Any, ...], struct_pb2.Struct] = {}
"""extra_fields of nulls and empty arrays and objects, by their keys and the types of their
values."""


def _simple_struct(
    cache: dict[tuple[Any, ...], struct_pb2.Struct],
    cache_key: tuple[Any, ...],
    names: tuple[str, ...],
    extra: dict[str, Any],
    level: int,
) -> struct_pb2.Struct:
    """A Struct for _null_structs or _simple_structs, kept there when its keys are short."""
    struct = struct_pb2.Struct()
    fill_struct(struct, extra, level + 1)
    if sum(map(len, names)) <= _MAX_NAMES:
        if len(cache) >= _MAX_STRUCTS:
            cache.clear()
        cache[cache_key] = struct
    return struct


def _extra_struct(extra: dict[str, Any], level: int) -> struct_pb2.Struct:
    """extra_fields for a message at `level`, as `fill` fills it: prebuilt for keys with
    null, boolean, integer, short string or empty array/object values (each keyed by its
    type too: True, 1 and 1.0 are equal keys to Python; floats are never cached, since 0.0
    and -0.0 are too), filled anew otherwise."""
    key: list[Any] = []
    if len(extra) > _MAX_NAMES // _MAX_STR:
        struct = struct_pb2.Struct()
        fill_struct(struct, extra, level + 1)
        return struct
    for name, value in extra.items():
        kind = type(value)
        if len(name) > _MAX_STR:
            break
        if kind in _CACHEABLE or (kind is str and len(value) <= _MAX_STR):
            key.append((name, kind, value))
        elif (kind is list or kind is dict) and not value:
            key.append((name, kind, _EMPTY))
        else:
            break
    else:
        cache_key = tuple(key)
        cached = _structs.get(cache_key)
        if cached is None:
            cached = struct_pb2.Struct()
            fill_struct(cached, extra, level + 1)
            if len(_structs) >= _MAX_STRUCTS:
                _structs.clear()
            _structs[cache_key] = cached
        return cached
    struct = struct_pb2.Struct()
    fill_struct(struct, extra, level + 1)
    return struct
