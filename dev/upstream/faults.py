"""Programmable faults of the development upstream, and the delivery of its replies.

The development upstream (`dev.upstream.server`) computes a *reply* for every request: a complete
body or a stream of chat chunks. This module sends that reply, either faithfully or through one
programmed `Behavior` that bends it the way real upstreams and the proxies in front of them
misbehave: error statuses, HTML error pages, truncated JSON, streams cut before `[DONE]`, errors
inside a 200 stream, resets, hangs. Keeping delivery apart from the HTTP plumbing lets every
fault be described in terms of a small `Exchange` interface, and keeps both modules short.

Stream-shaped faults (`CutStream`, `StreamError`, `MalformedSse`, `SlowStream`) act on a
streaming chat request; on any other request they do the closest thing, as each one documents.
"""

from __future__ import annotations

import asyncio
import http
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "JSON_TYPE",
    "SSE_TYPE",
    "Behavior",
    "CutStream",
    "Delay",
    "Empty",
    "Exchange",
    "FullReply",
    "Hang",
    "Html",
    "Huge",
    "MalformedJson",
    "MalformedSse",
    "Redirect",
    "Reply",
    "Reset",
    "SlowStream",
    "Status",
    "StreamError",
    "StreamReply",
    "WrongContentType",
    "default_error_body",
    "deliver",
    "encode_json",
    "error_envelope",
]

Json: TypeAlias = dict[str, Any]

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"
DONE_EVENT = b"data: [DONE]\n\n"
CREATED = 1_700_000_000


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the real upstreams send it (no spaces to pad benchmarks)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def error_envelope(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> Json:
    """The OpenAI error envelope: `{"error": {message, type, param, code}}`, nulls kept."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# status -> (type, code, param, message) of the envelope a real upstream would send.
_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str | None, str]] = {
    400: ("invalid_request_error", None, None, "Invalid request."),
    401: ("authentication_error", "invalid_api_key", None, "Incorrect API key provided."),
    403: ("permission_error", None, None, "You are not allowed to use this resource."),
    404: ("invalid_request_error", "model_not_found", "model", "The model does not exist."),
    408: ("timeout_error", "request_timeout", None, "The request timed out."),
    409: ("invalid_request_error", "conflict", None, "The request conflicts with another."),
    413: ("invalid_request_error", "request_too_large", None, "The request is too large."),
    429: (
        "rate_limit_error",
        "rate_limit_exceeded",
        None,
        "Rate limit reached for requests. Please try again later.",
    ),
    499: ("invalid_request_error", "client_closed_request", None, "Client closed request."),
    500: ("server_error", None, None, "The server had an error processing your request."),
    501: ("server_error", "not_implemented", None, "Not implemented."),
    502: ("server_error", "bad_gateway", None, "Bad gateway."),
    503: ("server_error", "service_unavailable", None, "The service is unavailable."),
    504: ("timeout_error", "gateway_timeout", None, "Gateway timeout."),
    529: ("overloaded_error", "overloaded", None, "The upstream is overloaded."),
}


def default_error_body(status: int, model: str | None = None) -> Json:
    """The body a real upstream sends with `status`, for `Status(status)` without a body.

    422 gets the FastAPI/vLLM validation shape (`detail[].loc`) rather than an envelope,
    because that is what servers answering 422 actually send.
    """
    if status == 422:
        loc = ["body", "messages"]
        return {"detail": [{"loc": loc, "msg": "Field required", "type": "missing"}]}
    type_, code, param, message = _DEFAULT_ERRORS.get(
        status,
        ("invalid_request_error" if status < 500 else "server_error", None, None, ""),
    )
    if status == 404 and model is not None:
        message = f"The model `{model}` does not exist or you do not have access to it."
    if not message:
        message = f"HTTP {status} {_phrase(status)}".rstrip()
    return error_envelope(message, type_, param, code)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


# ---------------------------------------------------------------------------------------------
# Replies: what the normal behaviour would send.


@dataclass(frozen=True, slots=True)
class FullReply:
    """A complete response with a body of known length."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A streamed chat completion: chunk objects, each becoming one `data:` event.

    `chunks` may be a lazy iterator (benchmarks stream many thousands of chunks), so it is
    consumed at most once. `completion_id` and `model` let faults shape chunk-like errors.
    """

    completion_id: str
    model: str
    chunks: Iterable[Json]
    interval: float = 0.0
    named: bool = False
    """A Responses API stream: each event named by its `type` (`event: response.created`),
    and no `[DONE]` at the end (the last event says the stream is complete)."""


Reply: TypeAlias = FullReply | StreamReply


class Exchange(Protocol):
    """The response side of one HTTP exchange, as the faults need it.

    The sending methods raise `ConnectionError` once the client has gone; the handler task is
    also cancelled then, so a fault waiting forever (`Hang`) ends with the connection.
    """

    async def send_full(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        """Send a complete response with a `content-length`."""

    async def send_head(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None = None,
    ) -> None:
        """Send the status line and headers; chunked unless `content_length` is given."""

    async def send_data(self, data: bytes) -> None:
        """Send part of the body and wait until the transport can take more."""

    async def finish(self) -> None:
        """End the body properly (the terminating chunk of a chunked body)."""

    async def cut(self) -> None:
        """Deliver what was written, then close the connection without ending the body."""

    def reset(self) -> None:
        """Close the connection at once with a TCP RST, discarding anything unsent."""


# ---------------------------------------------------------------------------------------------
# Behaviours. Each is consumed by exactly one request of the model it was programmed for.


@dataclass(frozen=True)
class Status:
    """Answer with `status` and `body` instead of the normal reply.

    `body`: a dict is sent as JSON, bytes/str as they are (content type JSON unless `headers`
    says otherwise), None means the envelope a real upstream sends with that status (see
    `default_error_body`: 429 is `rate_limit_error` / `rate_limit_exceeded`, 422 the FastAPI
    `detail` list, ...). `headers` are added last, so they can set `retry-after-ms`,
    `retry-after`, `x-should-retry`, or override `content-type` and `x-request-id`.
    """

    status: int
    body: bytes | str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Html:
    """Answer `status` with an nginx-style HTML error page (`text/html`), as a proxy does."""

    status: int


@dataclass(frozen=True)
class Empty:
    """Answer `status` with an empty body (still labelled `application/json`)."""

    status: int


@dataclass(frozen=True)
class MalformedJson:
    """Answer 200 `application/json` with a truncated, unparseable chat completion."""


@dataclass(frozen=True)
class WrongContentType:
    """Answer 200 with a `text/plain` body, even to a streaming request."""


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer, until the client disconnects or the server stops.

    The client's disconnect is counted in `DevUpstream.disconnects`.
    """


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before sending the headers of the normal reply."""

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Close the TCP connection with a RST (SO_LINGER 0), without any response."""


@dataclass(frozen=True)
class CutStream:
    """Send `after` chunks of the stream, then close the connection: no `[DONE]`, no final
    chunk of the chunked encoding. `after` counts `data:` events, the role chunk included.

    On a non-streaming request: send the headers (with the full `content-length`) and the
    first half of the body, then close.
    """

    after: int


@dataclass(frozen=True)
class StreamError:
    """Send `after` chunks, then an error event, then end the body properly (no `[DONE]`).

    Forms: `openai` = `data: {"error": {...}}`; `vercel` = a chunk-shaped object (`id`,
    `object`, `created`, `model`) with `error {code, message, type}`; `event` =
    `event: error` followed by `data: {"error": {...}}`.

    On a non-streaming request: the envelope with the status its `type` implies
    (rate limit 429, invalid request 400, authentication 401, permission 403, overloaded 529,
    anything else 500).
    """

    after: int
    form: Literal["openai", "vercel", "event"] = "openai"
    type: str = "server_error"
    code: str | None = None
    message: str = "The upstream failed while streaming."


@dataclass(frozen=True)
class MalformedSse:
    """Send `after` chunks, then `data: {not json`, then the rest of the stream and `[DONE]`,
    so the malformed event is the only fault. On a non-streaming request: like
    `MalformedJson`."""

    after: int


@dataclass(frozen=True)
class Redirect:
    """Answer `status` (307 by default) with `location`, which may name another origin."""

    location: str
    status: int = 307


@dataclass(frozen=True)
class Huge:
    """Answer 200 with a valid chat completion of about `size` bytes (a giant content string).

    `chunked`: send it without a `content-length`, in 64 KiB pieces, so a client learns the
    size only by reading (a limit on the announced length alone would miss it).

    On a streaming request: the role chunk, one content chunk of about `size` bytes, the
    final chunk and `[DONE]`.
    """

    size: int
    chunked: bool = False


@dataclass(frozen=True)
class SlowStream:
    """Stream normally but sleep `interval` seconds between events.

    On a non-streaming request: sleep `interval` once, then answer normally.
    """

    interval: float


@dataclass(frozen=True)
class SlowBody:
    """Answer a non-streaming request with its normal body in `pieces` parts, sleeping
    `interval` seconds before each: every read is answered in time, yet the whole takes
    `pieces * interval` seconds (an upstream that dribbles). Streams: like `SlowStream`.
    """

    interval: float
    pieces: int = 8


Behavior: TypeAlias = (
    Status
    | Html
    | Empty
    | MalformedJson
    | WrongContentType
    | Hang
    | Delay
    | Reset
    | CutStream
    | StreamError
    | MalformedSse
    | Redirect
    | Huge
    | SlowStream
    | SlowBody
)

# ---------------------------------------------------------------------------------------------
# Delivery.


async def deliver(
    exchange: Exchange, reply: Reply, behavior: Behavior | None, model: str | None
) -> None:
    """Send `reply` as is, or as `behavior` bends it. `model` names the request's model."""
    match behavior:
        case None:
            await _send(exchange, reply)
        case Delay(seconds):
            await asyncio.sleep(seconds)
            await _send(exchange, reply)
        case Hang():
            await asyncio.get_running_loop().create_future()
        case Reset():
            exchange.reset()
        case Status() | Html() | Empty() | MalformedJson() | WrongContentType() | Redirect():
            await _send(exchange, _canned(behavior, model))
        case Huge(size, chunked):
            await _huge(exchange, reply, size, model, chunked)
        case SlowStream(interval):
            await _slow(exchange, reply, interval)
        case SlowBody(interval, pieces):
            await _slow_body(exchange, reply, interval, pieces)
        case CutStream(after):
            await _cut(exchange, reply, after)
        case StreamError():
            await _stream_error(exchange, reply, behavior)
        case MalformedSse(after):
            await _malformed_sse(exchange, reply, after)


async def _send(exchange: Exchange, reply: Reply) -> None:
    if isinstance(reply, FullReply):
        await exchange.send_full(reply.status, reply.body, reply.content_type, reply.headers)
        return
    await _stream(exchange, reply.chunks, reply.interval, named=reply.named)
    if not reply.named:
        await exchange.send_data(DONE_EVENT)
    await exchange.finish()


async def _stream(
    exchange: Exchange,
    chunks: Iterable[Json],
    interval: float,
    limit: int | None = None,
    *,
    named: bool = False,
) -> int:
    """Send the head and the chunks (at most `limit`), sleeping between events; count them.

    The sleep happens even at interval 0: it yields to the loop, so thousands of concurrent
    streams progress fairly and a disconnect is noticed between chunks.
    """
    await exchange.send_head(200, SSE_TYPE, {"cache-control": "no-cache"})
    sent = 0
    # islice, not a break: MalformedSse goes on with the same iterator afterwards.
    for chunk in chunks if limit is None else islice(chunks, max(0, limit)):
        if sent:
            await asyncio.sleep(interval)
        await exchange.send_data(_event(chunk, named))
        sent += 1
    await asyncio.sleep(interval)
    return sent


def _event(chunk: Json, named: bool) -> bytes:
    """One server-sent event; a named one (Responses API) says its `type` on an `event:` line."""
    data = b"data: " + encode_json(chunk) + b"\n\n"
    kind = chunk.get("type") if named else None
    return b"event: " + kind.encode() + b"\n" + data if isinstance(kind, str) else data


def _canned(behavior: Behavior, model: str | None) -> FullReply:
    """The fixed response of the behaviours that ignore the normal reply."""
    match behavior:
        case Status(status, body, headers):
            content_type = {k.lower(): v for k, v in headers.items()}.get("content-type")
            if body is None:
                body = default_error_body(status, model)
            data = body if isinstance(body, bytes) else _to_bytes(body)
            return FullReply(status, data, content_type or JSON_TYPE, headers)
        case Html(status):
            return FullReply(status, _html_page(status), "text/html; charset=utf-8")
        case Empty(status):
            return FullReply(status, b"")
        case MalformedJson():
            return FullReply(200, b'{"id":"chatcmpl-dev","object":"chat.completion","choices":[{')
        case WrongContentType():
            return FullReply(200, b"This is not JSON.\n", "text/plain; charset=utf-8")
        case Redirect(location, status):
            return FullReply(status, b"", "text/plain", {"location": location})
    raise AssertionError(f"not a canned behaviour: {behavior!r}")


def _to_bytes(body: str | Mapping[str, Any]) -> bytes:
    return body.encode() if isinstance(body, str) else encode_json(dict(body))


def _html_page(status: int) -> bytes:
    title = f"{status} {_phrase(status)}".rstrip()
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


async def _huge(
    exchange: Exchange, reply: Reply, size: int, model: str | None, chunked: bool
) -> None:
    name = model or "dev/huge"
    if isinstance(reply, StreamReply):
        chunks = _huge_chunks(reply.completion_id, reply.model, size)
        await _send(exchange, StreamReply(reply.completion_id, reply.model, chunks))
        return
    completion: Json = {
        "id": "chatcmpl-huge",
        "object": "chat.completion",
        "created": CREATED,
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "", "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
    }
    padding = max(0, size - len(encode_json(completion)))
    completion["choices"][0]["message"]["content"] = "x" * padding
    body = encode_json(completion)
    if not chunked:
        await _send(exchange, FullReply(200, body))
        return
    await exchange.send_head(200, JSON_TYPE, {})
    for start in range(0, len(body), _PIECE):
        await exchange.send_data(body[start : start + _PIECE])
    await exchange.finish()


_PIECE = 64 * 1024


def _huge_chunks(completion_id: str, model: str, size: int) -> list[Json]:
    def chunk(delta: Json, finish: str | None = None) -> Json:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "x" * max(0, size)}),
        chunk({}, "length"),
    ]


async def _slow(exchange: Exchange, reply: Reply, interval: float) -> None:
    if isinstance(reply, StreamReply):
        await _send(exchange, replace(reply, interval=interval))
        return
    await asyncio.sleep(interval)
    await _send(exchange, reply)


async def _slow_body(exchange: Exchange, reply: Reply, interval: float, pieces: int) -> None:
    if isinstance(reply, StreamReply):
        await _slow(exchange, reply, interval)
        return
    body = reply.body
    await exchange.send_head(reply.status, reply.content_type, reply.headers, len(body))
    size = -(-len(body) // max(1, pieces))
    for start in range(0, len(body), size):
        await asyncio.sleep(interval)
        await exchange.send_data(body[start : start + size])
    await exchange.finish()


async def _cut(exchange: Exchange, reply: Reply, after: int) -> None:
    if isinstance(reply, FullReply):
        await exchange.send_head(reply.status, reply.content_type, reply.headers, len(reply.body))
        await exchange.send_data(reply.body[: len(reply.body) // 2])
    else:
        await _stream(exchange, reply.chunks, reply.interval, limit=after, named=reply.named)
    await exchange.cut()


_STATUS_OF_TYPE = {
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "overloaded_error": 529,
}


async def _stream_error(exchange: Exchange, reply: Reply, fault: StreamError) -> None:
    envelope = error_envelope(fault.message, fault.type, None, fault.code)
    if isinstance(reply, FullReply):
        status = _STATUS_OF_TYPE.get(fault.type, 500)
        await _send(exchange, FullReply(status, encode_json(envelope)))
        return
    await _stream(exchange, reply.chunks, reply.interval, limit=fault.after, named=reply.named)
    await exchange.send_data(_error_event(fault, envelope, reply))
    await exchange.finish()


def _error_event(fault: StreamError, envelope: Json, reply: StreamReply) -> bytes:
    if reply.named:  # the Responses API's flat error event
        flat = {"type": "error", "code": fault.code or fault.type, "message": fault.message}
        return b"event: error\ndata: " + encode_json({**flat, "param": None}) + b"\n\n"
    if fault.form == "event":
        return b"event: error\ndata: " + encode_json(envelope) + b"\n\n"
    if fault.form == "vercel":
        error = {"code": fault.code, "message": fault.message, "type": fault.type}
        chunk = {
            "id": reply.completion_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": reply.model,
            "error": error,
        }
        return b"data: " + encode_json(chunk) + b"\n\n"
    return b"data: " + encode_json(envelope) + b"\n\n"


async def _malformed_sse(exchange: Exchange, reply: Reply, after: int) -> None:
    if isinstance(reply, FullReply):
        await _send(exchange, _canned(MalformedJson(), None))
        return
    chunks = iter(reply.chunks)
    await _stream(exchange, chunks, reply.interval, limit=after, named=reply.named)
    await exchange.send_data(b"data: {not json\n\n")
    await _stream_rest(exchange, chunks, reply.interval, named=reply.named)


async def _stream_rest(
    exchange: Exchange, chunks: Iterable[Json], interval: float, *, named: bool = False
) -> None:
    """The remainder of a stream whose head is already sent, then `[DONE]` (chat)."""
    for chunk in chunks:
        await asyncio.sleep(interval)
        await exchange.send_data(_event(chunk, named))
    if not named:
        await exchange.send_data(DONE_EVENT)
    await exchange.finish()
