"""Checks on the caller's request, made before anything is sent upstream.

What the upstream would reject anyway is still checked here when the check is cheap and the
answer can be more precise (a BadRequest naming the field), and always when a bad value
could make the bridge itself misbehave (a model id that would escape its URL path).
"""

from __future__ import annotations

import json
import math
import re
import string
from typing import TypeAlias

from aigateway.v1 import chat_pb2, embeddings_pb2
from aigateway_json import TranslationError, json_text_fields, parse_json_text, type_oneof
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

from bridge.status import BridgeError, invalid_argument, resource_exhausted

ChatRequest: TypeAlias = chat_pb2.CreateChatCompletionRequest | chat_pb2.StreamChatCompletionRequest

_MAX_MODEL_ID = 256
"""Longer than any real id: Bedrock inference-profile ARNs, the longest seen, are about 120."""

_MODEL_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:/@")
"""What real model ids are made of, and nothing else: `openai/gpt-4o-mini`,
`meta-llama/Llama-3.1-8B-Instruct`, Ollama's `qwen2.5-coder:7b-instruct-q4_K_M`, fine-tuned
`ft:gpt-4o-mini:org:custom:id`, Vertex's `claude-3-5-sonnet@20240620`, Cloudflare's
`@cf/meta/llama-3.1-8b-instruct`, Bedrock's `anthropic.claude-3-5-sonnet-20240620-v1:0` and
its ARNs, Azure deployment names. An allow-list, not a list of known escapes: `;` (`..;/`
matrix parameters), `%`, `?`, `#`, `\\`, whitespace, control and non-ASCII characters can
each change what a URL path or a log line means somewhere, and no model id needs them."""

_ALLOWED_DESCRIPTION = "ASCII letters, digits and '-', '_', '.', ':', '/', '@'"

MAX_NESTING = 100
"""How deep messages may nest below the request: the default recursion limit of the protobuf
parsers of C++, Java, Python (upb) and C#. grpc refuses a deeper request before the servicer
sees it (`DecodingInterceptor`); the check in `json_values` keeps the rule whatever parser
decoded the request. A level of free-form JSON costs 3 levels in a Struct (Struct, map entry,
Value) and 2 in a list, so a caller's JSON nests at most about 32 objects deep."""


def message_size(request: Message, limit: int) -> None:
    """A request over --max-message-bytes gets RESOURCE_EXHAUSTED naming the option.

    grpc core enforces a receive limit too, but its status ("Received message larger than
    max") has no details and does not say which setting to change; the server lets requests
    up to twice the limit through to this check (`bridge.server.assembly.server_options`) so the
    common
    case of a request somewhat over the limit gets a status the caller can act on.
    """
    size = request.ByteSize()
    if size > limit:
        raise resource_exhausted("max_message_bytes", limit, size)


def model_id(model: str, field: str = "model") -> None:
    """A model id is made of `_MODEL_ID_CHARS`, in `/`-separated segments none of which is
    empty, `.` or `..`, so that it names the same thing in a JSON body, in a URL path
    (`/models/{model}`) and in a log line.

    The one real kind of id this refuses: vLLM and llama.cpp name a model by the absolute path
    it was loaded from unless told otherwise (`/models/Llama-3.1-8B`); serve it with
    `--served-model-name` (or llama.cpp's `--alias`) to call it through the bridge.
    """
    if not model:
        raise invalid_argument(field, "is required, e.g. 'openai/gpt-4o-mini'")
    if len(model) > _MAX_MODEL_ID:
        raise invalid_argument(field, f"is longer than {_MAX_MODEL_ID} characters")
    for position, char in enumerate(model):
        if char not in _MODEL_ID_CHARS:
            raise invalid_argument(
                field,
                f"may contain only {_ALLOWED_DESCRIPTION}; found {char!a} at position {position}",
            )
    if any(s in ("", ".", "..") for s in model.split("/")):
        raise invalid_argument(field, "must not have empty, '.' or '..' segments between its '/'")


def chat(request: ChatRequest) -> None:
    model_id(request.model)
    json_values(request)
    if not request.messages:
        raise invalid_argument("messages", "needs at least one message")
    for i, message in enumerate(request.messages):
        if not message.HasField("role") and "role" not in message.extra_fields.fields:
            raise invalid_argument(f"messages[{i}].role", "is required")
    if request.HasField("reasoning"):
        reasoning = request.reasoning
        if reasoning.HasField("effort") and reasoning.HasField("max_tokens"):
            raise invalid_argument(
                "reasoning.max_tokens", "cannot be combined with reasoning.effort; set one"
            )
        if reasoning.HasField("max_tokens") and request.HasField("reasoning_effort"):
            raise invalid_argument(
                "reasoning_effort", "cannot be combined with reasoning.max_tokens; set one"
            )
    if request.HasField("top_logprobs") and not request.logprobs:
        raise invalid_argument("top_logprobs", "needs logprobs set to true")
    _range(request, "temperature", 0.0, 2.0)
    _range(request, "top_p", 0.0, 1.0)
    _range(request, "presence_penalty", -2.0, 2.0)
    _range(request, "frequency_penalty", -2.0, 2.0)
    _range(request, "n", 1, 128)
    _range(request, "top_logprobs", 0, 20)
    if request.WhichOneof("stop") == "stop_sequences" and len(request.stop_sequences.values) > 4:
        raise invalid_argument("stop", "takes at most 4 sequences")


def embeddings(request: embeddings_pb2.CreateEmbeddingsRequest) -> None:
    model_id(request.model)
    json_values(request)
    form = request.WhichOneof("input")
    empty = (
        form is None
        or (form == "input_strings" and not request.input_strings.values)
        or (form == "input_tokens" and not request.input_tokens.values)
        or (form == "input_token_lists" and not request.input_token_lists.values)
    )
    if empty and "input" not in request.extra_fields.fields:
        raise invalid_argument("input", "is required and must not be empty")
    if form == "input_token_lists" and any(not t.values for t in request.input_token_lists.values):
        raise invalid_argument("input", "token lists must not be empty")
    if request.HasField("encoding_format") and request.encoding_format not in ("float", "base64"):
        raise invalid_argument("encoding_format", "must be 'float' or 'base64'")
    if request.HasField("dimensions") and request.dimensions < 1:
        raise invalid_argument("dimensions", "must be at least 1")


def _range(request: Message, field: str, low: float, high: float) -> None:
    if request.HasField(field):
        value = getattr(request, field)
        if not low <= value <= high:
            raise invalid_argument(field, f"must be between {low} and {high}, got {value}")


# --------------------------------------------------------------------------- JSON values

_DOUBLES = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
_LIST_VALUE = struct_pb2.ListValue.DESCRIPTOR.full_name
_VALUE = struct_pb2.Value.DESCRIPTOR.full_name
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_PATH = 200
"""A field path in a message is cut here: a caller chooses the keys of its Structs."""


def json_values(request: Message) -> None:
    """Every number in the request can be JSON, and messages nest no deeper than protobuf's
    limit, or INVALID_ARGUMENT naming the field.

    JSON has no NaN or Infinity: Python's encoder would write the tokens `NaN` and
    `-Infinity`, which no upstream parses (or worse, some do). A double in a typed field or in
    a caller's free-form Struct (`extra_fields`, tool `parameters`, a `json_schema`'s
    `schema`, `providerOptions`, ...) is checked alike, by walking the message's descriptors.
    """
    _walk_message(request, "", 0)


def _too_deep(path: str) -> BridgeError:
    return invalid_argument(
        _bounded(path),
        f"nests messages deeper than protobuf's limit of {MAX_NESTING} levels (a level of "
        "JSON in a Struct counts 3)",
    )


def _not_finite(path: str, value: float) -> BridgeError:
    name = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return invalid_argument(
        _bounded(path), f"is {name}, which JSON cannot represent; send a finite number"
    )


def _bounded(path: str) -> str:
    return path if len(path) <= _MAX_PATH else path[: _MAX_PATH - 3] + "..."


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_quoted(key)}]"


def _quoted(key: str) -> str:
    """A Struct key as it can appear in a status message: JSON-quoted, ASCII, bounded."""
    return json.dumps(key if len(key) <= 64 else key[:61] + "...")


def _walk_message(message: Message, path: str, depth: int) -> None:
    oneof = type_oneof(message.DESCRIPTOR)  # type: ignore[arg-type]
    if oneof is not None and message.WhichOneof(oneof.name) is None:
        _needs_type(message, oneof, path)
    for field, value in message.ListFields():
        name = _join(path, field.name)
        message_type = field.message_type
        if message_type is None:
            if field.type in _DOUBLES:
                values = value if field.is_repeated else (value,)
                for v in values:
                    if not math.isfinite(v):
                        raise _not_finite(name, v)
            continue
        if message_type.GetOptions().map_entry:
            value_field = message_type.fields_by_name["value"]
            for key, item in value.items():
                item_path = f"{name}[{_quoted(str(key))}]"
                if value_field.message_type is not None:
                    _walk_any(item, item_path, depth + 2)
                elif value_field.type in _DOUBLES and not math.isfinite(item):
                    raise _not_finite(item_path, item)
        elif field.is_repeated:
            for i, item in enumerate(value):
                _walk_any(item, f"{name}[{i}]", depth + 1)
        else:
            _walk_any(value, name, depth + 1)


def _needs_type(message: Message, oneof: OneofDescriptor, path: str) -> None:
    """A message whose `type` is named by its oneof member, with neither set, cannot be sent:
    the API requires `type`, and nothing says which (`tool_choice_named {}`, an empty part)."""
    if message.HasField("type"):
        return
    extra = getattr(message, "extra_fields", None)
    if extra is not None and "type" in extra.fields:
        return
    members = ", ".join(f.name for f in oneof.fields)
    raise invalid_argument(
        _bounded(_join(path, "type")), f"is required: set it or one of {members}"
    )


def _walk_any(message: Message, path: str, depth: int) -> None:
    if depth > MAX_NESTING:
        raise _too_deep(path)
    full_name = message.DESCRIPTOR.full_name
    if full_name == _STRUCT:
        _walk_struct(message, path, depth)  # type: ignore[arg-type]
    elif full_name == _LIST_VALUE:
        _walk_list(message, path, depth)  # type: ignore[arg-type]
    elif full_name == _VALUE:
        _walk_value(message, path, depth)  # type: ignore[arg-type]
    else:
        _walk_message(message, path, depth)


def _walk_struct(struct: struct_pb2.Struct, path: str, depth: int) -> None:
    """A Struct at `depth` holds map entries at depth + 1 and their Values at depth + 2."""
    if depth > MAX_NESTING:
        raise _too_deep(path)
    for key, value in struct.fields.items():
        _walk_value(value, _join(path, key), depth + 2)


def _walk_list(values: struct_pb2.ListValue, path: str, depth: int) -> None:
    if depth > MAX_NESTING:
        raise _too_deep(path)
    for i, value in enumerate(values.values):
        _walk_value(value, f"{path}[{i}]", depth + 1)


def _walk_value(value: struct_pb2.Value, path: str, depth: int) -> None:
    if depth > MAX_NESTING:
        raise _too_deep(path)
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise _not_finite(path, value.number_value)
    elif kind == "struct_value":
        _walk_struct(value.struct_value, path, depth + 1)
    elif kind == "list_value":
        _walk_list(value.list_value, path, depth + 1)


# --------------------------------------------------------------------------- JSON texts


def json_texts(request: Message) -> None:
    """Every `<key>_json` field set in the request holds JSON text of one object that the
    bridge can send as it is (`aigateway_json.parse_json_text`), and its Struct `<key>` is
    not set too, or INVALID_ARGUMENT naming the field.

    Part of decoding the request (`DecodingInterceptor`), so every service checks it alike
    before its servicer runs. Only the fields whose types can hold such a text are walked.
    """
    _walk_texts(request, "")


def _walk_texts(message: Message, path: str) -> None:
    texts, children = _text_routes(message.DESCRIPTOR)  # type: ignore[arg-type]
    if not texts and not children:
        return
    for field, value in message.ListFields():
        name = field.name
        if name in texts:
            where = _join(path, name)
            if message.HasField(texts[name]):
                raise invalid_argument(
                    _bounded(where), f"cannot be combined with {texts[name]}; set one"
                )
            try:
                parse_json_text(value)
            except TranslationError as exc:
                raise invalid_argument(
                    _bounded(where), f"must be JSON text of an object: {exc}"
                ) from None
        elif name in children:
            where = _join(path, name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    _walk_texts(item, f"{where}[{_quoted(str(key))}]")
            elif field.is_repeated:
                for i, item in enumerate(value):
                    _walk_texts(item, f"{where}[{i}]")
            else:
                _walk_texts(value, where)


def _text_routes(descriptor: Descriptor) -> tuple[dict[str, str], frozenset[str]]:
    """The `<key>_json` fields of `descriptor`, and its message fields whose type can hold
    one at any depth."""
    routes = _routes.get(descriptor.full_name)
    if routes is None:
        children = frozenset(
            f.name
            for f in descriptor.fields
            if f.message_type is not None and _holds_texts(_element_type(f.message_type))
        )
        routes = (json_text_fields(descriptor), children)
        _routes[descriptor.full_name] = routes
    return routes


def _element_type(descriptor: Descriptor) -> Descriptor:
    """A map entry stands for its value type (a map of scalars holds no texts)."""
    if descriptor.GetOptions().map_entry:
        value_type = descriptor.fields_by_name["value"].message_type
        return value_type if value_type is not None else descriptor
    return descriptor


def _holds_texts(descriptor: Descriptor) -> bool:
    """Whether a message of this type can hold a `<key>_json` field anywhere below it."""
    seen = {descriptor.full_name}
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if json_text_fields(current):
            return True
        for field in current.fields:
            if field.message_type is not None and field.message_type.full_name not in seen:
                seen.add(field.message_type.full_name)
                pending.append(field.message_type)
    return False


_routes: dict[str, tuple[dict[str, str], frozenset[str]]] = {}


__all__ = [
    "MAX_NESTING",
    "BridgeError",
    "chat",
    "embeddings",
    "json_texts",
    "json_values",
    "message_size",
    "model_id",
]
