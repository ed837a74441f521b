"""A lean HTTP/1.1 transport for httpx, written directly on asyncio.

Why: profiling the bridge put about half of a unary call's CPU in httpcore, h11 and anyio
(per-request pool bookkeeping that polls every pooled socket, a cancel scope around every
read and write, a general-purpose event-driven parser). The bridge talks to one origin with
small JSON requests and JSON or SSE answers; this transport does just that, and keeps
httpx's Client API, Request/Response types, timeouts and exception types, so the rest of
the bridge (retries, error mapping, observability) does not know which transport it runs on.

What it does: a keep-alive pool bounded by `max_connections` (callers beyond it queue, up
to the pool timeout), idle connections checked through flags the protocol callbacks set (no
socket polling), a response parser for Content-Length, chunked and close-delimited bodies,
bodies streamed as they arrive, one timer per wait for the read/write timeouts, and the httpx
exception of each failure. A connection goes back to the pool only when its response was
read to its end; one closed early, cancelled or broken is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator

import httpx

__all__ = ["FastTransport"]

_MAX_HEAD = 64 * 1024
"""Largest response head (status line and headers) accepted, like httpcore's h11 limit."""
_MAX_LINE = 4096
"""Largest chunk-size or trailer line accepted."""
_PIECE = 64 * 1024
"""Largest piece of body handed on at once, as httpcore reads: the SSE decoder checks its
event size limit between pieces."""
_PAUSE_AT = 1024 * 1024
"""Unread bytes at which the socket stops being read until the body's reader catches up."""
_KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept, as httpx does: servers drop idle ones after a while,
and a request written on a connection the server is closing fails."""

_Origin = tuple[str, str, int]

# Body framing modes.
_LENGTH, _CHUNKED, _CLOSE = 0, 1, 2
# Chunked parser states.
_SIZE, _DATA, _DATA_END, _TRAILER = 0, 1, 2, 3


def default_ssl_context() -> ssl.SSLContext:
    """httpx's own default context (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR when
    set), so that switching transports changes nothing about which upstreams are trusted."""
    context = httpx.create_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a receive buffer and flags set by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: _Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self.owned = False
        """Whether a request holds this connection (so that it is released exactly once)."""
        self._waiter: asyncio.Future[bool] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[bool] | None = None

    # -------------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _PAUSE_AT and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(True)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(True)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    # -------------------------------------------------------------- used by requests

    def usable(self, now: float, expiry: float) -> bool:
        """Whether an idle connection can carry another request (no socket poll needed:
        the loop has already told this protocol about a close, a reset or stray bytes)."""
        transport = self.transport
        return (
            not self.eof
            and not self.buf
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < expiry
        )

    def is_closed(self) -> bool:
        return self.eof or self.transport is None or self.transport.is_closing()

    def is_idle(self) -> bool:
        return not self.owned

    def close(self, *, abort: bool = False) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()
        self.eof = True

    async def write(self, data: bytes, seconds: float | None, request: httpx.Request) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.error is not None:
            raise httpx.WriteError(
                "the connection was closed before the request was sent", request=request
            )
        transport.write(data)
        if not self._writing_paused:
            return
        waiter = self.loop.create_future()
        self._drain_waiter = waiter
        handle = self.loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            done = await waiter
        finally:
            self._drain_waiter = None
            if handle is not None:
                handle.cancel()
        if not done:
            raise httpx.WriteTimeout("timed out writing the request", request=request)
        if self.error is not None or transport.is_closing():
            raise httpx.WriteError(
                f"the connection was lost while writing: {self.error}", request=request
            )

    async def fill(self, seconds: float | None, request: httpx.Request) -> bool:
        """Wait for more bytes; False at a clean end of stream. A reset raises ReadError."""
        if self.eof:
            if self.error is not None:
                raise httpx.ReadError(_describe(self.error), request=request)
            return False
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        waiter = self.loop.create_future()
        self._waiter = waiter
        handle = self.loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            arrived = await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        if not arrived:
            raise httpx.ReadTimeout("timed out waiting for the upstream", request=request)
        if self.eof and self.error is not None:
            raise httpx.ReadError(_describe(self.error), request=request)
        return True

    def take(self, limit: int) -> bytes:
        """Up to `limit` buffered bytes, resuming a paused socket once the buffer drains."""
        buf = self.buf
        if limit >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:limit])
            del buf[:limit]
        if self._reading_paused and len(buf) < _PAUSE_AT // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection as it arrives; gives the connection back
    to the pool once read to its end, closes it when closed or cancelled before that."""

    def __init__(
        self,
        pool: FastTransport,
        conn: _Connection,
        request: httpx.Request,
        mode: int,
        length: int,
        keep_alive: bool,
        timeout: float | None,
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._request = request
        self._mode = mode
        self._left = length
        self._keep_alive = keep_alive
        self._timeout = timeout
        self._state = _SIZE
        self._size = 0

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, reuse=self._keep_alive)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        request = self._request
        try:
            if self._mode == _LENGTH:
                while self._left:
                    if not conn.buf and not await conn.fill(self._timeout, request):
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body: "
                            f"{self._left} bytes missing",
                            request=request,
                        )
                    data = conn.take(min(self._left, _PIECE))
                    self._left -= len(data)
                    if not self._left:
                        self._finish()
                    yield data
            elif self._mode == _CHUNKED:
                while True:
                    parts, done = self._take_chunks(conn)
                    if done:
                        self._finish()
                    if parts:
                        # More may have arrived while the caller used these: parse again.
                        yield parts[0] if len(parts) == 1 else b"".join(parts)
                        if not done:
                            continue
                    if done:
                        return
                    if not await conn.fill(self._timeout, request):
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body: "
                            "incomplete chunked read",
                            request=request,
                        )
            else:
                while True:
                    if conn.buf:
                        yield conn.take(_PIECE)
                    elif not await conn.fill(self._timeout, request):
                        self._finish()
                        return
        except BaseException:
            # Broken, timed out, cancelled or abandoned mid-body: the connection is in an
            # unknown state and must not serve another request.
            self._discard()
            raise

    def _take_chunks(self, conn: _Connection) -> tuple[list[bytes], bool]:
        """Decode every complete piece of chunked framing already buffered."""
        buf = conn.buf
        end = len(buf)
        pos = 0
        parts: list[bytes] = []
        budget = _PIECE
        state = self._state
        try:
            while True:
                if state == _DATA:
                    if parts and self._left == self._size:
                        # One chunk per piece, as h11 hands them on: a consumer that fails
                        # on a piece has still had everything before it.
                        break
                    n = min(self._left, end - pos, budget)
                    if n == 0:
                        break
                    parts.append(bytes(buf[pos : pos + n]))
                    pos += n
                    budget -= n
                    self._left -= n
                    if self._left:
                        break
                    state = _DATA_END
                if state == _DATA_END:
                    if end - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise httpx.RemoteProtocolError(
                            "malformed chunked body: no CRLF after a chunk", request=self._request
                        )
                    pos += 2
                    state = _SIZE
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE:
                        raise httpx.RemoteProtocolError(
                            "malformed chunked body: line too long", request=self._request
                        )
                    break
                line = bytes(buf[pos:eol])
                pos = eol + 2
                if state == _TRAILER:
                    if not line:
                        del buf[:pos]
                        self._state = state
                        return parts, True
                    continue
                size_text = line.split(b";", 1)[0].strip()
                try:
                    if not size_text or size_text.startswith((b"+", b"-", b"0x", b"0X")):
                        raise ValueError
                    size = int(size_text, 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(
                        f"malformed chunked body: bad chunk size {line[:40]!r}",
                        request=self._request,
                    ) from None
                if size == 0:
                    state = _TRAILER
                else:
                    self._left = self._size = size
                    state = _DATA
        finally:
            self._state = state
        del buf[:pos]
        return parts, False

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close(abort=True)
            self._pool._release(conn, reuse=False)

    async def aclose(self) -> None:
        self._discard()


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio with a bounded keep-alive pool; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = _KEEPALIVE_EXPIRY,
    ) -> None:
        self._max = max_connections
        self._ssl = ssl_context
        self._expiry = keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._active: set[_Connection] = set()
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    # -------------------------------------------------------------- pool

    @property
    def connections(self) -> list[_Connection]:
        """Every open connection, idle or in use (httpcore's pool has the same view, and
        tests check through it that nothing is left in use)."""
        idle = [conn for conns in self._idle.values() for conn in conns]
        return idle + list(self._active)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    async def _acquire(
        self, origin: _Origin, timeouts: dict[str, float | None], request: httpx.Request
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        pool_deadline: float | None = None
        while True:
            if self._closed:
                raise httpx.ConnectError("the transport is closed", request=request)
            idle = self._idle.get(origin)
            if idle:
                now = loop.time()
                while idle:
                    conn = idle.pop()
                    if conn.usable(now, self._expiry):
                        conn.owned = True
                        self._active.add(conn)
                        return conn
                    self._drop(conn)
            if self._count < self._max:
                self._count += 1
                try:
                    conn = await self._connect(origin, timeouts.get("connect"), request)
                except BaseException:
                    self._count -= 1
                    self._wake_one()
                    raise
                conn.owned = True
                self._active.add(conn)
                return conn
            if self._evict_other(origin):
                continue
            if pool_deadline is None and timeouts.get("pool") is not None:
                pool_deadline = loop.time() + timeouts["pool"]  # type: ignore[operator]
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                if pool_deadline is None:
                    await waiter
                else:
                    async with asyncio.timeout_at(pool_deadline):
                        await waiter
            except TimeoutError:
                raise httpx.PoolTimeout(
                    f"no upstream connection became free (all {self._max} in use)", request=request
                ) from None
            except BaseException:
                # Cancelled after being woken: pass the wake-up on.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _evict_other(self, origin: _Origin) -> bool:
        """Close one idle connection to another origin to make room at the limit."""
        for other, idle in self._idle.items():
            if other != origin and idle:
                self._drop(idle.pop(0))
                return True
        return False

    async def _connect(
        self, origin: _Origin, seconds: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"timed out connecting to {host}:{port}", request=request
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(_describe(exc), request=request) from None
        return conn

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        if not conn.owned:
            return
        conn.owned = False
        self._active.discard(conn)
        if reuse and not self._closed:
            now = conn.loop.time()
            conn.idle_since = now
            if conn.usable(now, self._expiry):
                self._idle.setdefault(conn.origin, []).append(conn)
                self._wake_one()
                return
        conn.close()
        self._count -= 1
        self._wake_one()

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._count -= 1

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._active):
            conn.owned = False
            conn.close(abort=True)
        self._active.clear()
        self._count = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -------------------------------------------------------------- one exchange

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, url.host, port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        head = self._request_head(request)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
            if b"chunked" in request.headers.get("transfer-encoding", "").encode():
                body = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"

        conn = await self._acquire(origin, timeouts, request)
        try:
            await conn.write(
                head + body if len(body) < 65536 else head, timeouts.get("write"), request
            )
            if len(body) >= 65536:
                await conn.write(body, timeouts.get("write"), request)
            return await self._read_response(conn, request, timeouts.get("read"))
        except BaseException:
            conn.close(abort=True)
            self._release(conn, reuse=False)
            raise

    @staticmethod
    def _request_head(request: httpx.Request) -> bytes:
        lines = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _read_response(
        self, conn: _Connection, request: httpx.Request, read_seconds: float | None
    ) -> httpx.Response:
        while True:
            status, reason, version, headers = await self._read_head(conn, request, read_seconds)
            if status >= 200 or status == 101:
                break  # 1xx interim answers (100 Continue, 103 Early Hints) are skipped.
        length = -1
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                text = value.strip()
                for item in text.split(b","):
                    item = item.strip()
                    if not item.isdigit() or (length >= 0 and int(item) != length):
                        raise httpx.RemoteProtocolError(
                            f"malformed Content-Length {value[:40]!r}", request=request
                        )
                    length = int(item)
            elif lower == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings[-1] != b"chunked" or len(codings) > 1:
                    raise httpx.RemoteProtocolError(
                        f"unsupported Transfer-Encoding {value[:40]!r}", request=request
                    )
                chunked = True
            elif lower == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    keep_alive = True
        extensions = {"http_version": version, "reason_phrase": reason}
        no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if no_body or (length == 0 and not chunked):
            if status == 101:
                keep_alive = False
            self._release(conn, reuse=keep_alive)
            return httpx.Response(
                status, headers=headers, stream=httpx.ByteStream(b""), extensions=extensions
            )
        if chunked:
            mode = _CHUNKED
        elif length > 0:
            mode = _LENGTH
        else:
            mode = _CLOSE
            keep_alive = False
        stream = _Body(self, conn, request, mode, length, keep_alive, read_seconds)
        return httpx.Response(status, headers=headers, stream=stream, extensions=extensions)

    @staticmethod
    async def _read_head(
        conn: _Connection, request: httpx.Request, seconds: float | None
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        buf = conn.buf
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end >= 0:
                break
            if len(buf) > _MAX_HEAD:
                raise httpx.RemoteProtocolError("the response head is too large", request=request)
            start = max(len(buf) - 3, 0)
            if not await conn.fill(seconds, request):
                if buf:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection in the middle of the response head", request=request
                    )
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        status_line = lines[0]
        parts = status_line.split(b" ", 2)
        if (
            len(parts) < 2
            or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise httpx.RemoteProtocolError(
                f"malformed status line {status_line[:80]!r}", request=request
            )
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name or b"\t" in name:
                raise httpx.RemoteProtocolError(
                    f"malformed header line {line[:80]!r}", request=request
                )
            headers.append((name, value.strip(b" \t")))
        reason = parts[2] if len(parts) > 2 else b""
        return int(parts[1]), reason, parts[0], headers
