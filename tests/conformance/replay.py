"""A loopback upstream that answers every request with recorded bytes, exactly.

Each case of the corpus is a raw HTTP/1.1 response file (status line, headers, body as it was
on the wire, framing included). The server reads each request properly (h11, which also
handles pipelined bytes and bodies split over reads), writes the recorded bytes unchanged and
counts what it was sent. It answers every request of a case the same way, so a retried
request sees the same answer; given several files it plays them in order and repeats the last.

A recorded response framed by Content-Length or chunked coding leaves the connection open
for the next request, as a real server does; one read to the end of the connection
(`Connection: close`, or no framing) is followed by closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import h11

__all__ = ["Recorded", "Replay", "SeenRequest", "parse_response"]

CASES = Path(__file__).parent / "cases"


@dataclass(frozen=True)
class SeenRequest:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Recorded:
    """A recorded response: the exact bytes, and what they say once HTTP is decoded."""

    raw: bytes
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    """The body with the transfer framing removed (content codings left as they are)."""

    @classmethod
    def load(cls, name: str) -> Recorded:
        raw = (CASES / name).read_bytes()
        return parse_response(raw)

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def keeps_connection(self) -> bool:
        """Whether the recorded framing lets the connection carry another request."""
        connection = (self.header("connection") or b"").lower()
        framed = (
            self.header("content-length") is not None
            or b"chunked" in (self.header("transfer-encoding") or b"").lower()
        )
        return framed and b"close" not in connection


def parse_response(raw: bytes) -> Recorded:
    """Decode a raw HTTP/1.1 response with h11 in the client role (framing only)."""
    client = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=1 << 20)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "replay")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    client.receive_data(b"")  # the recording ends where the connection would
    status = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body = bytearray()
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = tuple((bytes(k), bytes(v)) for k, v in event.headers.raw_items())
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
        elif event is h11.NEED_DATA or event is h11.PAUSED:
            raise ValueError("the recorded response is incomplete")
    return Recorded(raw, status, headers, bytes(body))


@dataclass
class Replay:
    """`async with Replay(["case.http"]) as upstream:` then point the bridge at `upstream.url`."""

    responses: Sequence[str]
    requests: list[SeenRequest] = field(default_factory=list)
    _recorded: list[Recorded] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> Replay:
        self._recorded = [Recorded.load(name) for name in self.responses]
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Closing each connection ends its handler (a read sees EOF, a write fails) without
        # cancelling it, so nothing is left half-done or logged as an error.
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _next_response(self) -> Recorded:
        index = min(len(self.requests) - 1, len(self._recorded) - 1)
        return self._recorded[index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            leftover = b""
            while True:
                request = await self._read_request(reader, leftover)
                if request is None:
                    return
                seen, leftover = request
                self.requests.append(seen)
                recorded = self._next_response()
                writer.write(recorded.raw)
                await writer.drain()
                if not recorded.keeps_connection:
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(
        reader: asyncio.StreamReader, leftover: bytes
    ) -> tuple[SeenRequest, bytes] | None:
        """One whole request (head and body), and the bytes that followed it."""
        server = h11.Connection(our_role=h11.SERVER)
        if leftover:
            server.receive_data(leftover)
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = server.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                server.receive_data(data)
                if not data and head is None:
                    return None  # the client closed an idle connection
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = tuple(
                    (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                    for k, v in head.headers  # names lowercased by h11
                )
                seen = SeenRequest(
                    head.method.decode(), head.target.decode("latin-1"), headers, bytes(body)
                )
                rest, _closed = server.trailing_data
                return seen, bytes(rest)
            elif isinstance(event, h11.ConnectionClosed):
                return None
