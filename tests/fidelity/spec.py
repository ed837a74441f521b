"""The OpenAI OpenAPI spec as test data: schemas, examples, validators and data generators.

The fidelity tests take their cases from third_party/openai-openapi/openapi.yaml, a vendored
copy of the official spec (override with AIGATEWAY_OPENAPI_SPEC), rather than from
hand-written JSON, so that a field the spec gains is a field the tests exercise. The Vercel AI
Gateway extensions (UPSTREAM-API.md, beside the project's design notes) are
patched into a copy of the schemas (`VERCEL_*` below), so the same generators and validators
cover them.

Two things the spec leaves to prose are made explicit here:
* OpenAPI's `nullable: true` becomes `anyOf [schema, {"type": "null"}]`, so a JSON Schema
  2020-12 validator accepts the nulls the spec allows.
* Generators keep JSON numbers exact: `integer` gives ints within +-2**53 (what a JSON double
  holds exactly) and `number` gives non-integral floats, so a strict comparison (3 is not 3.0)
  can tell a lossy round trip from an exact one.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import string
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from google.protobuf.message import Message
from hypothesis import HealthCheck
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

Json = Any
Schema = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(
    os.environ.get(
        "AIGATEWAY_OPENAPI_SPEC", ROOT / "third_party" / "openai-openapi" / "openapi.yaml"
    )
)
SPEC_URI = "urn:openai-openapi"
MAX_SAFE_INTEGER = 2**53


TOLERATED = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
"""Health checks that only say generation is slow (two shared cores) or often discarded (deep
schemas); neither makes a passing property less true."""


def examples(default: int) -> int:
    """Hypothesis examples per property: `default`, or FIDELITY_EXAMPLES for a longer hunt."""
    return int(os.environ.get("FIDELITY_EXAMPLES") or default)


# ----------------------------------------------------------------------------- Vercel patches

_STRINGS: Schema = {"type": "array", "items": {"type": "string"}}
_CACHE_CONTROL: Schema = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["ephemeral"]}, "ttl": {"type": "string"}},
    "required": ["type"],
}
VERCEL_PROVIDER_OPTIONS: Schema = {
    "type": "object",
    "properties": {
        "gateway": {
            "type": "object",
            "properties": {
                "order": _STRINGS,
                "only": _STRINGS,
                "sort": {"type": "string", "enum": ["cost", "ttft", "tps"]},
                "models": _STRINGS,
                "byok": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "array",
                        "items": {"type": "object", "additionalProperties": True},
                    },
                },
                "caching": {"type": "string", "enum": ["auto"]},
                "user": {"type": "string"},
                "tags": _STRINGS,
            },
        }
    },
    "additionalProperties": {"type": "object", "additionalProperties": True},
}
VERCEL_CHAT_REQUEST: Schema = {
    "type": "object",
    "properties": {
        "providerOptions": VERCEL_PROVIDER_OPTIONS,
        "models": _STRINGS,
        "provider": {
            "type": "object",
            "properties": {"sort": {"type": "string", "enum": ["cost", "ttft", "tps"]}},
        },
        "reasoning": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "effort": {"type": "string", "enum": ["minimal", "low", "medium", "high"]},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                "exclude": {"type": "boolean"},
            },
            # The gateway takes one of effort and max_tokens, never both.
            "not": {"required": ["effort", "max_tokens"]},
        },
    },
}
VERCEL_REASONING_DETAIL: Schema = {
    "type": "object",
    "properties": {
        "type": {
            "type": "string",
            "enum": ["reasoning.text", "reasoning.summary", "reasoning.encrypted"],
        },
        "text": {"type": "string"},
        "signature": {"type": "string"},
        "data": {"type": "string"},
        "summary": {"type": "string"},
        "id": {"type": "string"},
        "format": {"type": "string"},
        "index": {"type": "integer"},
    },
    "required": ["type"],
}
VERCEL_IMAGE: Schema = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["image_url"]},
        "image_url": {
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
    },
    "required": ["type", "image_url"],
}
VERCEL_MESSAGE: Schema = {
    "reasoning": {"type": "string"},
    "reasoning_details": {"type": "array", "items": VERCEL_REASONING_DETAIL},
    "images": {"type": "array", "items": VERCEL_IMAGE},
}
VERCEL_PROVIDER_METADATA: Schema = {"type": "object", "additionalProperties": True}
_PRICE: Schema = {"type": "string", "pattern": "^[0-9]{1,3}\\.[0-9]{1,12}$"}
_TIER: Schema = {
    "type": "object",
    "properties": {"cost": _PRICE, "min": {"type": "integer"}, "max": {"type": "integer"}},
    "required": ["cost", "min"],
}
VERCEL_MODEL: Schema = {
    "name": {"type": "string"},
    "description": {"type": "string"},
    "released": {"type": "integer"},
    "context_window": {"type": "integer"},
    "max_tokens": {"type": "integer"},
    "type": {
        "type": "string",
        "enum": ["language", "embedding", "reranking", "image", "video"],
    },
    "tags": _STRINGS,
    "pricing": {
        "type": "object",
        "properties": {
            **{
                k: _PRICE
                for k in (
                    "input",
                    "output",
                    "input_cache_read",
                    "input_cache_write",
                    "image",
                    "web_search",
                )
            },
            "input_tiers": {"type": "array", "items": _TIER},
            "output_tiers": {"type": "array", "items": _TIER},
        },
    },
}
_REQUEST_MESSAGES = (
    "ChatCompletionRequestDeveloperMessage",
    "ChatCompletionRequestSystemMessage",
    "ChatCompletionRequestUserMessage",
    "ChatCompletionRequestAssistantMessage",
    "ChatCompletionRequestToolMessage",
    "ChatCompletionRequestFunctionMessage",
)
_REQUEST_PARTS = (
    "ChatCompletionRequestMessageContentPartText",
    "ChatCompletionRequestMessageContentPartImage",
    "ChatCompletionRequestMessageContentPartAudio",
    "ChatCompletionRequestMessageContentPartFile",
)


def _patch_vercel(schemas: dict[str, Schema]) -> None:
    """Add the Vercel AI Gateway extensions of UPSTREAM-API.md to the OpenAI schemas."""
    schemas["CreateChatCompletionRequest"]["allOf"].append(VERCEL_CHAT_REQUEST)
    schemas["CreateEmbeddingRequest"]["properties"]["providerOptions"] = VERCEL_PROVIDER_OPTIONS
    for name in _REQUEST_MESSAGES + _REQUEST_PARTS:
        schemas[name]["properties"]["cache_control"] = _CACHE_CONTROL
    # Vercel's file part: {data (base64), media_type, filename} beside OpenAI's form.
    file_part = schemas["ChatCompletionRequestMessageContentPartFile"]["properties"]["file"]
    file_part["properties"]["data"] = {"type": "string"}
    file_part["properties"]["media_type"] = {"type": "string"}
    for branch in schemas["ResponseModalities"]["anyOf"]:
        if branch.get("type") == "array":
            branch["items"]["enum"] = [*branch["items"]["enum"], "image"]
    schemas["ChatCompletionResponseMessage"]["properties"].update(VERCEL_MESSAGE)
    schemas["ChatCompletionStreamResponseDelta"]["properties"].update(VERCEL_MESSAGE)
    for name in (
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "CreateEmbeddingResponse",
    ):
        schemas[name]["properties"]["providerMetadata"] = VERCEL_PROVIDER_METADATA
    schemas["Model"]["properties"].update(VERCEL_MODEL)


def _nullable_to_anyof(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` -> JSON Schema `anyOf [..., null]`, everywhere."""
    if isinstance(node, list):
        return [_nullable_to_anyof(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_anyof(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


# ----------------------------------------------------------------------------- loading


@functools.cache
def _load() -> dict[str, Any]:
    if not SPEC_PATH.is_file():  # a missing spec must fail loudly, not skip the tests
        raise FileNotFoundError(f"the OpenAI spec is not at {SPEC_PATH} (AIGATEWAY_OPENAPI_SPEC)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as f:
        document: dict[str, Any] = yaml.load(f, Loader=loader)
    return document


@functools.cache
def document() -> dict[str, Any]:
    """The spec with the Vercel extensions patched in and `nullable` made JSON Schema."""
    doc = copy.deepcopy(_load())
    _patch_vercel(doc["components"]["schemas"])
    result: dict[str, Any] = _nullable_to_anyof(doc)
    return result


def schemas() -> dict[str, Schema]:
    return document()["components"]["schemas"]  # type: ignore[no-any-return]


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator of components/schemas/`name`, resolving the spec's `$ref`s."""
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}, registry=registry
    )


def validation_errors(name: str, instance: Json) -> list[str]:
    """Readable errors of `instance` against schema `name`; empty when it is valid."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors]


# ----------------------------------------------------------------------------- examples


def _lenient_json(text: str) -> Json:
    """The spec's examples elide with `....` lines and leave trailing commas; drop both."""
    kept = [line for line in text.splitlines() if not line.strip().startswith("...")]
    return json.loads(re.sub(r",(\s*[\]}])", r"\1", "\n".join(kept)))


def _events(text: str) -> list[Json]:
    """A streaming example: one JSON object per blank-line separated block."""
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip() and b.strip()[0] != "."]
    return [_lenient_json(b) for b in blocks]


def response_examples() -> Iterator[tuple[str, str, Json]]:
    """(id, kind, JSON) of every response example the spec carries for the bridged endpoints.

    `kind` is `chat`, `chunk`, `embeddings`, `models` or `model`.
    """
    doc = _load()
    paths = doc["paths"]
    for example in paths["/chat/completions"]["post"]["x-oaiMeta"]["examples"]:
        title = example["title"]
        if title == "Streaming":
            for i, event in enumerate(_events(example["response"])):
                yield f"chat-post-{title}-{i}", "chunk", event
        else:
            yield f"chat-post-{title}", "chat", _lenient_json(example["response"])
    # Stored completions (GET/POST /chat/completions/{id}, GET /chat/completions) are
    # chat.completion objects too, with request fields beside: keys the response does not model.
    for method in ("get", "post"):
        response = paths["/chat/completions/{completion_id}"][method]["x-oaiMeta"]["examples"]
        yield f"chat-stored-{method}", "chat", _lenient_json(response["response"])
    stored = _lenient_json(paths["/chat/completions"]["get"]["x-oaiMeta"]["examples"]["response"])
    for i, item in enumerate(stored["data"]):
        yield f"chat-list-{i}", "chat", item
    for path, method, kind in (
        ("/embeddings", "post", "embeddings"),
        ("/models", "get", "models"),
        ("/models/{model}", "get", "model"),
    ):
        response = paths[path][method]["x-oaiMeta"]["examples"]["response"]
        yield f"{path}-{method}", kind, _lenient_json(response)
    components = doc["components"]["schemas"]
    for name, kind in (
        ("CreateChatCompletionResponse", "chat"),
        ("CreateChatCompletionStreamResponse", "chunk"),
        ("Model", "model"),
    ):
        text = components[name]["x-oaiMeta"]["example"]
        if kind == "chunk":
            for i, event in enumerate(_events(text)):
                yield f"{name}-{i}", kind, event
        else:
            yield name, kind, _lenient_json(text)
    embedding = _lenient_json(components["Embedding"]["x-oaiMeta"]["example"])
    yield "Embedding", "embeddings", {"object": "list", "data": [embedding], "model": "m"}


def request_examples() -> Iterator[tuple[str, str, Json]]:
    """(id, kind, JSON body) of the spec's curl request examples: `chat` or `embeddings`."""
    paths = _load()["paths"]
    chat = [
        (e["title"], e["request"])
        for e in paths["/chat/completions"]["post"]["x-oaiMeta"]["examples"]
    ]
    embeddings = paths["/embeddings"]["post"]["x-oaiMeta"]["examples"]["request"]
    for (title, request), kind in [
        *((c, "chat") for c in chat),
        (("embeddings", embeddings), "embeddings"),
    ]:
        body = re.search(r"-d '(.*)'", request["curl"], re.DOTALL)
        assert body is not None, f"no JSON body in the {title} curl example"
        yield f"{kind}-{title}", kind, _lenient_json(body.group(1))


# ----------------------------------------------------------------------------- comparison


def exact_diff(expected: Json, actual: Json, path: str = "$") -> list[str]:
    """Differences between two JSON values, types included: 3 and 3.0, 1 and True, differ.

    Two allowances, the documented limits of free-form JSON (a Struct number is a double): a
    number written with a zero fraction (`1.0`) may come back as the same integer (`1`), and
    an integer beyond +-2**53 as the nearest double. The generators produce neither, so only
    the spec's own examples (a stored completion's 63-bit `seed`) use them.
    """
    if type(expected) is float and type(actual) is int and expected == actual:
        return []
    if (
        type(expected) is int
        and abs(expected) > MAX_SAFE_INTEGER
        and type(actual) is float
        and actual == float(expected)
    ):
        return []
    if type(expected) is not type(actual):
        return [f"{path}: {expected!r} ({type(expected).__name__}) became {actual!r}"]
    if isinstance(expected, dict):
        found = [f"{path}.{k}: missing" for k in expected if k not in actual]
        found += [f"{path}.{k}: added" for k in actual if k not in expected]
        for key in expected.keys() & actual.keys():
            found += exact_diff(expected[key], actual[key], f"{path}.{key}")
        return found
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items became {len(actual)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in exact_diff(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"{path}: {expected!r} became {actual!r}"]


def extra_paths(msg: Message, path: str = "$") -> list[str]:
    """Where in a message tree keys landed in `extra_fields` instead of typed fields."""
    found = []
    if "extra_fields" in msg.DESCRIPTOR.fields_by_name:
        found = [f"{path}.{k}" for k in msg.extra_fields.fields]  # type: ignore[attr-defined]
    for field, value in msg.ListFields():
        if field.message_type is None or field.name == "extra_fields":
            continue
        if field.message_type.full_name.startswith("google.protobuf."):
            continue
        if field.message_type.GetOptions().map_entry:
            continue
        items = value if field.is_repeated else [value]
        for i, item in enumerate(items):
            found += extra_paths(
                item, f"{path}.{field.name}[{i}]" if field.is_repeated else f"{path}.{field.name}"
            )
    return found


# ----------------------------------------------------------------------------- generators

FUTURE_PREFIX = "zz_future_"
"""Unknown keys start with this, so they never collide with a key the protos model."""

_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),  # JSON text cannot hold lone surrogates
    max_size=8,
)
_INTEGERS = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)


_FLOAT_LIMIT = float(2**52)
"""Below this magnitude a double has fractional bits, so an integral draw has a non-integral
neighbour (a map, not a filter: filtering starves hypothesis on large schemas)."""


def _non_integral(low: float | None = None, high: float | None = None) -> st.SearchStrategy[float]:
    low = max(-_FLOAT_LIMIT, low if low is not None else -_FLOAT_LIMIT)
    high = min(_FLOAT_LIMIT, high if high is not None else _FLOAT_LIMIT)

    def nudge(x: float) -> float:
        if not x.is_integer():
            return x
        for candidate in (math.nextafter(x, math.inf), math.nextafter(x, -math.inf), 0.5):
            if low <= candidate <= high and not candidate.is_integer():
                return candidate
        raise AssertionError(f"no non-integral number in [{low}, {high}]")

    floats = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return floats.map(nudge)


FREE_JSON: st.SearchStrategy[Json] = st.recursive(
    st.none() | st.booleans() | _INTEGERS | _non_integral() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
"""Any JSON value: nulls, booleans, integers (which must stay integers), floats, nesting."""


class Generator:
    """Builds hypothesis strategies of JSON values from the spec's schemas.

    `future`: add unknown keys (free-form values) to every object. `open_vocabulary`: besides
    each string enum's values, also arbitrary strings (the unknown `finish_reason`, role,
    `type` or `service_tier` a newer upstream sends). `overrides`: strategies for keys by name
    (e.g. a valid `model` id), applied at every level. `int_limit`: bound of generated
    `integer`s (the schemas rarely bound them; 2**31 - 1 keeps them within int32 fields).
    """

    def __init__(
        self,
        *,
        future: bool = False,
        open_vocabulary: bool = False,
        overrides: Mapping[str, st.SearchStrategy[Json]] | None = None,
        max_depth: int = 9,
        int_limit: int = MAX_SAFE_INTEGER,
    ) -> None:
        self.int_limit = int_limit
        self.future = future
        self.open_vocabulary = open_vocabulary
        self.overrides = dict(overrides or {})
        self.max_depth = max_depth
        self.schemas = schemas()

    def named(self, name: str) -> st.SearchStrategy[Json]:
        return self.build({"$ref": f"#/components/schemas/{name}"}, 0)

    def deref(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = {
                **self.schemas[schema["$ref"].rsplit("/", 1)[1]],
                **{k: v for k, v in schema.items() if k not in ("$ref", "description")},
            }
        return schema

    def build(self, schema: Schema, depth: int) -> st.SearchStrategy[Json]:
        schema = self.deref(schema)
        if depth > self.max_depth:
            return st.none()
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                rest = {k: v for k, v in schema.items() if k not in (combinator, "discriminator")}
                return st.one_of(
                    [self.build({**rest, **branch}, depth) for branch in schema[combinator]]
                )
        if "allOf" in schema:
            return self._object(self._merge(schema), depth)
        if "enum" in schema:
            values = st.sampled_from(schema["enum"])
            if self.open_vocabulary and all(type(v) is str for v in schema["enum"]):
                return values | _TEXT
            return values
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.build({**schema, "type": k}, depth) for k in kind])
        if kind == "object" or "properties" in schema:
            return self._object(schema, depth)
        if kind == "array":
            items = schema.get("items", {})
            low = schema.get("minItems", 0)
            return st.lists(
                self.build(items, depth + 1),
                min_size=low,
                max_size=max(low, min(schema.get("maxItems", 3), 3)),
            )
        if kind == "string":
            if "pattern" in schema:
                return st.from_regex(schema["pattern"], fullmatch=True)
            low = schema.get("minLength", 0)
            return st.text(
                alphabet=string.ascii_letters + string.digits + " -_éλ",
                min_size=low,
                max_size=max(low, min(schema.get("maxLength", 8), 8)),
            )
        if kind == "integer":
            return st.integers(
                max(schema.get("minimum", -self.int_limit), -self.int_limit),
                min(schema.get("maximum", self.int_limit), self.int_limit),
            )
        if kind == "number":
            return _non_integral(schema.get("minimum"), schema.get("maximum"))
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return FREE_JSON

    def _merge(self, schema: Schema) -> Schema:
        """allOf branches as one object schema (the spec uses allOf only to extend objects)."""
        merged: Schema = {"type": "object", "properties": {}, "required": []}
        for part in [*schema["allOf"], {k: v for k, v in schema.items() if k != "allOf"}]:
            part = self.deref(part)
            if "allOf" in part:
                part = self._merge(part)
            for key, value in part.get("properties", {}).items():
                # A key defined twice must satisfy both: keep the one that excludes null.
                known = merged["properties"].get(key)
                if known is None or not _allows_null(value) or _allows_null(known):
                    merged["properties"][key] = value
            merged["required"] += part.get("required", [])
            if "not" in part:
                merged.setdefault("exclusive", []).append(part["not"].get("required", []))
        return merged

    def _object(self, schema: Schema, depth: int) -> st.SearchStrategy[Json]:
        properties: dict[str, Schema] = schema.get("properties", {})
        if not properties:
            extra = schema.get("additionalProperties", True)
            values = FREE_JSON if extra is True else self.build(extra, depth + 1)
            return st.dictionaries(_TEXT, values, max_size=3)
        required = set(schema.get("required", []))
        exclusive = list(schema.get("exclusive", []))
        if "not" in schema:
            exclusive.append(schema["not"].get("required", []))

        def strategy(key: str) -> st.SearchStrategy[Json]:
            override = self.overrides.get(key)
            return override if override is not None else self.build(properties[key], depth + 1)

        fixed = {k: strategy(k) for k in properties if k in required}
        optional = {k: strategy(k) for k in properties if k not in required}
        result = st.fixed_dictionaries(fixed, optional=optional)
        if exclusive:
            result = result.map(functools.partial(_drop_exclusive, exclusive))
        if self.future:
            future = st.dictionaries(_TEXT.map(FUTURE_PREFIX.__add__), FREE_JSON, max_size=2)
            result = st.builds(_merged, result, future)
        return result


def _allows_null(schema: Schema) -> bool:
    return any(b.get("type") == "null" for b in schema.get("anyOf", []))


def _drop_exclusive(groups: list[list[str]], value: dict[str, Json]) -> dict[str, Json]:
    for group in groups:
        if all(k in value for k in group):
            value = {k: v for k, v in value.items() if k != group[-1]}
    return value


def _merged(a: dict[str, Json], b: dict[str, Json]) -> dict[str, Json]:
    return {**a, **b}


def sse_body(events: list[Json]) -> bytes:
    """A complete text/event-stream body: one `data:` event per object, then `[DONE]`."""
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def map_json(value: Json, fn: Callable[[Json], Json]) -> Json:
    """Apply `fn` bottom-up to every value of a JSON tree."""
    if isinstance(value, dict):
        return fn({k: map_json(v, fn) for k, v in value.items()})
    if isinstance(value, list):
        return fn([map_json(v, fn) for v in value])
    return fn(value)
