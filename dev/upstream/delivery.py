"""The delivery of the development upstream's replies, faithfully or as a fault bends them.

`deliver` sends a `Reply` over an `Exchange` (`dev.upstream.replies`), either as it is or through
one programmed `Behavior` (`dev.upstream.behaviors`). Keeping delivery apart from the HTTP
plumbing (`dev.upstream.server`) lets every fault be described in terms of the small `Exchange`
interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import islice
from typing import Any

from dev.upstream.behaviors import (
    Behavior,
    CutStream,
    Delay,
    Empty,
    Hang,
    Html,
    Huge,
    MalformedJson,
    MalformedSse,
    Redirect,
    Reset,
    SlowBody,
    SlowStream,
    Status,
    StreamError,
    WrongContentType,
)
from dev.upstream.error_bodies import default_error_body, error_envelope, html_page
from dev.upstream.replies import (
    CREATED,
    DONE_EVENT,
    JSON_TYPE,
    SSE_TYPE,
    Exchange,
    FullReply,
    Json,
    Reply,
    StreamReply,
    encode_json,
)

__all__ = ["deliver"]


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
            return FullReply(status, html_page(status), "text/html; charset=utf-8")
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
