"""The bridge's own HTTP/1.1 transport (bridge/transport.py), through httpx's client API.

Most tests run a raw asyncio server on loopback that writes exactly the bytes under test
(framing, split writes, resets, silence); the last ones run the real bridge against the
development upstream on each transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import httpx
import pytest
import trustme
from aigateway.v1 import chat_pb2

from bridge import server
from bridge.config import ConfigError
from bridge.devserver import DevUpstream, SlowStream
from bridge.transport import FastTransport
from tests.conftest import bridge_config, stubs_for, wait_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback server that runs `handler` on each connection and counts connections."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One request: its request line, lower-cased headers and Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for raw in lines:
        name, _, value = raw.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return line, headers, body


def answering(*responses: bytes) -> Handler:
    """A handler answering successive requests on a connection with `responses`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await read_request(reader)
            writer.write(response)
            await writer.drain()
        await reader.read()

    return handler


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


@contextlib.asynccontextmanager
async def client(**kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    timeout = kwargs.pop("timeout", httpx.Timeout(5.0))
    transport = FastTransport(**kwargs)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as c:  # type: ignore[arg-type]
        yield c


# ------------------------------------------------------------------ framing and reuse


async def test_keep_alive_reuses_one_connection() -> None:
    async with RawServer(answering(ok(b"one"), ok(b"two"), ok(b"three"))) as raw, client() as c:
        bodies = [(await c.post(raw.url + "/x", content=b"{}")).content for _ in range(3)]
    assert bodies == [b"one", b"two", b"three"]
    assert raw.connections == 1


async def test_request_is_written_with_its_body_and_headers() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(ok(b"{}"))
        await writer.drain()

    async with RawServer(handler) as raw, client() as c:
        await c.post(raw.url + "/v1/chat?x=1", content=b'{"a":1}', headers={"x-k": "v"})
        host = raw.url.removeprefix("http://").encode()
    line, headers, body = seen[0]
    assert line == b"POST /v1/chat?x=1 HTTP/1.1"
    assert headers[b"x-k"] == b"v"
    assert headers[b"host"] == host
    assert body == b'{"a":1}'


async def test_headers_keep_order_and_duplicates() -> None:
    response = ok(b"", b"set-cookie: a=1", b"X-Two: 2", b"set-cookie: b=2")
    async with RawServer(answering(response)) as raw, client() as c:
        answer = await c.get(raw.url)
    assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]
    names = [name for name, _ in answer.headers.raw]
    assert names == [b"content-length", b"set-cookie", b"X-Two", b"set-cookie"]


async def test_chunked_body_is_decoded_and_the_connection_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\ntrailer: x\r\n\r\n"
    )
    async with RawServer(answering(chunked, ok(b"again"))) as raw, client() as c:
        first = await c.get(raw.url)
        second = await c.get(raw.url)
    assert (first.content, second.content) == (b"hello world", b"again")
    assert raw.connections == 1


async def test_close_delimited_body_is_read_to_the_end_and_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        writer.close()

    async with RawServer(handler) as raw, client() as c:
        assert (await c.get(raw.url)).content == b"all of it"
        assert (await c.get(raw.url)).content == b"all of it"
    assert raw.connections == 2


async def test_connection_close_header_is_honoured() -> None:
    async with RawServer(answering(ok(b"bye", b"connection: close"))) as raw, client() as c:
        assert (await c.get(raw.url)).content == b"bye"
        assert (await c.get(raw.url)).content == b"bye"
    assert raw.connections == 2


async def test_response_split_into_single_bytes() -> None:
    payload = (
        b"HTTP/1.1 201 Created\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for i in range(len(payload)):
            writer.write(payload[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async with RawServer(handler) as raw, client() as c:
        answer = await c.get(raw.url)
    assert (answer.status_code, answer.reason_phrase) == (201, "Created")
    assert answer.headers["x-a"] == "1"
    assert answer.content == b"abcde"


async def test_interim_100_continue_is_skipped() -> None:
    answer_bytes = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done")
    async with RawServer(answering(answer_bytes)) as raw, client() as c:
        answer = await c.post(raw.url, content=b"x")
    assert (answer.status_code, answer.content) == (200, b"done")


async def test_streamed_body_arrives_before_the_rest_is_sent() -> None:
    """An SSE body is handed on as it arrives: the server sends its second event only once
    the client has seen the first, so a buffering transport would hang here."""
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b"d\r\ndata: first\n\n\r\n"
        )
        await writer.drain()
        await first_seen.wait()
        writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as raw, client() as c, c.stream("GET", raw.url) as response:
        parts = []
        async for part in response.aiter_raw():
            parts.append(part)
            first_seen.set()
    assert parts == [b"data: first\n\n", b"data: second\n\n"]


async def test_large_body_in_pieces() -> None:
    body = bytes(range(256)) * 20_000  # 5 MB: more than the socket and pause thresholds
    async with RawServer(answering(ok(body), ok(b"next"))) as raw, client() as c:
        async with c.stream("GET", raw.url) as response:
            parts = [part async for part in response.aiter_raw()]
        assert b"".join(parts) == body
        assert len(parts) > 1
        assert (await c.get(raw.url)).content == b"next"
    assert raw.connections == 1


async def test_large_request_body_is_written_whole() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: written after the head, not joined to it

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, received = await read_request(reader)
        writer.write(ok(b"%d %d" % (len(received), received == body)))
        await writer.drain()

    async with RawServer(handler) as raw, client() as c:
        answer = await c.post(raw.url, content=body)
    assert answer.content == b"1048576 1"


async def test_http_1_0_answer_without_length_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{}")
        writer.close()

    async with RawServer(handler) as raw, client() as c:
        answer = await c.get(raw.url)
        assert (answer.http_version, answer.content) == ("HTTP/1.0", b"{}")
        assert (await c.get(raw.url)).content == b"{}"
    assert raw.connections == 2


# ------------------------------------------------------------------ early close, pool


async def test_response_closed_early_is_not_reused() -> None:
    big = ok(b"x" * 200_000)
    async with RawServer(answering(big, big)) as raw, client() as c:
        async with c.stream("GET", raw.url) as response:
            async for _ in response.aiter_raw():
                break
        assert (await c.get(raw.url)).content == b"x" * 200_000
    assert raw.connections == 2


async def test_callers_beyond_the_limit_queue_for_a_connection() -> None:
    release = asyncio.Event()
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            await read_request(reader)
            served += 1
            if served == 1:
                await release.wait()
            writer.write(ok(b"%d" % served))
            await writer.drain()

    async with RawServer(handler) as raw, client(max_connections=1) as c:
        first = asyncio.create_task(c.get(raw.url))
        await wait_for(lambda: served == 1)
        others = [asyncio.create_task(c.get(raw.url)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in others)  # queued, not failed
        release.set()
        answers = await asyncio.gather(first, *others)
    assert sorted(a.content for a in answers) == [b"1", b"2", b"3", b"4"]
    assert raw.connections == 1


async def test_pool_timeout_when_every_connection_is_busy() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    timeout = httpx.Timeout(5.0, pool=0.1)
    async with RawServer(handler) as raw, client(max_connections=1, timeout=timeout) as c:
        hanging = asyncio.create_task(c.get(raw.url))
        await wait_for(lambda: raw.connections == 1)
        with pytest.raises(httpx.PoolTimeout):
            await c.get(raw.url)
        hanging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hanging


async def test_cancelled_request_closes_its_connection() -> None:
    peer_closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if raw.connections == 1:
            await reader.read()  # returns when the client closes the connection
            peer_closed.set()
            return
        writer.write(ok(b"fresh"))
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as raw, client(max_connections=1) as c:
        task = asyncio.create_task(c.get(raw.url))
        await wait_for(lambda: raw.connections == 1)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(peer_closed.wait(), 5)
        # The one slot is free again, on a new connection.
        assert (await c.get(raw.url)).content == b"fresh"
    assert raw.connections == 2


async def test_idle_connection_closed_by_the_server_is_discarded() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"once"))
        await writer.drain()
        # Keep-alive was not refused, but the server closes anyway (an idle timeout).

    async with RawServer(handler) as raw, client() as c:
        assert (await c.get(raw.url)).content == b"once"
        transport = c._transport
        assert isinstance(transport, FastTransport)
        await wait_for(lambda: all(conn.is_closed() for conn in transport.connections))
        assert (await c.get(raw.url)).content == b"once"
    assert raw.connections == 2


async def test_aclose_closes_idle_and_active_connections() -> None:
    async with RawServer(answering(ok(b"a"), ok(b"b"))) as raw:
        transport = FastTransport()
        async with httpx.AsyncClient(transport=transport) as c:
            await c.get(raw.url)
            assert len(transport.connections) == 1
        assert transport.connections == []


# ------------------------------------------------------------------ timeouts and failures


async def test_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with RawServer(handler) as raw, client(timeout=httpx.Timeout(5.0, read=0.1)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(raw.url)


async def test_read_timeout_mid_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as raw, client(timeout=httpx.Timeout(5.0, read=0.1)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(raw.url)


async def test_write_timeout_when_the_server_does_not_read() -> None:
    stop = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    body = b"x" * (64 * 1024 * 1024)  # far more than the loopback socket buffers hold
    async with RawServer(handler) as raw, client(timeout=httpx.Timeout(5.0, write=0.1)) as c:
        with pytest.raises(httpx.WriteTimeout):
            await c.post(raw.url, content=body)
        stop.set()


async def test_connect_timeout_when_the_tls_handshake_never_ends() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a TCP listener that never speaks TLS

    async with RawServer(handler) as raw:
        url = raw.url.replace("http://", "https://")
        async with client(timeout=httpx.Timeout(5.0, connect=0.1)) as c:
            with pytest.raises(httpx.ConnectTimeout):
                await c.get(url)


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with client() as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")


async def test_server_closing_without_an_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with RawServer(handler) as raw, client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.get(raw.url)


async def test_body_cut_short_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")

    async with RawServer(handler) as raw, client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await c.get(raw.url)


async def test_chunked_body_cut_short_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")

    async with RawServer(handler) as raw, client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await c.get(raw.url)


async def test_reset_mid_body_is_a_read_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        # SO_LINGER 0: close() sends a TCP reset instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with RawServer(handler) as raw, client() as c:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await c.get(raw.url)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
        b"SPDY/3 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_responses_are_protocol_errors(response: bytes) -> None:
    async with RawServer(answering(response)) as raw, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(raw.url)


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_a_trusted_certificate(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    answers = answering(ok(b"secret"), ok(b"again"))
    async with RawServer(answers, server_context) as raw, client(ssl_context=client_context) as c:
        assert (await c.get(raw.url)).content == b"secret"
        assert (await c.get(raw.url)).content == b"again"
    assert raw.connections == 1


async def test_tls_with_an_untrusted_certificate_is_a_connect_error(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    # certifi's bundle, the default, does not know the test CA.
    async with RawServer(answering(ok(b"secret")), server_context) as raw, client() as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(raw.url)


# ------------------------------------------------------------------ in the bridge


def test_fast_is_the_default_and_bad_values_are_refused(upstream: DevUpstream) -> None:
    assert bridge_config(upstream).upstream_http == "fast"
    with pytest.raises(ConfigError, match="--upstream-http must be 'fast' or 'httpx'"):
        bridge_config(upstream, upstream_http="h2")


@pytest.mark.parametrize("kind", ["fast", "httpx"])
async def test_bridge_serves_on_either_transport(upstream: DevUpstream, kind: str) -> None:
    running = await server.start(bridge_config(upstream, upstream_http=kind))
    try:
        transport = running.upstream._client._transport
        assert isinstance(transport, FastTransport) is (kind == "fast")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            text = [chat_pb2.ChatMessage(role="user", content_text="hello there")]
            for _ in range(3):
                answer = await stubs.chat.CreateChatCompletion(
                    chat_pb2.CreateChatCompletionRequest(model="dev/echo", messages=text)
                )
                assert answer.choices[0].message.content
            chunks = [
                chunk
                async for chunk in stubs.chat.StreamChatCompletion(
                    chat_pb2.StreamChatCompletionRequest(model="dev/echo", messages=text)
                )
            ]
            assert len(chunks) > 1
        # Sequential calls share one kept-alive upstream connection.
        assert upstream.open_connections == 1
    finally:
        await running.stop(0)
    await wait_for(lambda: upstream.open_connections == 0)


@pytest.mark.parametrize("http", ["fast", "httpx"])
async def test_pool_stats_show_connections_in_use_and_idle(
    upstream: DevUpstream, http: str
) -> None:
    # The second chunk comes after 30 s: the stream is surely open while it is looked at.
    upstream.program("openai/gpt-4o-mini", SlowStream(interval=30.0))
    running = await server.start(bridge_config(upstream, upstream_http=http))
    try:
        assert running.upstream.pool_stats() == (0, 0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stream = stubs_for(channel).chat.StreamChatCompletion(
                chat_pb2.StreamChatCompletionRequest(
                    model="openai/gpt-4o-mini",
                    messages=[chat_pb2.ChatMessage(role="user", content_text="hi")],
                )
            )
            await stream.read()  # the first chunk: the upstream response is still open
            assert running.upstream.pool_stats() == (1, 1)
            stream.cancel()
        await wait_for(lambda: running.upstream.pool_stats()[1] == 0)
    finally:
        await running.stop(0)
