"""A loopback TCP server that writes exactly the bytes under test, for upstream edge cases.

The development upstream speaks correct HTTP; real servers and hostile ones do not always.
`RawServer` runs a handler per connection on port 0 and counts connections and requests, so
a test can send a bare-LF head, an obs-folded header, endless 1xx answers or a trickle.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """Runs `handler` on each connection of a loopback listener."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1  # counted before any TLS handshake, which may fail
        self._writers.append(writer)
        try:
            if self.ssl_context is not None:
                await writer.start_tls(self.ssl_context)
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    @property
    def url(self) -> str:
        """The base URL (with /v1) of this server."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{port}/v1"

    async def read_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """One request: its request line, lower-cased headers and Content-Length body."""
        head = await reader.readuntil(b"\r\n\r\n")
        line, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for raw in lines:
            name, _, value = raw.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        self.requests.append((line, headers, body))
        return line, headers, body


def answering(*responses: bytes) -> Handler:
    """A handler answering successive requests on a connection with `responses`, verbatim."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for response in responses:
            await server.read_request(reader)
            writer.write(response)
            await writer.drain()
        await reader.read()

    return handler
