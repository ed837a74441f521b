"""Checks on the caller's request, made before anything is sent upstream.

What the upstream would reject anyway is still checked here when the check is cheap and the
answer can be more precise (a BadRequest naming the field), and always when a bad value
could make the bridge itself misbehave (a model id that would escape its URL path).
"""

from __future__ import annotations

from typing import TypeAlias

from aigateway.v1 import chat_pb2, embeddings_pb2
from google.protobuf.message import Message

from bridge.errors import BridgeError, invalid_argument, resource_exhausted

ChatRequest: TypeAlias = chat_pb2.CreateChatCompletionRequest | chat_pb2.StreamChatCompletionRequest

_MAX_MODEL_ID = 256


def message_size(request: Message, limit: int) -> None:
    """A request over --max-message-bytes gets RESOURCE_EXHAUSTED naming the option.

    grpc core enforces a receive limit too, but its status ("Received message larger than
    max") has no details and does not say which setting to change; the server lets requests
    up to twice the limit through to this check (`bridge.server.server_options`) so the common
    case of a request somewhat over the limit gets a status the caller can act on.
    """
    size = request.ByteSize()
    if size > limit:
        raise resource_exhausted("max_message_bytes", limit, size)


def model_id(model: str, field: str = "model") -> None:
    """A model id must be a plain path: no `..`, query, fragment, control chars or `//`."""
    if not model:
        raise invalid_argument(field, "is required, e.g. 'openai/gpt-4o-mini'")
    if len(model) > _MAX_MODEL_ID:
        raise invalid_argument(field, f"is longer than {_MAX_MODEL_ID} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in model):
        raise invalid_argument(field, "must not contain control characters")
    if "?" in model or "#" in model or "\\" in model or "%" in model:
        raise invalid_argument(field, f"must not contain '?', '#', '%' or '\\': {model!r}")
    segments = model.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise invalid_argument(field, f"must not have empty, '.' or '..' path segments: {model!r}")


def chat(request: ChatRequest) -> None:
    model_id(request.model)
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


__all__ = ["BridgeError", "chat", "embeddings", "message_size", "model_id"]
