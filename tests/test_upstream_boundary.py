"""The upstream boundary against what real and hostile servers do (issues 11 and 12).

Each test starts the real bridge and a real upstream on loopback (the development upstream,
or `RawServer` writing exact bytes), calls it through a real gRPC channel, and asserts what
the caller sees and what reached the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pproxy
import pytest
import trustme
from aigateway.v1 import chat_pb2

from bridge.config import Config, ConfigError
from bridge.server import assembly as server
from dev.upstream.server import DevUpstream, SlowStream, Status
from tests import rawgrpc, richstatus
from tests.conftest import DEV_KEY, bridge_config, serving, stubs_for
from tests.rawserver import RawServer, answering

Code = grpc.StatusCode
MODEL = "openai/gpt-4o-mini"


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


# ------------------------------------------------------------------ bounds


async def endless_continue(
    server_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server_.read_request(reader)
    while True:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)


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


async def test_an_untrusted_certificate_is_said_once_and_not_retried(raw_bridge: Any) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
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
