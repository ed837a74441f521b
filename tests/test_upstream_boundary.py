"""The upstream boundary against what real and hostile servers do (issues 11 and 12).

Each test starts the real bridge and a real upstream on loopback (the development upstream,
or `RawServer` writing exact bytes), calls it through a real gRPC channel, and asserts what
the caller sees and what reached the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import os
import ssl
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import certifi
import grpc
import pproxy
import pytest
import trustme
from aigateway.v1 import chat_pb2
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from google.rpc import error_details_pb2
from yarl import URL

from bridge.config import Config, ConfigError
from bridge.server import assembly as server
from bridge.upstream import http
from bridge.upstream.client import Upstream
from dev.upstream.server import DevUpstream, SlowStream, Status
from tests import rawgrpc, richstatus
from tests.conftest import DEV_KEY, bridge_config, serving, stubs_for
from tests.rawserver import RawServer, answering

Code = grpc.StatusCode
MODEL = "openai/gpt-4o-mini"
ROOT = Path(__file__).resolve().parent.parent


def chat(**fields: Any) -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")], **fields
    )


def stream_chat() -> chat_pb2.StreamChatCompletionRequest:
    return chat_pb2.StreamChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
    )


COMPLETION = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
    }
).encode()


def raw_ok(body: bytes = COMPLETION, eol: bytes = b"\r\n", *extra: bytes) -> bytes:
    head = [
        b"HTTP/1.1 200 OK",
        b"content-type: application/json",
        b"content-length: %d" % len(body),
    ]
    return eol.join([*head, *extra, b"", b""]) + body


@pytest.fixture
async def open_upstream() -> AsyncIterator[DevUpstream]:
    """A development upstream that accepts any key, so that a test can choose the key the
    bridge or the caller sends and have the programmed answer echo it."""
    async with DevUpstream(api_key=None) as dev:
        yield dev


@pytest.fixture
async def raw_bridge(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Factory: a bridge in front of a RawServer, closed at the end of the test."""
    running: list[server.Bridge] = []

    async def start(raw: RawServer, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "upstream_url": raw.url,
            "api_key": DEV_KEY,
            "initial_backoff": 0.01,
            "max_backoff": 0.02,
            **overrides,
        }
        bridge = await server.start(Config.load(environ={}, **values))
        running.append(bridge)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}")
        return stubs_for(channel)

    yield start
    for bridge in running:
        await bridge.stop(0)


async def unary_error(stubs: Any, **kwargs: Any) -> richstatus.RichStatus:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(chat(), **kwargs)
    return richstatus.of_error(caught.value)


# ------------------------------------------------------------------ header injection


@pytest.mark.parametrize("key", ["authorization", "x-title", "http-referer", "x-request-id"])
@pytest.mark.parametrize(
    "value",
    [
        b"a\r\nContent-Length: 0\r\n\r\nDELETE /v1/admin HTTP/1.1\r\nHost: x",
        b"Bearer ok\nx-evil: 1",
        b"nul\x00byte",
        b"bell\x07",
        "caf\u00e9".encode(),
        b"\xff\xfe",
    ],
)
async def test_a_forwarded_value_that_could_break_the_head_is_invalid_argument(
    upstream: DevUpstream, key: str, value: bytes
) -> None:
    # Sent with raw HTTP/2 frames: grpc's client libraries refuse such values, attackers don't.
    running = await server.start(bridge_config(upstream))
    try:
        seen = await rawgrpc.unary(
            running.port,
            "/aigateway.v1.ChatService/CreateChatCompletion",
            chat(),
            [(key.encode(), value)],
        )
    finally:
        await running.stop(0)
    # gRPC core lets such values through to the servicer; the bridge refuses them before
    # anything reaches the upstream, naming the key.
    assert not [r for r in upstream.requests if r.path.startswith("/v1/chat")]
    assert seen.get(b"grpc-status") == b"3", seen
    assert f"metadata '{key}'".encode() in seen.get(b"grpc-message", b"")


def test_a_configured_credential_with_a_newline_is_refused_at_start() -> None:
    for bad in ("sk-test-key\n", "sk-test\r\nx-evil: 1", " sk-padded", "sk-\u00e9t\u00e9-key"):
        with pytest.raises(ConfigError, match="credential"):
            Config.load(environ={"AI_GATEWAY_API_KEY": bad})
    with pytest.raises(ConfigError, match="oidc"):
        Config.load(environ={"VERCEL_OIDC_TOKEN": "token\n"})


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://example.com/v1?api-version=2024-10-21", "query string"),
        ("https://example.com/v1#frag", "#fragment"),
        ("https://user:hunter2pass@example.com/v1", "user:password"),
        ("ftp://example.com/v1", "http(s) URL"),
        ("https://example.com:99999/v1", "not a valid URL"),
    ],
)
def test_an_upstream_url_that_cannot_be_a_base_is_refused(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(environ={"BRIDGE_UPSTREAM_URL": url})
    assert words in str(caught.value)
    assert "hunter2pass" not in str(caught.value)


# ------------------------------------------------------------------ the key echoed back

ECHOES = [
    # (status, body template): {key} is the raw key, {json_key} its JSON-escaped form.
    (401, '{{"error": {{"message": "Incorrect API key provided: {key}", "type": "invalid"}}}}'),
    (400, '{{"error": {{"message": "bad", "param": "{key}", "code": "{key}"}}}}'),
    (401, '{{"error": {{"message": "key \\"{json_key}\\" refused"}}}}'),
    (200, '{{"error": {{"message": "echo {key}", "type": "server_error"}}}}'),
    (200, '{{"error": "key {key} is not allowed"}}'),
    (500, "<html>your key {key} was rejected</html>"),
]


@pytest.mark.parametrize("whose", ["bridge", "caller"])
@pytest.mark.parametrize("key", ["sk-dev-test-key", "vck_0123456789abcdefghij", 'k/e"y+=9xyz'])
@pytest.mark.parametrize(("status", "template"), ECHOES)
async def test_an_echoed_credential_never_reaches_the_caller(
    open_upstream: DevUpstream, whose: str, key: str, status: int, template: str
) -> None:
    upstream = open_upstream
    escaped = json.dumps(key)[1:-1]
    body = template.format(key=escaped if template.startswith("{") else key, json_key=escaped)
    upstream.program(MODEL, Status(status, body.encode()))
    bridge_key = key if whose == "bridge" else DEV_KEY
    metadata = (("authorization", f"Bearer {key}"),) if whose == "caller" else ()
    async with serving(upstream, api_key=bridge_key, max_attempts=1) as stubs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.chat.CreateChatCompletion(chat(), metadata=metadata, timeout=10)
    error = caught.value
    seen = " ".join(
        [
            error.details() or "",
            repr(richstatus.of_error(error).details),
            repr(error.trailing_metadata()),
        ]
    )
    assert key not in seen
    assert escaped not in seen
    assert key.upper().replace("-", "_") not in seen  # nor as an ErrorInfo reason


async def test_an_echoed_credential_in_a_stream_error_is_redacted(upstream: DevUpstream) -> None:
    from dev.upstream.server import StreamError

    upstream.program(MODEL, StreamError(after=1, message=f"key {DEV_KEY} revoked"))
    async with serving(upstream) as stubs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stubs.chat.StreamChatCompletion(stream_chat()):
                pass
    assert DEV_KEY not in (caught.value.details() or "")
    assert "[redacted]" in (caught.value.details() or "")


# ------------------------------------------------------------------ what real servers send


async def test_a_head_with_bare_lf_line_ends_is_read(raw_bridge: Any) -> None:
    async with RawServer(answering(raw_ok(eol=b"\n"))) as raw:
        stubs = await raw_bridge(raw)
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices[0].message.content == "hello"


async def test_an_obs_folded_header_is_read(raw_bridge: Any) -> None:
    folded = raw_ok(COMPLETION, b"\r\n", b"x-folded: first", b" second")
    async with RawServer(answering(folded)) as raw:
        stubs = await raw_bridge(raw)
        try:
            reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
        except grpc.aio.AioRpcError as error:
            # Refusing obs-fold is allowed (RFC 9112 section 5.2); hanging or resetting is not.
            status = richstatus.of_error(error)
            assert (status.code, status.info.reason) == (
                Code.UNAVAILABLE,
                "UPSTREAM_PROTOCOL_ERROR",
            )
        else:
            assert reply.choices[0].message.content == "hello"


async def test_upstream_json_nested_too_deep_is_malformed(raw_bridge: Any) -> None:
    deep = b'{"id": "x", "choices": [], "extra": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    async with RawServer(answering(raw_ok(deep))) as raw:
        stubs = await raw_bridge(raw)
        status = await unary_error(stubs, timeout=10)
    assert (status.code, status.info.reason) == (Code.INTERNAL, "MALFORMED_RESPONSE")


MIXED_CASE = (
    b"X-Request-ID: req-Mixed-1",
    b"X-RateLimit-Remaining-Requests: 59",
    b"OpenAI-Processing-MS: 12",
    b"X-Should-Retry: false",
)
LOWER_CASED = [
    ("x-request-id", "req-Mixed-1"),
    ("x-ratelimit-remaining-requests", "59"),
    ("openai-processing-ms", "12"),
    ("x-should-retry", "false"),
]


def returned(pairs: Any) -> list[tuple[str, str]]:
    return [(key, value) for key, value in pairs or () if key in dict(LOWER_CASED)]


async def test_returned_header_names_in_any_case_are_lower_case_metadata(
    raw_bridge: Any,
) -> None:
    # HTTP field names are case-insensitive and aiohttp keeps them as sent; gRPC metadata
    # keys are lower case (and grpc refuses upper case ones).
    async with RawServer(answering(raw_ok(COMPLETION, b"\r\n", *MIXED_CASE))) as raw:
        stubs = await raw_bridge(raw)
        call = stubs.chat.CreateChatCompletion(chat(), timeout=10)
        reply = await call
        initial = await call.initial_metadata()
    assert reply.choices[0].message.content == "hello"
    assert returned(initial) == LOWER_CASED


async def test_returned_header_names_of_an_error_are_lower_case_metadata(
    raw_bridge: Any,
) -> None:
    body = b'{"error": {"message": "slow down", "type": "requests"}}'
    answer = (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        + b"".join(line + b"\r\n" for line in MIXED_CASE)
        + b"Retry-After: 0\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        call = stubs.chat.CreateChatCompletion(chat(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        trailing = await call.trailing_metadata()
    status = richstatus.of_error(caught.value)
    assert status.code is Code.RESOURCE_EXHAUSTED
    assert status.one(error_details_pb2.RequestInfo).request_id == "req-Mixed-1"
    assert returned(trailing) == LOWER_CASED
    assert ("retry-after", "0") in [tuple(pair) for pair in trailing or ()]


async def test_returned_header_names_of_a_stream_are_lower_case_metadata(
    raw_bridge: Any,
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        + b"".join(line + b"\r\n" for line in MIXED_CASE)
        + b"Content-Length: %d\r\n\r\n" % len(SSE_BODY)
        + SSE_BODY
    )
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw)
        call = stubs.chat.StreamChatCompletion(stream_chat(), timeout=10)
        chunks = [chunk async for chunk in call]
        initial = await call.initial_metadata()
    assert len(chunks) == 1
    assert returned(initial) == LOWER_CASED


# ------------------------------------------------------------------ content codings

CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
)
SSE_BODY = CHUNK + b"data: [DONE]\n\n"


def encoded(body: bytes, coding: bytes, content_type: bytes = b"application/json") -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-type: " + content_type, b"content-encoding: " + coding]
    return b"\r\n".join([*head, b"content-length: %d" % len(body), b"", b""]) + body


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        (b"gzip", gzip.compress(COMPLETION)),
        (b"GZip", gzip.compress(COMPLETION)),
        (b"deflate", zlib.compress(COMPLETION)),
        (b"deflate", zlib.compress(COMPLETION)[2:-4]),  # raw deflate, as some servers send
        (b"identity", COMPLETION),
    ],
    ids=["gzip", "gzip-odd-case", "deflate", "deflate-raw", "identity"],
)
async def test_a_content_coded_body_is_decoded(raw_bridge: Any, coding: bytes, body: bytes) -> None:
    async with RawServer(answering(encoded(body, coding))) as raw:
        stubs = await raw_bridge(raw)
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices[0].message.content == "hello"
    [(_, headers, _)] = raw.requests
    accepted = {value.strip() for value in headers[b"accept-encoding"].split(b",")}
    # Only the codings the bridge can decode are asked for.
    assert accepted <= {b"gzip", b"deflate", b"br", b"zstd"}
    assert {b"gzip", b"deflate"} <= accepted


GZIP = gzip.compress(COMPLETION)


@pytest.mark.parametrize(
    ("coding", "body", "words"),
    [
        (b"gzip", b"\x1f\x8b\x08\x00not gzip at all, not at all", "gzip"),
        (b"gzip", COMPLETION, "gzip"),  # says gzip, is not
        (b"gzip", GZIP[:-8] + b"\0\0\0\0" + GZIP[-4:], "gzip"),  # a wrong CRC
        (b"deflate", zlib.compress(COMPLETION)[:-12], "deflate"),  # cut short
        # Codings whose decoder is not installed (never asked for; sent anyway). aiohttp
        # fails these with the head, before the status is handed on.
        pytest.param(
            b"br",
            b"\x0b\x02\x80{}\x03",
            "brotli (br)",
            marks=pytest.mark.skipif(HAS_BROTLI, reason="a brotli decoder is installed"),
        ),
        pytest.param(
            b"zstd",
            b"(\xb5/\xfd\x00X\x11\x00\x00{}",
            "zstandard (zstd)",
            marks=pytest.mark.skipif(HAS_ZSTD, reason="a zstd decoder is installed"),
        ),
    ],
    ids=["corrupt-gzip", "not-gzip", "gzip-bad-crc", "deflate-cut", "br", "zstd"],
)
async def test_a_body_that_does_not_decode_is_malformed_and_not_retried(
    raw_bridge: Any, coding: bytes, body: bytes, words: str
) -> None:
    # A 200 may have been billed: never sent again, whatever stage the decoding failed at.
    answer = encoded(body, coding)
    async with RawServer(answering(answer, answer, answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=3)
        status = await unary_error(stubs, timeout=10)
    assert (status.code, status.info.reason) == (Code.INTERNAL, "MALFORMED_RESPONSE")
    assert f"content-encoding: {words}" in status.message
    assert "400" not in status.message and "message=" not in status.message
    assert len(raw.requests) == 1


async def gzip_stream_then_garbage(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    coder = zlib.compressobj(wbits=31)  # gzip
    first = coder.compress(CHUNK) + coder.flush(zlib.Z_SYNC_FLUSH)
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(first), first)
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    garbage = b"\xff" * 64
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(garbage), garbage))
    await writer.drain()
    await reader.read()


async def test_a_stream_whose_gzip_goes_bad_ends_malformed_after_its_events(
    raw_bridge: Any,
) -> None:
    async with RawServer(gzip_stream_then_garbage) as raw:
        stubs = await raw_bridge(raw)
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for chunk in stubs.chat.StreamChatCompletion(stream_chat(), timeout=10):
                received.append(chunk)
    status = richstatus.of_error(caught.value)
    assert len(received) == 1
    assert (status.code, status.info.reason) == (Code.INTERNAL, "MALFORMED_RESPONSE")
    assert "content-encoding: gzip" in status.message
    assert len(raw.requests) == 1


# ------------------------------------------------------------------ bounds


async def endless_continue(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    while True:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)


async def interim_flood(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    with contextlib.suppress(ConnectionError):
        while True:  # as fast as the connection takes them, until the bridge hangs up
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" * 64)
            await writer.drain()


@pytest.mark.parametrize("interim", [1, 16])
async def test_a_few_interim_responses_before_the_answer_are_fine(
    raw_bridge: Any, interim: int
) -> None:
    answer = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" * interim + raw_ok()
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices


async def test_a_flood_of_interim_responses_is_refused_at_once(raw_bridge: Any) -> None:
    # aiohttp reads 1xx answers in a loop without a bound: a flood held a core until the head
    # timeout (here 60 s; the caller's deadline 30 s). The bridge refuses past 16.
    async with RawServer(interim_flood) as raw:
        stubs = await raw_bridge(raw, max_attempts=1, upstream_timeout=60)
        status = await unary_error(stubs, timeout=30)
    assert (status.code, status.info.reason) == (Code.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert "interim" in status.message


async def header_trickle(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for n in range(10_000):
        writer.write(b"x-trickle-%d: y\r\n" % n)
        await writer.drain()
        await asyncio.sleep(0.05)


async def comment_trickle(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
    while True:
        writer.write(b": keep-alive\n\n")
        await writer.drain()
        await asyncio.sleep(0.05)


async def endless_trailers(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    chunk = b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}'
    event = b"data: " + chunk + b"\n\n"
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n" % (len(event), event)
    )
    for n in range(10_000):
        writer.write(b"x-trailer-%d: y\r\n" % n)
        await writer.drain()
        await asyncio.sleep(0.05)


async def test_endless_trailers_do_not_hold_a_stream_forever(raw_bridge: Any) -> None:
    async with RawServer(endless_trailers) as raw:
        stubs = await raw_bridge(raw, upstream_timeout=0.5)
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stubs.chat.StreamChatCompletion(stream_chat()):
                received += 1
    status = richstatus.of_error(caught.value)
    assert received == 1
    assert status.code in (Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE), status


@pytest.mark.parametrize("handler", [endless_continue, header_trickle], ids=["1xx", "trickle"])
async def test_a_response_head_that_never_ends_is_bounded(raw_bridge: Any, handler: Any) -> None:
    async with RawServer(handler) as raw:
        stubs = await raw_bridge(raw, upstream_timeout=0.5, max_attempts=1)
        status = await unary_error(stubs)
    assert (status.code, status.info.reason) == (Code.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")


def _raw(status: bytes, body: bytes, *headers: bytes, kind: bytes = b"application/json") -> bytes:
    head = [b"HTTP/1.1 " + status, b"content-type: " + kind, b"content-length: %d" % len(body)]
    return b"\r\n".join([*head, *headers, b"", b""]) + body


_SURROGATE_400 = (
    b'{"error":{"message":"bad \\ud800 x","type":"invalid_request_error","param":"\\udc00"}}'
)
_SURROGATE_EVENT = b'data: {"error":{"message":"x\\ud800","type":"server_error"}}\n\n'


@pytest.mark.parametrize(
    ("answer", "streamed", "code"),
    [
        (_raw(b"302 Found", b"", b"location: http://ev\xffil/x"), False, Code.INTERNAL),
        (_raw(b"400 Bad", _SURROGATE_400), False, Code.INVALID_ARGUMENT),
        (_raw(b"400 Bad", _SURROGATE_400), True, Code.INVALID_ARGUMENT),
        (_raw(b"200 OK", _SURROGATE_EVENT, kind=b"text/event-stream"), True, Code.INTERNAL),
    ],
    ids=["location-not-utf8", "envelope-surrogates", "envelope-surrogates-stream", "event"],
)
async def test_text_that_is_not_unicode_is_replaced_not_unknown(
    raw_bridge: Any, answer: bytes, streamed: bool, code: grpc.StatusCode
) -> None:
    # A header byte that is not UTF-8, or a lone UTF-16 surrogate in JSON, cannot be in a
    # status message or a protobuf string: it becomes U+FFFD (it was UNKNOWN, with a
    # UnicodeEncodeError traceback).
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streamed:
                async for _ in stubs.chat.StreamChatCompletion(stream_chat(), timeout=10):
                    pass
            else:
                await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    status = richstatus.of_error(caught.value)
    assert status.code == code, status
    assert "Unicode" not in status.message and "Unexpected" not in status.message


@pytest.mark.parametrize("status", [b"099 Weird", b"000 Zero", b"101 Switching Protocols"])
async def test_a_status_that_is_not_final_is_a_protocol_error(
    raw_bridge: Any, status: bytes
) -> None:
    # Not a success, whatever aiohttp hands on below 200 (it was answered OK, empty).
    async with RawServer(answering(_raw(status, b"{}"))) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        error = await unary_error(stubs, timeout=10)
    assert (error.code, error.info.reason) == (Code.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert status.split()[0].decode() in error.message


async def test_an_error_body_over_the_limit_keeps_the_status(raw_bridge: Any) -> None:
    # A 500 whose body is too large to read is still the upstream's 500, not the caller's
    # RESOURCE_EXHAUSTED.
    answer = _raw(b"500 Internal Server Error", b"x" * 5000)
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1, max_response_bytes=1000)
        error = await unary_error(stubs, timeout=10)
    assert error.code == Code.INTERNAL, error
    assert "500" in error.message
    assert "not read" in error.message and "empty body" not in error.message


async def test_a_407_without_a_proxy_is_the_upstreams_answer(
    raw_bridge: Any, clean_env: pytest.MonkeyPatch
) -> None:
    # With no proxy configured, a 407 comes from the upstream itself: mapped as any 4xx,
    # not blamed on proxy variables nobody set.
    answer = _raw(b"407 Proxy Authentication Required", b'{"error":{"message":"who?"}}')
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        error = await unary_error(stubs, timeout=10)
    assert error.code == Code.INVALID_ARGUMENT, error
    assert "PROXY" not in error.message


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-ty", "closed"),
        (_raw(b"200 OK", COMPLETION)[:-30], "Not enough data"),
        (b"HTTP/1.1 2oo OK\r\ncontent-length: 2\r\n\r\n{}", "2oo"),
    ],
    ids=["head-cut", "body-cut", "bad-status-line"],
)
async def test_a_cut_response_is_said_without_python_reprs(
    raw_bridge: Any, answer: bytes, said: str
) -> None:
    async def cut(server_: RawServer, reader: Any, writer: asyncio.StreamWriter) -> None:
        await server_.read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with RawServer(cut) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        error = await unary_error(stubs, timeout=10)
    assert said in error.message, error.message
    assert "<" not in error.message and "RawResponseMessage" not in error.message, error.message
    assert "b'" not in error.message, error.message


@pytest.mark.parametrize("value", ["Bearer ", "Bearer", "basic   ", " "])
async def test_an_authorization_without_a_key_is_refused(upstream: DevUpstream, value: str) -> None:
    async with serving(upstream) as stubs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.chat.CreateChatCompletion(
                chat(), metadata=(("authorization", value),), timeout=10
            )
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert "authorization" in (caught.value.details() or "")
    assert not [r for r in upstream.requests if r.path == "/v1/chat/completions"]


_STALLED_ERROR = (
    b"HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n{"
)


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("answer", [raw_ok()[:-20], _STALLED_ERROR], ids=["200", "500"])
async def test_a_body_that_stalls_under_a_caller_deadline_is_upstream_timeout(
    raw_bridge: Any, streamed: bool, answer: bytes
) -> None:
    # The caller's deadline (10 s) is longer than --upstream-timeout (0.5 s): the silence
    # in the body is the upstream's timeout, said as such (it was UNKNOWN, with aiohttp's
    # class name, when aiohttp's own read timeout met the deadline's code path).
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, upstream_timeout=0.5, max_attempts=1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streamed:
                async for _ in stubs.chat.StreamChatCompletion(stream_chat(), timeout=10):
                    pass
            else:
                await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    status = richstatus.of_error(caught.value)
    assert (status.code, status.info.reason) == (Code.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
    assert "aiohttp" not in status.message
    assert "--upstream-timeout" in status.message


async def test_comment_keep_alives_do_not_hold_a_stream_forever(raw_bridge: Any) -> None:
    async with RawServer(comment_trickle) as raw:
        stubs = await raw_bridge(raw, upstream_timeout=0.5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stubs.chat.StreamChatCompletion(stream_chat()):
                pass
    status = richstatus.of_error(caught.value)
    assert (status.code, status.info.reason) == (Code.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
    assert "--upstream-timeout" in status.message
    assert len(raw.requests) == 1  # it answered 200: never sent again


async def test_waiting_for_a_pooled_connection_is_bounded_and_named(upstream: DevUpstream) -> None:
    upstream.program(MODEL, SlowStream(interval=0.5))
    async with serving(upstream, max_connections=1, connect_timeout=0.3) as stubs:
        holder = stubs.chat.StreamChatCompletion(stream_chat())
        await holder.read()  # the one connection is now busy
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.chat.CreateChatCompletion(chat())
        holder.cancel()
    status = richstatus.of_error(caught.value)
    assert (status.code, status.info.reason) == (Code.UNAVAILABLE, "UPSTREAM_POOL_EXHAUSTED")
    assert "--max-connections" in status.message


# ------------------------------------------------------------------ TLS and proxies


def serving_context(ca: trustme.CA) -> ssl.SSLContext:
    """A loopback server's TLS context, with a certificate for 127.0.0.1 issued by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def trusted_ca(env: pytest.MonkeyPatch, folder: Path) -> trustme.CA:
    """A new CA, the one the bridge trusts through SSL_CERT_FILE (written into `folder`)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    env.setenv("SSL_CERT_FILE", str(folder / "ca.pem"))
    return ca


async def test_an_untrusted_certificate_is_said_once_and_not_retried(raw_bridge: Any) -> None:
    context = serving_context(trustme.CA())
    async with RawServer(answering(raw_ok()), context) as raw:
        stubs = await raw_bridge(raw, max_attempts=3)
        status = await unary_error(stubs, timeout=10)
    assert (status.code, status.info.reason) == (Code.UNAVAILABLE, "UPSTREAM_CERTIFICATE_UNTRUSTED")
    assert "certificate" in status.message
    assert raw.connections == 1


@pytest.fixture
async def proxy() -> AsyncIterator[list[str]]:
    """A real HTTP proxy (pproxy) on loopback; yields the log of what it relayed."""
    relayed: list[str] = []
    listener = await pproxy.Server("http://127.0.0.1:0").start_server(
        {"rserver": [], "verbose": lambda line: relayed.append(str(line))}
    )
    port = listener.sockets[0].getsockname()[1]
    relayed.append(f"http://127.0.0.1:{port}")
    try:
        yield relayed
    finally:
        listener.close()


async def test_http_proxy_from_the_environment_is_used(
    upstream: DevUpstream, proxy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = proxy.pop(0)
    monkeypatch.setenv("HTTP_PROXY", address)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with serving(upstream) as stubs:
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices
    assert any("127.0.0.1" in line for line in proxy), proxy


async def test_no_proxy_sends_directly(
    upstream: DevUpstream, proxy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.pop(0))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with serving(upstream) as stubs:
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices
    assert proxy == []


# ------------------------------------------------------------------ the environment, read at start


CLEANED = ("REQUEST_METHOD", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy, CGI or CA variable from the machine running the tests (this one sets
    SSL_CERT_FILE and SSL_CERT_DIR); the test sets its own."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in CLEANED:
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "http://api.example/v1", None),
        ({"HTTP_PROXY": "http://p:3128"}, "http://api.example/v1", "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128"}, "https://api.example/v1", None),
        ({"HTTPS_PROXY": "http://s:3128"}, "https://api.example/v1", "http://s:3128"),
        ({"HTTPS_PROXY": "http://s:3128"}, "http://api.example/v1", None),
        ({"ALL_PROXY": "http://a:3128"}, "http://api.example/v1", "http://a:3128"),
        ({"ALL_PROXY": "http://a:3128"}, "https://api.example/v1", "http://a:3128"),
        ({"all_proxy": "http://a:3128"}, "https://api.example/v1", "http://a:3128"),
        ({"HTTPS_PROXY": "http://s:1", "ALL_PROXY": "http://a:2"}, "https://x/v1", "http://s:1"),
        ({"https_proxy": "http://s:3128"}, "https://api.example/v1", "http://s:3128"),
        ({"http_proxy": "http://lo:1", "HTTP_PROXY": "http://UP:2"}, "http://x/v1", "http://lo:1"),
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://x/v1", "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "https://p:443"}, "https://x/v1", "https://p:443"),
        # NO_PROXY, either case: a host, a domain suffix, a host with the port, every host.
        ({"ALL_PROXY": "http://a:1", "NO_PROXY": "api.example"}, "https://api.example/v1", None),
        ({"ALL_PROXY": "http://a:1", "no_proxy": "api.example"}, "https://api.example/v1", None),
        ({"ALL_PROXY": "http://a:1", "NO_PROXY": ".example"}, "https://api.example/v1", None),
        ({"ALL_PROXY": "http://a:1", "NO_PROXY": "x:8443"}, "https://x:8443/v1", None),
        ({"ALL_PROXY": "http://a:1", "NO_PROXY": "*"}, "https://api.example/v1", None),
        ({"ALL_PROXY": "http://a:1", "NO_PROXY": "other.example"}, "https://x/v1", "http://a:1"),
        # httpoxy: in a CGI environment HTTP_PROXY may come from a request's Proxy: header.
        ({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}, "http://x/v1", None),
        ({"http_proxy": "http://p:1", "REQUEST_METHOD": "GET"}, "http://x/v1", "http://p:1"),
        ({"HTTPS_PROXY": "http://s:1", "REQUEST_METHOD": "GET"}, "https://x/v1", "http://s:1"),
    ],
)
def test_the_proxy_comes_from_the_environment(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert http.proxy_for(url) == expected


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("ALL_PROXY", "socks5://127.0.0.1:1080", ["ALL_PROXY", "socks5://", "SOCKS"]),
        ("all_proxy", "socks5h://user:hunter2@proxy:1080", ["all_proxy", "socks5h://", "SOCKS"]),
        ("HTTPS_PROXY", "socks4://proxy:1080", ["HTTPS_PROXY", "socks4://", "SOCKS"]),
        ("HTTPS_PROXY", "ftp://user:hunter2@proxy:21", ["HTTPS_PROXY", "ftp://"]),
        ("HTTPS_PROXY", "http://user:hunter2@proxy:99999", ["HTTPS_PROXY", "not a valid"]),
        ("HTTPS_PROXY", "http://[::1", ["HTTPS_PROXY", "not a valid"]),
        ("HTTPS_PROXY", "http://", ["HTTPS_PROXY", "no host"]),
    ],
)
def test_an_unusable_proxy_is_refused_at_start(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, words: list[str]
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(http.ProxyError) as caught:
        http.proxy_for("https://api.example/v1")
    for word in words:
        assert word in str(caught.value)
    assert "hunter2" not in str(caught.value)
    # The bridge refuses to start: a configuration error, not a failure of every call.
    config = Config.load(environ={}, upstream_url="https://api.example/v1", api_key=DEV_KEY)
    with pytest.raises(ConfigError, match=variable):
        Upstream(config)


def test_a_socks_proxy_for_hosts_reached_directly_is_no_error(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert http.proxy_for("http://127.0.0.1:8080/v1") is None
    assert http.network_for("http://127.0.0.1:8080/v1").proxy is None


def test_proxy_credentials_go_to_proxy_auth(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://svc%2Dbot:p%40ss%3Aword@proxy.corp:3128/")
    network = http.network_for("https://api.example/v1")
    assert network.proxy == URL("http://proxy.corp:3128")  # no user, no password, no path
    assert network.proxy_auth is not None
    assert (network.proxy_auth.login, network.proxy_auth.password) == ("svc-bot", "p@ss:word")
    clean_env.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert http.network_for("https://api.example/v1").proxy_auth is None


def test_trust_is_the_environment_s_ca_or_else_certifi(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certifi_cas = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()
    assert http.trust().cert_store_stats() == certifi_cas
    trusted_ca(clean_env, tmp_path)
    context = http.trust()
    assert context.cert_store_stats()["x509_ca"] == 1
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    clean_env.delenv("SSL_CERT_FILE")
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path))
    assert http.trust().cert_store_stats()["x509_ca"] == 0  # looked up by hash when needed


@pytest.mark.parametrize(
    ("variable", "path", "words"),
    [
        ("SSL_CERT_FILE", "missing.pem", "No such file"),
        ("SSL_CERT_FILE", "empty.pem", "NO_CERTIFICATE"),
        ("SSL_CERT_DIR", "missing", "not a directory"),
    ],
)
def test_ca_certificates_that_cannot_be_loaded_are_refused_at_start(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, variable: str, path: str, words: str
) -> None:
    (tmp_path / "empty.pem").write_text("")
    clean_env.setenv(variable, str(tmp_path / path))
    with pytest.raises(http.TrustError) as caught:
        http.trust()
    assert variable in str(caught.value) and words in str(caught.value)
    config = Config.load(environ={}, upstream_url="https://api.example/v1", api_key=DEV_KEY)
    with pytest.raises(ConfigError, match=variable):
        Upstream(config)


BRIDGE = (sys.executable, "-m", "bridge")


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_socks_proxy_with_a_configuration_error(workers: str) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.lower().endswith("_proxy") and name != "REQUEST_METHOD"
    }
    env["ALL_PROXY"] = "socks5://user:hunter2@127.0.0.1:1080"
    result = subprocess.run(
        [
            *BRIDGE,
            "serve",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--workers",
            workers,
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("configuration error: ALL_PROXY names a socks5:// proxy")
    assert "SOCKS" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


async def test_ssl_cert_file_trusts_a_private_ca(
    raw_bridge: Any, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    context = serving_context(trusted_ca(clean_env, tmp_path))
    async with RawServer(answering(raw_ok()), context) as raw:
        stubs = await raw_bridge(raw)
        assert raw.url.startswith("https://")
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices[0].message.content == "hello"


@pytest.mark.parametrize("variable", ["http_proxy", "ALL_PROXY", "all_proxy"])
async def test_the_proxy_of_any_variable_is_used(
    upstream: DevUpstream, proxy: list[str], clean_env: pytest.MonkeyPatch, variable: str
) -> None:
    clean_env.setenv(variable, proxy.pop(0))
    async with serving(upstream) as stubs:
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices
    assert any("127.0.0.1" in line for line in proxy), proxy


async def a_proxy_answering(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A plain-HTTP proxy as the bridge sees one: it records the request and answers it."""
    await server_.read_request(reader)
    writer.write(raw_ok())
    await writer.drain()


@pytest.mark.filterwarnings("ignore:The 'proxy_auth' parameter is deprecated")
@pytest.mark.parametrize(
    ("userinfo", "credentials"),
    [
        ("svc-bot:p%40ss", "svc-bot:p@ss"),  # percent-decoded
        ("svc-bot:p%C3%A4ss", "svc-bot:päss"),  # UTF-8, as curl and httpx send it
        ("svc-bot", "svc-bot:"),
    ],
)
async def test_proxy_credentials_are_sent_to_the_proxy(
    raw_bridge: Any, clean_env: pytest.MonkeyPatch, userinfo: str, credentials: str
) -> None:
    async with RawServer(a_proxy_answering) as raw:
        port = URL(raw.url).port
        clean_env.setenv("HTTP_PROXY", f"http://{userinfo}@127.0.0.1:{port}")
        stubs = await raw_bridge(raw, upstream_url="http://upstream.invalid/v1")
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices[0].message.content == "hello"
    [(line, headers, _)] = raw.requests
    assert line == b"POST http://upstream.invalid/v1/chat/completions HTTP/1.1"
    expected = b"Basic " + base64.b64encode(credentials.encode())
    assert headers[b"proxy-authorization"] == expected
    assert headers[b"authorization"] == f"Bearer {DEV_KEY}".encode()


@contextlib.asynccontextmanager
async def authenticating_proxy(users: str) -> AsyncIterator[tuple[int, list[str]]]:
    """A real HTTP proxy (pproxy) on loopback that requires Basic credentials `users`
    ("user:password") of every request: its port and the log of what it relayed."""
    relayed: list[str] = []
    listener = await pproxy.Server(f"http://127.0.0.1:0#{users}").start_server(
        # authtime=0: no client address is remembered as authenticated (pproxy's table is
        # shared by the whole process), so every request must carry the credentials.
        {"rserver": [], "verbose": lambda line: relayed.append(str(line)), "authtime": 0}
    )
    try:
        yield listener.sockets[0].getsockname()[1], relayed
    finally:
        listener.close()


@pytest.mark.filterwarnings("ignore:The 'proxy_auth' parameter is deprecated")
async def test_an_https_upstream_through_an_authenticating_proxy(
    raw_bridge: Any, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A CONNECT tunnel carrying the proxy's credentials, TLS inside it trusted by
    # SSL_CERT_FILE; the upstream never sees the proxy's credentials.
    context = serving_context(trusted_ca(clean_env, tmp_path))
    async with (
        authenticating_proxy("svc-bot:s3cret") as (port, relayed),
        RawServer(answering(raw_ok()), context) as raw,
    ):
        clean_env.setenv("HTTPS_PROXY", f"http://svc-bot:s3cret@127.0.0.1:{port}")
        stubs = await raw_bridge(raw)
        reply = await stubs.chat.CreateChatCompletion(chat(), timeout=10)
    assert reply.choices[0].message.content == "hello"
    assert any("127.0.0.1" in line for line in relayed), relayed
    [(_, headers, _)] = raw.requests
    assert b"proxy-authorization" not in headers


@pytest.mark.filterwarnings("ignore:The 'proxy_auth' parameter is deprecated")
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_wrong_proxy_credentials_fail_the_call_without_showing_them(
    raw_bridge: Any, clean_env: pytest.MonkeyPatch, tmp_path: Path, scheme: str
) -> None:
    ca = trusted_ca(clean_env, tmp_path)
    context = serving_context(ca) if scheme == "https" else None
    async with (
        authenticating_proxy("svc-bot:s3cret") as (port, _),
        RawServer(answering(raw_ok()), context) as raw,
    ):
        clean_env.setenv(f"{scheme.upper()}_PROXY", f"http://svc-bot:wr0ng@127.0.0.1:{port}")
        stubs = await raw_bridge(raw, max_attempts=1)
        call = stubs.chat.CreateChatCompletion(chat(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        status = richstatus.of_error(caught.value)
        seen = repr(status) + repr(await call.trailing_metadata())
    assert raw.requests == []
    assert "Proxy Authentication Required" in status.message  # the proxy's 407
    # The proxy's configuration, named as such: neither the caller's request nor the upstream.
    assert (status.code, status.info.reason) == (Code.UNAVAILABLE, "UPSTREAM_PROXY_REFUSED")
    assert "HTTPS_PROXY" in status.message
    assert "wr0ng" not in seen and "s3cret" not in seen


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("status", [200, 429])
async def test_many_returned_headers_never_fail_the_call(
    upstream: DevUpstream, status: int, streamed: bool
) -> None:
    # 100 rate-limit headers of 500 characters each: 50 KB, far past what gRPC clients accept
    # as metadata (8 KiB by default). The call ends as it would without them, with the
    # request id kept and as many of the rest as fit.
    flood = {f"x-ratelimit-h{n}": "v" * 500 for n in range(100)}
    body: bytes | None = None
    headers = {**flood, "x-request-id": "req-kept"}
    if status == 200:
        chunk = b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}'
        body = b"data: " + chunk + b"\n\ndata: [DONE]\n\n" if streamed else COMPLETION
        headers["content-type"] = "text/event-stream" if streamed else "application/json"
    upstream.program(MODEL, Status(status, body, headers=headers))
    async with serving(upstream, max_attempts=1) as stubs:
        if streamed:
            call: Any = stubs.chat.StreamChatCompletion(stream_chat(), timeout=10)
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                pass
        else:
            call = stubs.chat.CreateChatCompletion(chat(), timeout=10)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call
        code = await call.code()
        returned = dict(await call.initial_metadata()) | dict(await call.trailing_metadata())
    assert code == (Code.OK if status == 200 else Code.RESOURCE_EXHAUSTED)
    assert returned["x-request-id"] == "req-kept"
    kept = [key for key in returned if key.startswith("x-ratelimit-")]
    assert 0 < len(kept) < 100


@pytest.mark.parametrize("status", [200, 429])
async def test_a_returned_header_echoing_the_key_is_redacted(
    upstream: DevUpstream, status: int
) -> None:
    # An upstream (or a proxy) that puts the key it received into a returned header.
    body = COMPLETION if status == 200 else None
    upstream.program(
        MODEL,
        Status(
            status,
            body,
            headers={"x-request-id": f"req-{DEV_KEY}", "x-ratelimit-limit-requests": DEV_KEY},
        ),
    )
    async with serving(upstream, max_attempts=1) as stubs:
        call = stubs.chat.CreateChatCompletion(chat(), timeout=10)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call
        returned = [*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())]
        details = await call.details()
    assert DEV_KEY not in repr(returned) + (details or "")
    assert ("x-request-id", "req-[redacted]") in [tuple(pair) for pair in returned]


def _escaped(text: str, every: bool) -> str:
    """`text` as a JSON string body with its first (or every) character \\u-escaped."""
    chars = [f"\\u{ord(c):04x}" if every or i == 0 else c for i, c in enumerate(text)]
    return "".join(chars)


@pytest.mark.parametrize(
    ("streamed", "form"),
    [
        *((False, form) for form in ("raw", "first-escaped", "all-escaped", "utf-16")),
        # An event stream is UTF-8 (WHATWG), so no UTF-16 case for it.
        *((True, form) for form in ("raw", "first-escaped", "all-escaped")),
    ],
)
async def test_the_bridges_key_echoed_in_an_answer_is_redacted(
    upstream: DevUpstream, streamed: bool, form: str
) -> None:
    # A 200 answer (or event) carrying the key the bridge sent, in a key no field models and
    # in a value: a caller without the key must not get it (DESIGN.md: redacted, raw and
    # JSON-escaped, in everything returned). JSON may escape any character.
    key = DEV_KEY if form in ("raw", "utf-16") else _escaped(DEV_KEY, form == "all-escaped")
    if streamed:
        head = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[]'
        event = f'{head},"echo":"got {key}","{key}":1}}'
        body = f"data: {event}\n\ndata: [DONE]\n\n".encode()
        upstream.program(MODEL, Status(200, body, headers={"content-type": "text/event-stream"}))
    else:
        text = COMPLETION.decode()[:-1] + f',"echo":"got {key}","{key}":1}}'
        if form == "utf-16":
            upstream.program(
                MODEL,
                Status(
                    200,
                    text.encode("utf-16"),
                    headers={"content-type": "application/json; charset=utf-16"},
                ),
            )
        else:
            upstream.program(MODEL, Status(200, text.encode()))
    async with serving(upstream, max_attempts=1) as stubs:
        if streamed:
            got = [m async for m in stubs.chat.StreamChatCompletion(stream_chat(), timeout=10)]
        else:
            got = [await stubs.chat.CreateChatCompletion(chat(), timeout=10)]
    assert got and all(DEV_KEY not in str(m) for m in got)
    assert all("echo" in str(m) for m in got)  # the rest of the answer is delivered


async def test_a_callers_key_echoed_as_the_request_id_stays_out_of_the_access_log(
    open_upstream: DevUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    # The log formatter masks the bridge's own key; the caller's is known only to the call.
    key = "sk-caller-own-key-0123456789"
    open_upstream.program(MODEL, Status(200, COMPLETION, headers={"x-request-id": f"r-{key}"}))
    caplog.set_level(logging.INFO, logger="bridge.access")
    async with serving(open_upstream, max_attempts=1) as stubs:
        await stubs.chat.CreateChatCompletion(
            chat(), metadata=(("authorization", f"Bearer {key}"),), timeout=10
        )
    logged = [vars(r) for r in caplog.records if r.name == "bridge.access"]
    assert logged and logged[-1]["upstream_request_id"].startswith("r-")
    assert key[:10] not in repr(logged)


@pytest.mark.parametrize("whose", ["bridge", "caller"])
async def test_a_key_echoed_in_part_is_redacted(open_upstream: DevUpstream, whose: str) -> None:
    upstream = open_upstream
    # OpenAI's 401 echoes a key in part ("sk-proj-abcd****wxyz"); ten characters in a row of
    # the key are an echo of it.
    key = "sk-partial-echo-0123456789abcdef"
    body = {"error": {"message": f"Incorrect API key provided: {key[:14]}****{key[-4:]}."}}
    upstream.program(MODEL, Status(401, body))
    metadata = (("authorization", f"Bearer {key}"),) if whose == "caller" else ()
    async with serving(upstream, api_key=key if whose == "bridge" else DEV_KEY) as stubs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.chat.CreateChatCompletion(chat(), metadata=metadata, timeout=10)
    message = caught.value.details() or ""
    assert key[:14] not in message
    assert "[redacted]****" in message


async def test_an_embeddings_answer_over_the_request_limit_still_arrives(
    upstream: DevUpstream,
) -> None:
    # A 4 MiB request limit must not refuse a 12 MB answer the upstream already gave (and
    # billed): answers are bounded by --max-response-bytes.
    from aigateway.v1 import embeddings_pb2

    request = embeddings_pb2.CreateEmbeddingsRequest(model="openai/text-embedding-3-small")
    request.input_strings.values.extend(["hello"] * 1000)
    request.dimensions = 1536
    running = await server.start(bridge_config(upstream))
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}",
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        ) as channel:
            reply = await stubs_for(channel).embeddings.CreateEmbeddings(request, timeout=30)
    finally:
        await running.stop(0)
    assert len(reply.data) == 1000


@pytest.mark.parametrize("status", [600, 999])
async def test_a_status_past_599_is_internal_and_not_retried(raw_bridge: Any, status: int) -> None:
    answer = b"HTTP/1.1 %d Odd\r\ncontent-length: 2\r\n\r\n{}" % status
    async with RawServer(answering(answer, answer, answer)) as raw:
        stubs = await raw_bridge(raw)
        seen = await unary_error(stubs, timeout=10)
    assert seen.code is Code.INTERNAL
    assert len(raw.requests) == 1


async def test_an_absurd_retry_after_is_a_valid_retry_info(raw_bridge: Any) -> None:
    answer = (
        b"HTTP/1.1 429 Too Many\r\nretry-after: 99999999999999999999\r\ncontent-length: 0\r\n\r\n"
    )
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        seen = await unary_error(stubs, timeout=10)
    assert seen.code is Code.RESOURCE_EXHAUSTED


async def test_a_huge_request_id_does_not_hide_the_error(raw_bridge: Any) -> None:
    answer = (
        b"HTTP/1.1 400 Bad\r\ncontent-type: application/json\r\nx-request-id: "
        + b"r" * 100_000
        + b'\r\ncontent-length: 28\r\n\r\n{"error":{"message":"nope"}}'
    )
    async with RawServer(answering(answer)) as raw:
        stubs = await raw_bridge(raw)
        seen = await unary_error(stubs, timeout=10)
    assert (seen.code, seen.message) == (
        Code.INVALID_ARGUMENT,
        "upstream returned 400 Bad Request: nope",
    )


async def test_a_redirect_to_an_invalid_url_is_a_redirect_and_not_retried(raw_bridge: Any) -> None:
    answer = b"HTTP/1.1 302 Found\r\nlocation: http://x\x01y/\r\ncontent-length: 0\r\n\r\n"
    async with RawServer(answering(answer, answer, answer)) as raw:
        stubs = await raw_bridge(raw)
        seen = await unary_error(stubs, timeout=10)
    assert (seen.code, seen.info.reason) == (Code.INTERNAL, "UPSTREAM_REDIRECT")
    assert len(raw.requests) == 1


async def test_a_response_that_is_not_http_says_so_in_plain_words(raw_bridge: Any) -> None:
    answer = b"HTTX/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    async with RawServer(answering(answer, answer, answer)) as raw:
        stubs = await raw_bridge(raw, max_attempts=1)
        seen = await unary_error(stubs, timeout=10)
    assert seen.info.reason == "UPSTREAM_PROTOCOL_ERROR"
    assert "invalid HTTP response: Bad status line" in seen.message
    assert "message=" not in seen.message
