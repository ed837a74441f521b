"""The API of the development upstream: what an OpenAI-compatible server answers.

Pure functions from a recorded request to a reply (`dev.upstream.replies.Reply`), apart from the
HTTP plumbing in `dev.upstream.server`, so the fake API can grow (new endpoints, new fields)
without touching sockets, and the server can change without touching the API. Answers are
deterministic: a chat reply echoes the last user message, embeddings come from a hash of the
input, so a test can compare what the bridge returns with a direct REST call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

from dev.upstream import responses
from dev.upstream.embeddings import DEFAULT_DIMENSIONS, embedding_vector, embeddings
from dev.upstream.error_bodies import error_envelope
from dev.upstream.replies import CREATED, FullReply, Json, Reply, StreamReply, encode_json
from dev.upstream.validation import BadRequest, positive_int

__all__ = [
    "DEFAULT_DIMENSIONS",
    "MODELS",
    "TOOL_ARGUMENTS",
    "RecordedRequest",
    "embedding_vector",
    "error_reply",
    "is_models_path",
    "model_of",
    "route",
]

_PRICING_SONNET = {
    "input": "0.000003",
    "output": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
    "input_tiers": [
        {"cost": "0.000003", "min": 0, "max": 200000},
        {"cost": "0.000006", "min": 200001},
    ],
}

MODELS: tuple[Json, ...] = (
    {
        "id": "openai/gpt-4o-mini",
        "object": "model",
        "created": 1721172741,
        "owned_by": "openai",
        "name": "GPT-4o mini",
        "description": "A small, fast and cheap multimodal model.",
        "released": 1721172741,
        "context_window": 128000,
        "max_tokens": 16384,
        "type": "language",
        "tags": ["tool-use", "vision", "file-input"],
        "pricing": {"input": "0.00000015", "output": "0.0000006", "input_cache_read": "7.5e-8"},
    },
    {
        "id": "anthropic/claude-sonnet-4.5",
        "object": "model",
        "created": 1759190400,
        "owned_by": "anthropic",
        "name": "Claude Sonnet 4.5",
        "description": "Anthropic's model for agents and coding.",
        "released": 1759190400,
        "context_window": 200000,
        "max_tokens": 64000,
        "type": "language",
        "tags": ["tool-use", "reasoning", "vision", "file-input"],
        "pricing": _PRICING_SONNET,
    },
    {
        "id": "openai/text-embedding-3-small",
        "object": "model",
        "created": 1705948997,
        "owned_by": "openai",
        "name": "text-embedding-3-small",
        "description": "A small embedding model.",
        "released": 1705948997,
        "context_window": 8192,
        "max_tokens": 0,
        "type": "embedding",
        "tags": [],
        "pricing": {"input": "0.00000002"},
    },
    {
        "id": "gpt-4o-mini",
        "object": "model",
        "created": 1721172741,
        "owned_by": "system",
        "shutdown_date": None,
    },
)
"""The catalogue of `GET /v1/models`: Vercel-style entries and one plain OpenAI entry."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream received it, for tests to check what the bridge sent."""

    method: str
    path: str
    """The raw target, query included: `/v1/models/anthropic/claude-sonnet-4.5`."""
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with `, `."""
    body: bytes
    json: Any | None
    """The parsed body, or None when it is empty or not JSON."""
    at: float = field(default=0.0, compare=False)
    """When the request was complete, on the event loop's clock (`loop.time()`), so tests can
    check the delays between retries."""


# ---------------------------------------------------------------------------------------------
# The API: pure functions from a request to a reply.


def error_reply(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> FullReply:
    return FullReply(status, encode_json(error_envelope(message, type_, param, code)))


def _ok(value: Json) -> FullReply:
    return FullReply(200, encode_json(value))


def route(request: RecordedRequest, stream_interval: float) -> Reply:
    """The normal reply to an authorised request."""
    method, path = request.method, request.path.split("?", 1)[0]
    try:
        if method == "GET" and path == "/v1/models":
            return _ok({"object": "list", "data": list(MODELS)})
        if method == "GET" and path.startswith("/v1/models/"):
            return _model(unquote(path.removeprefix("/v1/models/")))
        if method == "POST" and path == "/v1/chat/completions":
            return _chat(_body_object(request), stream_interval)
        if method == "POST" and path == "/v1/embeddings":
            return embeddings(_body_object(request))
        if method == "POST" and path == "/v1/responses":
            return responses.responses(_body_object(request), stream_interval)
    except BadRequest as exc:
        return error_reply(400, exc.message, "invalid_request_error", exc.param)
    return error_reply(404, f"Invalid URL ({method} {path})", "invalid_request_error")


def _body_object(request: RecordedRequest) -> Json:
    if not isinstance(request.json, dict):
        raise BadRequest("We could not parse the JSON body of your request.", None)
    return request.json


def _model(model_id: str) -> FullReply:
    for model in MODELS:
        if model["id"] == model_id:
            return _ok(model)
    message = f"The model `{model_id}` does not exist or you do not have access to it."
    return error_reply(404, message, "invalid_request_error", "model", "model_not_found")


# ------------------------------------------------------------------------------ chat


@dataclass(frozen=True)
class _Chat:
    """A validated chat request and the reply it determines."""

    model: str
    n: int
    words: list[str]
    count: int
    """Content tokens (or argument fragments) per choice."""
    tool: str | None
    completion_id: str
    call_id: str
    prompt_tokens: int
    include_usage: bool

    def tokens(self) -> Iterator[str]:
        """The reply split into tokens: words cycled to `count`, spaces kept."""
        for i in range(self.count):
            word = self.words[i % len(self.words)]
            yield word if i == self.count - 1 else word + " "

    def usage(self) -> Json:
        completion = self.count * self.n
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def envelope(self, object_: str) -> Json:
        return {
            "id": self.completion_id,
            "object": object_,
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_dev",
            "service_tier": "default",
        }


TOOL_ARGUMENTS = '{"city":"Paris"}'
_FRAGMENT = 4


def _fragments() -> list[str]:
    return [TOOL_ARGUMENTS[i : i + _FRAGMENT] for i in range(0, len(TOOL_ARGUMENTS), _FRAGMENT)]


def _chat(body: Json, stream_interval: float) -> Reply:
    chat = _parse_chat(body)
    if body.get("stream") is True:
        return StreamReply(chat.completion_id, chat.model, _chunks(chat), stream_interval)
    return _ok(_completion(chat))


def _parse_chat(body: Json) -> _Chat:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object", f"messages[{i}]")
    n = positive_int(body, "n", 1)
    limit = positive_int(body, "max_completion_tokens", 0) or positive_int(body, "max_tokens", 0)
    last_user: Json = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    words = ("Echo: " + _text(last_user.get("content"))).split()
    tool = _tool_name(body, " ".join(words))
    digest = hashlib.sha256(encode_json([model, messages, body.get("tools"), n, limit])).hexdigest()
    options = body.get("stream_options")
    return _Chat(
        model=model,
        n=n,
        words=words,
        count=len(_fragments()) if tool else (limit or len(words)),
        tool=tool,
        completion_id="chatcmpl-" + digest[:24],
        call_id="call_" + digest[24:48],
        prompt_tokens=max(1, sum(len(_text(m.get("content")).split()) for m in messages)),
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def _text(content: Any) -> str:
    """A message's text: the string content, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _tool_name(body: Json, reply: str) -> str | None:
    """The tool the reply calls, or None: when tools are given and the user asks about the
    weather or `tool_choice` forces a call (`required` or a named function)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        named = choice.get(str(choice.get("type", "function")))
        if isinstance(named, dict) and isinstance(named.get("name"), str):
            return cast(str, named["name"])
    if choice != "required" and not isinstance(choice, dict) and "weather" not in reply.lower():
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    spec = first.get(str(first.get("type", "function")))
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) else "tool"


def _tool_call(chat: _Chat, arguments: str) -> Json:
    return {
        "id": chat.call_id,
        "type": "function",
        "function": {"name": chat.tool, "arguments": arguments},
    }


def _completion(chat: _Chat) -> Json:
    message: Json = {"role": "assistant", "content": "".join(chat.tokens()), "refusal": None}
    if chat.tool:
        message["content"] = None
        message["tool_calls"] = [_tool_call(chat, TOOL_ARGUMENTS)]
    finish = "tool_calls" if chat.tool else "stop"
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
        for i in range(chat.n)
    ]
    return {**chat.envelope("chat.completion"), "choices": choices, "usage": chat.usage()}


def _chunks(chat: _Chat) -> Iterator[Json]:
    """The stream: role (or tool call head), one chunk per token, finish, optional usage."""

    def chunk(index: int, delta: Json, finish: str | None = None) -> Json:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        extra: Json = {"usage": None} if chat.include_usage else {}
        return {**chat.envelope("chat.completion.chunk"), "choices": [choice], **extra}

    first: Json = {"role": "assistant", "content": "", "refusal": None}
    if chat.tool:
        first = {**first, "content": None, "tool_calls": [{"index": 0, **_tool_call(chat, "")}]}
    for i in range(chat.n):
        yield chunk(i, first)
    pieces = _fragments() if chat.tool else chat.tokens()
    for piece in pieces:
        for i in range(chat.n):
            if chat.tool:
                yield chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            else:
                yield chunk(i, {"content": piece})
    for i in range(chat.n):
        yield chunk(i, {}, "tool_calls" if chat.tool else "stop")
    if chat.include_usage:
        yield {**chat.envelope("chat.completion.chunk"), "choices": [], "usage": chat.usage()}


# ------------------------------------------------------------------------------ embeddings


def is_models_path(path: str) -> bool:
    return path == "/v1/models" or path.startswith("/v1/models/")


def model_of(request: RecordedRequest) -> str | None:
    """The model a request is about, for `program()`: body `model` or the models path id."""
    path = request.path.split("?", 1)[0]
    if request.method == "GET" and path.startswith("/v1/models/"):
        return unquote(path.removeprefix("/v1/models/"))
    if isinstance(request.json, dict):
        model = request.json.get("model")
        if isinstance(model, str):
            return model
    return None
