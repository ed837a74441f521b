"""A local OpenAI-compatible development upstream.

`make demo`, the integration tests, the fault suite and the benchmarks need a real HTTP
upstream on loopback: real sockets, real keep-alive, real chunked streaming, real resets. This
module is one, on aiohttp's low-level web server (aiohttp is already a runtime dependency, and
its HTTP/1.1 parser and writer have met far more inputs than a hand-written one): a connection
costs one aiohttp `RequestHandler`, so thousands of idle keep-alive connections stay cheap.

What it answers is `dev.upstream.api` (deterministic, so a test can compare what the bridge
returns with a direct REST call); how it answers is `dev.upstream.faults`:
`DevUpstream.program()` queues faults for the next requests of a model. The faults that need
the socket itself (resets, cuts, hangs) act on the request's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import ERROR, RequestHandler

from dev.upstream.api import (
    MODELS,
    RecordedRequest,
    embedding_vector,
    error_reply,
    is_models_path,
    model_of,
    route,
)
from dev.upstream.exchange import WebExchange
from dev.upstream.faults import (
    Behavior,
    CutStream,
    Delay,
    Empty,
    FullReply,
    Hang,
    Html,
    Huge,
    MalformedJson,
    MalformedSse,
    Redirect,
    Reply,
    Reset,
    SlowBody,
    SlowStream,
    Status,
    StreamError,
    WrongContentType,
    deliver,
)

__all__ = [
    "MODELS",
    "Behavior",
    "CutStream",
    "Delay",
    "DevUpstream",
    "Empty",
    "Hang",
    "Html",
    "Huge",
    "MalformedJson",
    "MalformedSse",
    "RecordedRequest",
    "Redirect",
    "Reset",
    "SlowBody",
    "SlowStream",
    "Status",
    "StreamError",
    "WrongContentType",
    "embedding_vector",
    "serve_forever",
]

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
"""Request bodies beyond this are answered 413 (and recorded with an empty body)."""

MAX_HEADER_LINE = 16 * 1024
"""Longest request line or header field aiohttp accepts here (h11's default limit, which the
development upstream had before; aiohttp's own default is 8 KiB)."""


async def _read_body(request: web.BaseRequest) -> tuple[bytes, bool]:
    """The request body, or b"" and True when it exceeds `MAX_BODY` (read to the end anyway,
    so that the 413 can be sent on a connection in a known state)."""
    parts: list[bytes] = []
    size = 0
    async for data in request.content.iter_any():
        size += len(data)
        if size <= MAX_BODY:
            parts.append(data)
    if size > MAX_BODY:
        return b"", True
    return b"".join(parts), False


def _record(request: web.BaseRequest, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in request.raw_headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    parsed: Any | None = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return RecordedRequest(
        request.method,
        request.raw_path,
        headers,
        body,
        parsed,
        asyncio.get_running_loop().time(),
    )


class _WebServer(web.Server):
    """aiohttp's low-level server, telling its `DevUpstream` about connections."""

    def __init__(self, owner: DevUpstream, **kwargs: Any) -> None:
        super().__init__(
            owner._handle, handler_cancellation=True, request_factory=self._request, **kwargs
        )
        self.owner = owner
        self.transports: dict[RequestHandler, asyncio.Transport] = {}

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # A request too malformed to parse has no version, and aiohttp answers its 400 as
        # HTTP/1.0; this is an HTTP/1.1 server, and says so in every status line.
        if message is ERROR:
            message = message._replace(version=HttpVersion11)
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.transports[handler] = transport
        self.owner.open_connections += 1
        self.owner.connections_accepted += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if self.transports.pop(handler, None) is not None:
            self.owner.open_connections -= 1


# ---------------------------------------------------------------------------------------------
# The server.


class DevUpstream:
    """The development upstream: start it, point the bridge at `url`, program faults.

    Counters for tests: `active_responses` (requests being answered, from the end of the
    request to the end of the response, so a `Hang` counts), `disconnects` (clients that
    closed before their response was complete), `open_connections`, `connections_accepted`
    (all connections ever opened, so a test can tell reuse from reconnecting).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        stream_interval: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.stream_interval = stream_interval
        self.requests: list[RecordedRequest] = []
        self.active_responses = 0
        self.disconnects = 0
        self.open_connections = 0
        self.connections_accepted = 0
        self._programs: dict[str, deque[Behavior]] = {}
        self._server: asyncio.Server | None = None
        self._web: _WebServer | None = None
        self._exchanges: dict[asyncio.Task[Any], WebExchange] = {}

    @property
    def url(self) -> str:
        """The base URL the bridge uses, `/v1` included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        """Bind and listen; afterwards `port` is the real port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._web = _WebServer(
            self,
            access_log=None,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        self._server = await loop.create_server(self._web, self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection, cancel the handlers and wait for them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for exchange in self._exchanges.values():
            exchange.closed_by_us = True
        if self._web is not None:
            for transport in list(self._web.transports.values()):
                transport.abort()
        tasks = list(self._exchanges)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let connection_lost run, so open_connections reads 0
        await server.wait_closed()

    async def __aenter__(self) -> DevUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def program(self, model: str, *behaviors: Behavior) -> None:
        """Queue `behaviors` for the next requests naming `model` (the JSON body's `model`,
        or the id of `GET /v1/models/{model}`), one per request, in order. Requests failing
        authentication do not consume them. An empty queue means the normal behaviour."""
        self._programs.setdefault(model, deque()).extend(behaviors)

    # -- answering (the aiohttp request handler)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Record the request, answer it through `deliver`, count disconnects.

        aiohttp cancels this handler when its connection is lost (handler_cancellation), which
        is how `Hang`, delays and slow streams notice a client going away. After a cut or a
        reset, or once the client has gone, the handler waits for that cancellation instead
        of returning a response aiohttp would try to finish on a closed connection.
        """
        body, too_large = await _read_body(request)
        recorded = _record(request, body)
        self.requests.append(recorded)
        exchange = WebExchange(request, self._next_request_id())
        task = asyncio.current_task()
        assert task is not None
        self._exchanges[task] = exchange
        self.active_responses += 1
        try:
            try:
                await self._answer(exchange, recorded, too_large)
            except ConnectionError:
                pass  # the client went away: connection_lost cancels this handler
            except Exception:
                logger.exception(
                    "dev upstream failed to answer %s %s", recorded.method, recorded.path
                )
                with contextlib.suppress(ConnectionError):
                    await exchange.fail()
            response = exchange.response
            if response is None or exchange.closed_by_us or not exchange.complete:
                await asyncio.get_running_loop().create_future()  # until connection_lost
                raise AssertionError("unreachable")
            return response
        except asyncio.CancelledError:
            if not exchange.complete and not exchange.closed_by_us:
                self.disconnects += 1
            raise
        finally:
            self.active_responses -= 1
            self._exchanges.pop(task, None)

    def _next_request_id(self) -> str:
        return "req_" + uuid.uuid4().hex

    async def _answer(
        self, exchange: WebExchange, request: RecordedRequest, too_large: bool
    ) -> None:
        if too_large:
            reply: Reply = error_reply(
                413,
                "The request body is too large.",
                "invalid_request_error",
                None,
                "request_too_large",
            )
            await deliver(exchange, reply, None, None)
            return
        if not self._authorized(request):
            await deliver(exchange, self._unauthorized(request), None, None)
            return
        model = model_of(request)
        behavior = self._take(model)
        await deliver(exchange, route(request, self.stream_interval), behavior, model)

    def _take(self, model: str | None) -> Behavior | None:
        queue = self._programs.get(model) if model is not None else None
        return queue.popleft() if queue else None

    def _authorized(self, request: RecordedRequest) -> bool:
        path = request.path.split("?", 1)[0]
        if self.api_key is None or (request.method == "GET" and is_models_path(path)):
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_key

    def _unauthorized(self, request: RecordedRequest) -> FullReply:
        if "authorization" not in request.headers:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            message = "Incorrect API key provided."
        return error_reply(401, message, "authentication_error", None, "invalid_api_key")


async def serve_forever(
    host: str, port: int, *, api_key: str | None = None, stream_interval: float = 0.0
) -> None:
    """Run a `DevUpstream` until cancelled (`python -m dev.upstream`)."""
    async with DevUpstream(host, port, api_key=api_key, stream_interval=stream_interval) as dev:
        print(f"dev upstream listening on {dev.url}", flush=True)
        await asyncio.get_running_loop().create_future()
