"""What an attacker would throw at the bridge, as properties (issue 12, "Proof").

Two attackers, one live bridge each (real bridge, real loopback upstream, real gRPC):

- a caller sending arbitrary metadata values (every byte 0-255, long values) for the keys
  that reach the upstream, written as raw HTTP/2 frames (`tests.rawgrpc`), since grpc's own
  client refuses such values and an attacker is not bound by it;
- an upstream answering with arbitrary HTTP: status lines, header variations (content type,
  content and transfer codings, lengths), SSE bodies with random fields, BOMs, CRs and huge
  lines, truncated and deep JSON, and error envelopes that echo the bridge's API key.

Invariants, for every example: the caller never sees UNKNOWN; nothing is logged at ERROR or
with a traceback; the upstream never receives a control character in its request head (nor
a second, smuggled request); the API key never reaches the caller, raw, JSON-escaped or
upper-snaked, in the status message, its details or any metadata; and afterwards no upstream
connection is left in use and a normal call still succeeds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from aigateway.v1 import chat_pb2, chat_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Config
from bridge.server import assembly as server
from tests import rawgrpc
from tests.rawserver import RawServer

T = TypeVar("T")
MODEL = "openai/gpt-4o-mini"

# The bridge's key: long enough to be redacted, and with characters JSON escapes (`"`, `\`)
# and `/`, which some encoders escape as `\/`. Not shaped like a well-known key (sk-, vck_),
# so only the redaction of the bridge's own credential can hide it, not a shape pattern.
KEY = 'k/e"y+=9xyz\\Q-secret-0042'
KEY_FORMS = (
    KEY,
    json.dumps(KEY)[1:-1],
    json.dumps(KEY)[1:-1].replace("/", "\\/"),
    re.sub(r"[^A-Za-z0-9]+", "_", KEY).strip("_").upper(),
)

PROPERTIES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
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


def ok_response(body: bytes = COMPLETION) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % len(body)
    ) + body


def chat() -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
    )


def stream_chat() -> chat_pb2.StreamChatCompletionRequest:
    return chat_pb2.StreamChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
    )


# ----------------------------------------------------------------------------- the harness


class Live:
    """A scripted loopback upstream and a bridge in front of it, on a background loop.

    Hypothesis runs examples synchronously; the bridge and upstream run on their own event
    loop thread and are called through ordinary synchronous gRPC stubs (or raw HTTP/2 frames
    run on that loop). The upstream records each request head verbatim and answers it with
    `reply`, then closes the connection (so any framing the reply declares ends there).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.reply = ok_response()
        self.heads: list[bytes] = []
        self.raw = RawServer(self._answer)
        self.bridge: server.Bridge | None = None

    async def _answer(
        self, raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(match.group(1)) if match else 0)
        # Anything more on this connection would be a second (smuggled) request.
        self.heads.extend(h for h in (await _rest(reader)).split(b"\r\n\r\n") if h.strip())
        writer.write(self.reply)
        await writer.drain()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def __enter__(self) -> Live:
        self.thread.start()
        self.run(self.raw.__aenter__())
        config = Config.load(
            environ={},
            listen="127.0.0.1:0",
            upstream_url=self.raw.url,
            api_key=KEY,
            initial_backoff=0.01,
            max_backoff=0.02,
        )
        self.bridge = self.run(server.start(config))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.bridge.port}")
        self.chat = chat_pb2_grpc.ChatServiceStub(self.channel)
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        if self.bridge is not None:
            self.run(self.bridge.stop(0))
        self.run(self.raw.__aexit__())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.bridge is not None
        return self.bridge.port

    def pool_in_use(self) -> int:
        async def stats() -> tuple[int, int]:
            assert self.bridge is not None
            return self.bridge.upstream.pool_stats()

        return self.run(stats())[1]

    def still_serves(self) -> None:
        """No upstream connection left in use, and a normal call answers OK."""
        for _ in range(1000):  # a bound on a hang, not a timing assertion
            if self.pool_in_use() == 0:
                break
            self.run(asyncio.sleep(0.01))
        assert self.pool_in_use() == 0
        self.reply = ok_response()
        reply = self.chat.CreateChatCompletion(chat(), timeout=30)
        assert reply.choices[0].message.content == "hello"


async def _rest(reader: asyncio.StreamReader) -> bytes:
    """What the client wrote after its first request, without waiting for more."""
    await asyncio.sleep(0)
    data = b""
    while True:
        try:
            part = await asyncio.wait_for(reader.read(65536), 0.001)
        except TimeoutError:
            return data
        if not part:
            return data
        data += part


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with Live() as running:
        yield running


def _fragments(blob: bytes) -> list[str]:
    return [
        form[i : i + 10]
        for form in KEY_FORMS[:2]
        for i in range(len(form) - 9)
        if form[i : i + 10].encode() in blob
    ]


def leaks(*texts: str | bytes, sent: bytes = b"") -> list[str]:
    """The forms of KEY found in what the caller received, and any 10 characters of it in a
    row (a key cut in half by an excerpt's limit is still half a key) unless the upstream
    itself `sent` such a fragment (a truncated body: nothing the bridge could recognise)."""
    blob = b" ".join(t if isinstance(t, bytes) else t.encode("utf-8", "replace") for t in texts)
    found = [form for form in KEY_FORMS if form.encode() in blob]
    for form in sorted(KEY_FORMS, key=len, reverse=True):
        sent = sent.replace(form.encode(), b"")
    if not _fragments(sent):
        found += _fragments(blob)
    return found


def metadata_blob(metadata: Any) -> list[str | bytes]:
    out: list[str | bytes] = []
    for key, value in metadata or ():
        out += [key, value]
    return out


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage()[:300] for r in bad]


# ----------------------------------------------------------------------------- (a) metadata

FORWARDED_KEYS = ["authorization", "x-title", "http-referer", "x-request-id", "traceparent"]
_VALUES = (
    st.binary(max_size=64)
    | st.binary(min_size=1000, max_size=20000)
    | st.sampled_from(
        [
            b"a\r\nContent-Length: 0\r\n\r\nDELETE /v1/admin HTTP/1.1\r\nHost: x\r\n\r\n",
            b"Bearer ok\nx-evil: 1",
            b"Bearer ok\rx-evil: 1",
            b"\x00",
            b"\x7f",
            b"\x85next-line",
            "caf\u00e9".encode(),
            "\u2028".encode(),
            b"\xff\xfe",
            b"Bearer " + b"A" * 9000,
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b" leading and trailing ",
            b"\t",
        ]
    )
)
_METADATA = st.lists(st.tuples(st.sampled_from(FORWARDED_KEYS), _VALUES), min_size=1, max_size=3)


def _head_is_clean(head: bytes) -> bool:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    return all(b == 9 or 0x20 <= b < 0x7F for line in lines for b in line)


def test_property_arbitrary_metadata_values_never_reach_the_upstream_raw(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    @PROPERTIES
    @given(metadata=_METADATA)
    def check(metadata: list[tuple[str, bytes]]) -> None:
        before = len(live.heads)
        seen = live.run(
            rawgrpc.unary(
                live.port,
                "/aigateway.v1.ChatService/CreateChatCompletion",
                chat(),
                [(k.encode(), v) for k, v in metadata],
            )
        )
        heads = live.heads[before:]
        # Never UNKNOWN (a reset stream, no status at all, is grpc core refusing the head).
        assert seen.get(b"grpc-status") != b"2", seen
        # At most the one request, and nothing in its head but visible ASCII, space and tab.
        assert len(heads) <= 1, heads
        assert all(_head_is_clean(h) for h in heads), heads
        if seen.get(b"grpc-status") == b"0":
            assert len(heads) == 1
        elif heads == [] and seen.get(b"grpc-status") == b"3":
            assert b"metadata '" in seen.get(b"grpc-message", b"")
        assert leaks(*seen.values()) == []
        # The caller's own value is never echoed back either (a long one could be a key).
        for _, value in metadata:
            if len(value) >= 16 and value.strip():
                assert not any(value in v for v in seen.values())
        # A caller's authorization replaces the bridge's: never both, never the key with it.
        for head in heads:
            assert head.lower().count(b"\r\nauthorization:") == 1
            if any(k == "authorization" for k, _ in metadata):
                assert KEY.encode() not in head

    try:
        check()
    finally:
        live.still_serves()
    no_errors_logged(caplog)


# ----------------------------------------------------------------------------- (b) upstream


def _key_as(form: str) -> str:
    escaped = json.dumps(KEY)[1:-1]
    return {"raw": KEY, "json": escaped, "slash": escaped.replace("/", "\\/")}[form]


_KEY_FORM = st.sampled_from(["raw", "json", "slash"])


@st.composite
def _envelope(draw: st.DrawFn) -> bytes:
    """A JSON error envelope (or flat error) with the key somewhere in it."""
    key = _key_as(draw(st.sampled_from(["json", "slash"])))  # in a JSON string: escaped
    where = draw(st.sampled_from(["message", "param", "code", "type", "key", "string", "flat"]))
    if where == "string":
        return b'{"error": "key ' + key.encode() + b' refused"}'
    if where == "flat":
        flat = '{"type": "error", "code": "@@", "message": "x @@"}'
        return flat.replace("@@", key).encode()
    fields: dict[str, Any] = {"message": "bad", "type": "invalid_request_error", "code": None}
    if where == "key":
        fields["@@"] = 1
    else:
        fields[where] = "@@"
    return json.dumps({"error": fields}).replace("@@", key).encode()


# Where an excerpt or a clip is likely to cut: padding that puts the key across the cut.
_PAD = st.integers(0, 3000) | st.sampled_from([200, 256, 400, 500, 512, 1024, 1600, 2048]).flatmap(
    lambda n: st.integers(n - len(KEY), n)
)


def _deep(depth: int) -> bytes:
    return b'{"error": ' + b"[" * depth + b"]" * depth + b"}"


def _deep_field(depth: int) -> bytes:
    """An error envelope whose `param` nests `depth` deep (within what JSON decoders take)."""
    return b'{"error": {"message": "x", "param": ' + b"[" * depth + b"]" * depth + b"}}"


_JSON_BODIES = st.one_of(
    st.just(COMPLETION),
    _envelope(),
    st.integers(1, len(COMPLETION) - 1).map(lambda n: COMPLETION[:n]),  # truncated
    st.tuples(_envelope(), st.integers(1, 60)).map(lambda t: t[0][: -t[1]]),  # truncated
    st.integers(500, 3000).map(_deep),
    st.integers(800, 1020).map(_deep_field),
    _PAD.map(lambda pad: b" " * pad + KEY.encode() + b" (echoed)"),
    _PAD.map(lambda pad: b"x" * pad + KEY.encode() + b" (echoed)"),
    st.tuples(_KEY_FORM, _PAD).map(
        lambda t: f"<html>{' ' * t[1]}your key {_key_as(t[0])} was rejected</html>".encode()
    ),
    st.binary(max_size=300),
)


@st.composite
def _sse_body(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\n", b"\r", b"\r\n"]))
    chunk = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": "x"}}],
        }
    ).encode()
    line = st.one_of(
        st.just(b"data: " + chunk),
        st.just(b"data: [DONE]"),
        st.just(b"data: [DONE] "),
        _envelope().map(lambda e: b"data: " + e),
        st.just(b"event: error"),
        st.sampled_from([b"event: ping", b"id: 7", b"retry: 10", b": keep-alive", b"data"]),
        st.just(b"data: " + KEY.encode()),
        st.integers(1000, 200_000).map(lambda n: b"data: " + b"x" * n),  # a huge line
        _PAD.map(lambda pad: b"data: {" + b" " * pad + KEY.encode()),
        _PAD.map(lambda pad: b"event: error" + eol + b"data: " + b"y" * pad + KEY.encode()),
        st.just(b"data: " + chunk[:20]),
        st.integers(500, 1500).map(lambda d: b"data: " + _deep(d)),
        st.integers(800, 1020).map(lambda d: b"data: " + _deep_field(d)),
        st.binary(max_size=80).map(lambda b: b"data: " + b),
        st.binary(max_size=80),
    )
    lines = draw(st.lists(line, max_size=12))
    body = b""
    for item in lines:
        body += item + eol + (eol if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    return body


_CONTENT_TYPES = st.sampled_from(
    [
        None,
        b"application/json",
        b"Application/JSON; charset=utf-8",
        b"text/event-stream",
        b"Text/Event-Stream; Charset=UTF-8",
        b"text/html",
        b"application/problem+json",
        b"\x00\xff",
    ]
)
_STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 401 Unauthorized",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 413 Too Large",
        b"HTTP/1.1 429 Too Many Requests",
        b"HTTP/1.1 500 Internal Server Error",
        b"HTTP/1.1 503 Unavailable",
        b"HTTP/1.1 302 Found",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
        b"HTTP/1.1 999 Whatever",
        b"HTTP/1.1 abc",
        b"ICY 200 OK",
        b"",
    ]
)
_EXTRA_HEADERS = st.lists(
    st.sampled_from(
        [
            b"x-request-id: " + KEY.encode(),
            b"x-request-id: req-" + json.dumps(KEY)[1:-1].encode(),
            b"x-ratelimit-remaining-requests: " + KEY.encode(),
            b"retry-after: 0",
            b"retry-after-ms: 1",
            b"x-should-retry: true",
            b"location: https://user:pass@evil.example/steal?key=" + KEY.encode(),
            b"x-request-id: caf\xc3\xa9",
            b"x-request-id: " + b"r" * 70_000,
            b"set-cookie: a=b",
            b"folded: a\r\n b",
        ]
    ),
    max_size=3,
)


@st.composite
def _response(draw: st.DrawFn, stream: bool) -> bytes:
    body: bytes = draw(_sse_body() if stream and draw(st.booleans()) else _JSON_BODIES)
    headers: list[bytes] = [draw(_STATUS_LINES)]
    content_type = draw(_CONTENT_TYPES)
    if content_type is not None:
        headers.append(b"content-type: " + content_type)
    coding = draw(st.sampled_from([None, b"gzip", b"deflate", b"identity", b"x-unknown", b"br"]))
    if coding is not None:
        headers.append(b"content-encoding: " + coding)
        if coding == b"gzip" and draw(st.booleans()):
            body = gzip.compress(body)
    framing = draw(st.sampled_from(["length", "wrong-length", "chunked", "bad-chunked", "close"]))
    if framing == "length":
        headers.append(b"content-length: %d" % len(body))
    elif framing == "wrong-length":
        headers.append(b"content-length: %d" % (len(body) + draw(st.integers(-5, 50))))
    elif framing in ("chunked", "bad-chunked"):
        headers.append(b"transfer-encoding: " + draw(st.sampled_from([b"chunked", b"Chunked"])))
        size = draw(st.integers(1, 4096))
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        body += b"0\r\n\r\n" if framing == "chunked" else b"zz\r\n"
    headers += draw(_EXTRA_HEADERS)
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


def _outcome_unary(live: Live) -> tuple[grpc.StatusCode, list[str | bytes]]:
    try:
        _, call = live.chat.CreateChatCompletion.with_call(chat(), timeout=30)
    except grpc.RpcError as error:
        e: Any = error
        seen = [e.details() or "", *metadata_blob(e.initial_metadata())]
        return e.code(), seen + metadata_blob(e.trailing_metadata())
    seen = metadata_blob(call.initial_metadata()) + metadata_blob(call.trailing_metadata())
    return grpc.StatusCode.OK, seen


def _outcome_stream(live: Live) -> tuple[grpc.StatusCode, list[str | bytes]]:
    call: Any = live.chat.StreamChatCompletion(stream_chat(), timeout=30)
    seen: list[str | bytes] = []
    try:
        for message in call:
            seen.append(message.SerializeToString())
    except grpc.RpcError:
        pass
    seen += [call.details() or "", *metadata_blob(call.initial_metadata())]
    return call.code(), seen + metadata_blob(call.trailing_metadata())


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_property_arbitrary_upstream_bytes(
    live: Live, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    caplog.set_level(logging.INFO)

    @PROPERTIES
    @given(reply=_response(stream))
    def check(reply: bytes) -> None:
        live.reply = reply
        code, seen = (_outcome_stream if stream else _outcome_unary)(live)
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED), seen
        assert leaks(*seen, sent=reply) == [], seen
        no_errors_logged(caplog)

    try:
        check()
    finally:
        live.still_serves()


# ----------------------------------------------------------------------------- found by hand
# Each example below failed on the merged main (see docs/security.md, "Findings").


def _head(status: bytes, content_type: bytes, body: bytes, *extra: bytes) -> bytes:
    lines = [status, b"content-type: " + content_type, b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("where", ["x-request-id", "x-ratelimit-remaining-tokens"])
@pytest.mark.parametrize("status", [b"HTTP/1.1 200 OK", b"HTTP/1.1 429 Too Many Requests"])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_returned_header_echoing_the_key_is_redacted(
    live: Live, where: str, status: bytes, stream: bool
) -> None:
    # An upstream (or a debugging proxy) that echoes the request's Authorization into a
    # returned header: the header reaches the caller as metadata, initial on success and
    # trailing on an error, so it is redacted like the status message.
    if stream:
        body = b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\ndata: [DONE]\n\n'
        kind = b"text/event-stream"
    else:
        body, kind = COMPLETION, b"application/json"
    live.reply = _head(status, kind, body, f"{where}: req-{KEY}".encode())
    code, seen = (_outcome_stream if stream else _outcome_unary)(live)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert leaks(*seen) == []
    assert where in seen  # still returned, with the key cut out
    live.still_serves()


@pytest.mark.parametrize("pad", [0, 1585, 1590, 1595, 1599, 390, 395, 399])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_key_cut_in_half_by_an_excerpt_never_reaches_the_caller(
    live: Live, pad: int, stream: bool
) -> None:
    # A malformed 200 body is quoted in the status message, its start only. Cutting before
    # redacting left the first characters of a key that straddled the cut.
    echo = b" " * pad + KEY.encode() + b" rejected"
    if stream:
        body, kind = b"data: {" + echo + b"\n\n", b"text/event-stream"
    else:
        body, kind = echo, b"text/plain"
    live.reply = _head(b"HTTP/1.1 200 OK", kind, body)
    code, seen = (_outcome_stream if stream else _outcome_unary)(live)
    assert code == grpc.StatusCode.INTERNAL
    assert leaks(*seen) == []
    live.still_serves()


def test_undecodable_metadata_is_not_an_error_in_the_log(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    # grpc logs every non-UTF-8 metadata value at ERROR with a traceback and the whole value;
    # any caller, authorized or not, could flood the log (and its alerts) with them.
    caplog.set_level(logging.DEBUG)
    seen = live.run(
        rawgrpc.unary(
            live.port,
            "/aigateway.v1.ChatService/CreateChatCompletion",
            chat(),
            [(b"x-unlisted", b"\xff" * 4000), (b"x-title", b"caf\xe9")],
        )
    )
    assert seen.get(b"grpc-status") == b"3"  # x-title is forwarded: refused, named
    assert b"metadata 'x-title'" in seen.get(b"grpc-message", b"")
    no_errors_logged(caplog)
    assert not any("\xff" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("depth", [900, 1000, 1020, 3000])
@pytest.mark.parametrize("status", [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_an_error_envelope_nested_deep_is_a_status_not_unknown(
    live: Live, caplog: pytest.LogCaptureFixture, depth: int, status: bytes, stream: bool
) -> None:
    # The JSON decoders take 1024 levels; redacting, quoting or parsing an error body
    # recursively hit Python's recursion limit first: UNKNOWN, and a traceback per call.
    caplog.set_level(logging.INFO)
    body = _deep_field(depth)
    if stream and status.endswith(b"OK"):
        body, kind = b"data: " + body + b"\n\n", b"text/event-stream"
    else:
        kind = b"application/json"
    live.reply = _head(status, kind, body)
    code, _ = (_outcome_stream if stream else _outcome_unary)(live)
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    no_errors_logged(caplog)
    live.still_serves()


@pytest.mark.parametrize(
    "reply",
    [
        b"\r\n\r\n" + KEY.encode() + b" (echoed)",
        b"HTTP/1.1 200 OK\r\nx-bad\x01: " + KEY.encode() + b"\r\ncontent-length: 2\r\n\r\n{}",
    ],
    ids=["status-line", "header-line"],
)
def test_a_key_quoted_by_the_http_parser_is_redacted(live: Live, reply: bytes) -> None:
    # aiohttp's parser error quotes the refused line as a bytes literal, inside a message its
    # exception quotes again: a key with a backslash or quote escaped the raw and JSON forms.
    live.reply = reply
    code, seen = _outcome_unary(live)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "[redacted]" in str(seen[0])
    assert leaks(*seen) == []
    live.still_serves()
