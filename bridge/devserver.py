"""A local OpenAI-compatible development upstream.

`make demo`, the integration tests, the fault suite and the benchmarks need a real HTTP
upstream on loopback: real sockets, real keep-alive, real chunked streaming, real resets. This
module is one, in plain asyncio on top of `h11` (already a dependency of httpx), so it adds no
dependency and stays light enough for thousands of idle keep-alive connections: a connection
costs one `asyncio.Protocol`, and a task exists only while a request is being answered.

Answers are deterministic (a chat reply echoes the last user message, embeddings come from a
hash of the input), so a test can compare what the bridge returns with a direct REST call.
`DevUpstream.program()` queues faults (`bridge.devfaults`) for the next requests of a model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import random
import socket
import struct
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote

import h11

from bridge.devfaults import (
    CREATED,
    JSON_TYPE,
    Behavior,
    CutStream,
    Delay,
    Empty,
    FullReply,
    Hang,
    Html,
    Huge,
    Json,
    MalformedJson,
    MalformedSse,
    Redirect,
    Reply,
    Reset,
    SlowStream,
    Status,
    StreamError,
    StreamReply,
    WrongContentType,
    deliver,
    encode_json,
    error_envelope,
)

__all__ = [
    "MODELS",
    "Behavior",
    "CutStream",
    "Delay",
    "DevUpstream",
    "Empty",
    "Hang",
    "Html",
    "Huge",
    "MalformedJson",
    "MalformedSse",
    "RecordedRequest",
    "Redirect",
    "Reset",
    "SlowStream",
    "Status",
    "StreamError",
    "WrongContentType",
    "embedding_vector",
    "serve_forever",
]

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
"""Request bodies beyond this are answered 413 (and recorded with an empty body)."""

DEFAULT_DIMENSIONS = 8

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


# ---------------------------------------------------------------------------------------------
# The API: pure functions from a request to a reply.


class _BadRequest(Exception):
    """A validation failure, answered 400 with an envelope naming `param`."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _error(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> FullReply:
    return FullReply(status, encode_json(error_envelope(message, type_, param, code)))


def _ok(value: Json) -> FullReply:
    return FullReply(200, encode_json(value))


def _route(request: RecordedRequest, stream_interval: float) -> Reply:
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
            return _embeddings(_body_object(request))
    except _BadRequest as exc:
        return _error(400, exc.message, "invalid_request_error", exc.param)
    return _error(404, f"Invalid URL ({method} {path})", "invalid_request_error")


def _body_object(request: RecordedRequest) -> Json:
    if not isinstance(request.json, dict):
        raise _BadRequest("We could not parse the JSON body of your request.", None)
    return request.json


def _model(model_id: str) -> FullReply:
    for model in MODELS:
        if model["id"] == model_id:
            return _ok(model)
    message = f"The model `{model_id}` does not exist or you do not have access to it."
    return _error(404, message, "invalid_request_error", "model", "model_not_found")


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
        raise _BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _BadRequest(f"'messages[{i}]' must be an object", f"messages[{i}]")
    n = _positive_int(body, "n", 1)
    limit = _positive_int(body, "max_completion_tokens", 0) or _positive_int(body, "max_tokens", 0)
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


def _positive_int(body: Json, name: str, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _BadRequest(f"'{name}' must be a positive integer", name)
    return value


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


def _embeddings(body: Json) -> FullReply:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    inputs = _embedding_inputs(body.get("input"))
    dimensions = _positive_int(body, "dimensions", DEFAULT_DIMENSIONS)
    if dimensions > 4096:
        raise _BadRequest("'dimensions' must be at most 4096", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    data = []
    for index, item in enumerate(inputs):
        vector = embedding_vector(model, item, dimensions)
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(max(1, len(i.split())) if isinstance(i, str) else len(i) for i in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _ok({"object": "list", "data": data, "model": model, "usage": usage})


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    """One entry per embedding: a string, strings, a token list, or token lists."""
    invalid = _BadRequest(
        "'input' must be a non-empty string, array of strings, "
        "array of token ids or array of token arrays",
        "input",
    )
    if isinstance(value, str):
        if not value:
            raise invalid
        return [value]
    if not isinstance(value, list) or not value:
        raise invalid
    if all(_is_token(v) for v in value):
        return [value]
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
        return list(value)
    raise invalid


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def embedding_vector(model: str, item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector determined by model and input; every value is exactly a float32, so the
    float and base64 encodings describe the same numbers."""
    seed = hashlib.sha256(encode_json([model, item])).digest()
    rng = random.Random(int.from_bytes(seed[:16], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 on h11.


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Connection(asyncio.Protocol):
    """One client connection: h11 parsing, keep-alive, flow control, and the `Exchange` that
    `bridge.devfaults.deliver` writes the current response through.

    The client going away (EOF or error) cancels the handler task, which is how `Hang`, delays
    and slow streams notice a disconnect at once, and how `disconnects` is counted.
    """

    def __init__(self, server: DevUpstream) -> None:
        self._server = server
        self._h11 = h11.Connection(h11.SERVER)
        self._transport: asyncio.Transport | None = None
        self._head: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._task: asyncio.Task[None] | None = None
        self._request_id = ""
        self._head_request = False
        self._complete = True
        """Whether the current response was entirely handed to the transport."""
        self._gone = False
        self._closing_by_us = False
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server._attach(self)

    def data_received(self, data: bytes) -> None:
        self._h11.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        # HTTP/1.1 clients do not half-close: EOF means the client is gone.
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        self._server._detach(self)
        self._wake_writer()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    # -- requests

    def _pump(self) -> None:
        """Turn buffered bytes into requests; start a handler when one is complete."""
        while self._task is None and not self._gone:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._reject(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._start_request(event)
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size <= MAX_BODY:
                    self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _start_request(self, event: h11.Request) -> None:
        self._head, self._body, self._body_size = event, [], 0
        if self._h11.they_are_waiting_for_100_continue:
            self._send_now(h11.InformationalResponse(status_code=100, headers=[]))

    def _dispatch(self) -> None:
        assert self._head is not None
        too_large = self._body_size > MAX_BODY
        request = _record(self._head, b"" if too_large else b"".join(self._body))
        self._server.requests.append(request)
        self._body = []
        self._request_id = self._server._next_request_id()
        self._head_request = request.method == "HEAD"
        self._complete = False
        self._task = asyncio.get_running_loop().create_task(self._handle(request, too_large))
        self._server._tasks.add(self._task)
        self._task.add_done_callback(self._handled)

    async def _handle(self, request: RecordedRequest, too_large: bool) -> None:
        self._server.active_responses += 1
        try:
            await self._server._answer(self, request, too_large)
        except ConnectionError:
            pass
        except Exception:
            logger.exception("dev upstream failed to answer %s %s", request.method, request.path)
            self._fail()
        finally:
            self._server.active_responses -= 1

    def _handled(self, task: asyncio.Task[None]) -> None:
        """After a response: next keep-alive cycle (maybe a pipelined request), or close."""
        self._server._tasks.discard(task)
        self._task = None
        if self._gone or self._closing_by_us or self._transport is None:
            return
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._pump()
        else:
            self._close()

    def _reject(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        self._request_id = self._server._next_request_id()
        body = encode_json(error_envelope(str(exc), "invalid_request_error"))
        with contextlib.suppress(h11.LocalProtocolError):
            self._send_now(
                self._response(status, JSON_TYPE, {}, len(body)),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
        self._close()

    def _fail(self) -> None:
        """An unexpected error in a handler: a 500 if nothing was sent yet, else a reset."""
        if self._gone:
            return
        if self._h11.our_state is h11.SEND_RESPONSE:
            body = encode_json(error_envelope("dev upstream internal error", "server_error"))
            self._send_now(
                self._response(500, JSON_TYPE, {}, len(body)),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
            self._complete = True
        else:
            self.reset()

    def _lost(self) -> None:
        if self._gone:
            return
        self._gone = True
        if self._task is not None and not self._task.done():
            if not self._complete and not self._closing_by_us:
                self._server.disconnects += 1
            self._task.cancel()

    # -- writing

    def _response(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None,
    ) -> h11.Response:
        merged = {
            "content-type": content_type,
            "x-request-id": self._request_id,
            "server": "bridge-devserver",
        }
        if content_length is not None:
            merged["content-length"] = str(content_length)
        merged.update((k.lower(), v) for k, v in headers.items())
        return h11.Response(
            status_code=status, headers=list(merged.items()), reason=_reason(status)
        )

    def _encode(self, *events: h11.Event) -> bytes:
        return b"".join(self._h11.send(e) or b"" for e in events)

    def _send_now(self, *events: h11.Event) -> None:
        if self._transport is not None and not self._gone:
            self._transport.write(self._encode(*events))

    async def _write(self, data: bytes) -> None:
        if self._gone or self._transport is None:
            raise ConnectionResetError("the client disconnected")
        self._transport.write(data)
        if self._paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter
            if self._gone:
                raise ConnectionResetError("the client disconnected")

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self) -> None:
        self._closing_by_us = True
        if self._transport is not None:
            self._transport.close()

    # -- bridge.devfaults.Exchange

    async def send_full(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        response = self._response(status, content_type, headers, len(body))
        events: list[h11.Event] = [response]
        if body and not self._head_request and status not in (204, 304):
            events.append(h11.Data(data=body))
        data = self._encode(*events, h11.EndOfMessage())
        self._complete = True
        await self._write(data)

    async def send_head(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None = None,
    ) -> None:
        await self._write(
            self._encode(self._response(status, content_type, headers, content_length))
        )

    async def send_data(self, data: bytes) -> None:
        if data and not self._head_request:
            await self._write(self._encode(h11.Data(data=data)))

    async def finish(self) -> None:
        data = self._encode(h11.EndOfMessage())
        self._complete = True
        await self._write(data)

    async def cut(self) -> None:
        # close(), not abort(): what was written still arrives, then a plain FIN.
        self._complete = True
        self._close()

    def reset(self) -> None:
        self._complete = True
        self._closing_by_us = True
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def stop(self) -> None:
        """Server shutdown: drop the connection without counting a disconnect."""
        self._closing_by_us = True
        if self._transport is not None:
            self._transport.abort()


def _record(head: h11.Request, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    parsed: Any | None = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return RecordedRequest(
        head.method.decode("ascii"), head.target.decode("latin-1"), headers, body, parsed
    )


# ---------------------------------------------------------------------------------------------
# The server.


class DevUpstream:
    """The development upstream: start it, point the bridge at `url`, program faults.

    Counters for tests: `active_responses` (requests being answered, from the end of the
    request to the end of the response, so a `Hang` counts), `disconnects` (clients that
    closed before their response was complete), `open_connections`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        stream_interval: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.stream_interval = stream_interval
        self.requests: list[RecordedRequest] = []
        self.active_responses = 0
        self.disconnects = 0
        self.open_connections = 0
        self._programs: dict[str, deque[Behavior]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The base URL the bridge uses, `/v1` included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        """Bind and listen; afterwards `port` is the real port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection, cancel the handlers and wait for them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let connection_lost run, so open_connections reads 0
        await server.wait_closed()

    async def __aenter__(self) -> DevUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def program(self, model: str, *behaviors: Behavior) -> None:
        """Queue `behaviors` for the next requests naming `model` (the JSON body's `model`,
        or the id of `GET /v1/models/{model}`), one per request, in order. Requests failing
        authentication do not consume them. An empty queue means the normal behaviour."""
        self._programs.setdefault(model, deque()).extend(behaviors)

    # -- used by _Connection

    def _attach(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self.open_connections += 1

    def _detach(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self.open_connections -= 1

    def _next_request_id(self) -> str:
        return "req_" + uuid.uuid4().hex

    async def _answer(
        self, exchange: _Connection, request: RecordedRequest, too_large: bool
    ) -> None:
        if too_large:
            reply: Reply = _error(
                413,
                "The request body is too large.",
                "invalid_request_error",
                None,
                "request_too_large",
            )
            await deliver(exchange, reply, None, None)
            return
        if not self._authorized(request):
            await deliver(exchange, self._unauthorized(request), None, None)
            return
        model = _model_of(request)
        behavior = self._take(model)
        await deliver(exchange, _route(request, self.stream_interval), behavior, model)

    def _take(self, model: str | None) -> Behavior | None:
        queue = self._programs.get(model) if model is not None else None
        return queue.popleft() if queue else None

    def _authorized(self, request: RecordedRequest) -> bool:
        path = request.path.split("?", 1)[0]
        if self.api_key is None or (request.method == "GET" and _is_models_path(path)):
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_key

    def _unauthorized(self, request: RecordedRequest) -> FullReply:
        if "authorization" not in request.headers:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            message = "Incorrect API key provided."
        return _error(401, message, "authentication_error", None, "invalid_api_key")


def _is_models_path(path: str) -> bool:
    return path == "/v1/models" or path.startswith("/v1/models/")


def _model_of(request: RecordedRequest) -> str | None:
    """The model a request is about, for `program()`: body `model` or the models path id."""
    path = request.path.split("?", 1)[0]
    if request.method == "GET" and path.startswith("/v1/models/"):
        return unquote(path.removeprefix("/v1/models/"))
    if isinstance(request.json, dict):
        model = request.json.get("model")
        if isinstance(model, str):
            return model
    return None


async def serve_forever(
    host: str, port: int, *, api_key: str | None = None, stream_interval: float = 0.0
) -> None:
    """Run a `DevUpstream` until cancelled (`python -m bridge dev-upstream`)."""
    async with DevUpstream(host, port, api_key=api_key, stream_interval=stream_interval) as dev:
        print(f"dev upstream listening on {dev.url}", flush=True)
        await asyncio.get_running_loop().create_future()
