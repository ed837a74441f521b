"""One exchange of the development upstream: `dev.upstream.replies.Exchange` over aiohttp.

`dev.upstream.delivery.deliver` writes a reply (or a fault) through this; `dev.upstream.server`
makes one per request.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping

from aiohttp import web

from dev.upstream.error_bodies import error_envelope
from dev.upstream.replies import JSON_TYPE, encode_json

__all__ = ["WebExchange"]


class WebExchange:
    """The response side of one request, as `dev.upstream.delivery.deliver` writes it.

    Writes go through an aiohttp `StreamResponse` (headers sent at `prepare`, chunked unless a
    length is given); `cut` and `reset` act on the request's transport. The sending methods
    raise `ConnectionError` once the client has gone (aiohttp raises
    `ClientConnectionResetError` on a closing transport).
    """

    def __init__(self, request: web.BaseRequest, request_id: str) -> None:
        self.request = request
        self.request_id = request_id
        self.response: web.StreamResponse | None = None
        self.head_request = request.method == "HEAD"
        self.complete = False
        """Whether the whole response was handed to the transport (or ended on purpose)."""
        self.closed_by_us = False

    def _response(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None,
    ) -> web.StreamResponse:
        # Lower-case names, as the h11-based server sent them; later entries win.
        merged = {
            "content-type": content_type,
            "x-request-id": self.request_id,
            "server": "bridge-devserver",
        }
        if content_length is not None:
            merged["content-length"] = str(content_length)
        merged.update((k.lower(), v) for k, v in headers.items())
        response = web.StreamResponse(status=status)
        for name, value in merged.items():
            response.headers[name] = value
        return response

    async def _prepare(self, response: web.StreamResponse) -> None:
        if self.closed_by_us:
            raise ConnectionResetError("the connection was closed")
        self.response = response
        await response.prepare(self.request)

    def _has_body(self) -> bool:
        assert self.response is not None
        return not self.head_request and self.response.status not in (204, 304)

    async def send_full(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        response = self._response(status, content_type, headers, len(body))
        await self._prepare(response)
        self.complete = True
        if body and self._has_body():
            await response.write(body)
        await response.write_eof()

    async def send_head(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None = None,
    ) -> None:
        await self._prepare(self._response(status, content_type, headers, content_length))

    async def send_data(self, data: bytes) -> None:
        assert self.response is not None
        if data and self._has_body():
            await self.response.write(data)

    async def finish(self) -> None:
        assert self.response is not None
        self.complete = True
        await self.response.write_eof()

    async def cut(self) -> None:
        # close(), not abort(): what was written still arrives, then a plain FIN.
        self.complete = True
        self.closed_by_us = True
        transport = self.request.transport
        if transport is not None:
            transport.close()

    def reset(self) -> None:
        self.complete = True
        self.closed_by_us = True
        transport = self.request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def fail(self) -> None:
        """An unexpected error in a handler: a 500 if nothing was sent yet, else a reset."""
        if self.response is None and not self.closed_by_us:
            body = encode_json(error_envelope("dev upstream internal error", "server_error"))
            await self.send_full(500, body, JSON_TYPE, {})
        else:
            self.reset()
