"""A local OpenAI-compatible development upstream.

`make demo`, the integration tests, the fault suite and the benchmarks need a real HTTP
upstream on loopback: real sockets, real keep-alive, real chunked streaming, real resets. This
module is one, in plain asyncio on top of `h11` (already a dependency of httpx), so it adds no
dependency and stays light enough for thousands of idle keep-alive connections: a connection
costs one `asyncio.Protocol`, and a task exists only while a request is being answered.

What it answers is `bridge.devapi` (deterministic, so a test can compare what the bridge
returns with a direct REST call); how it answers is `bridge.devfaults`:
`DevUpstream.program()` queues faults for the next requests of a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import uuid
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, cast

import h11

from bridge.devapi import (
    MODELS,
    RecordedRequest,
    embedding_vector,
    error_reply,
    is_models_path,
    model_of,
    route,
)
from bridge.devfaults import (
    JSON_TYPE,
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
    encode_json,
    error_envelope,
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

# ---------------------------------------------------------------------------------------------
# HTTP/1.1 on h11.


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Connection(asyncio.Protocol):
    """One client connection: h11 parsing, keep-alive, flow control, and the `Exchange` that
    `bridge.devfaults.deliver` writes the current response through.

    The client going away (EOF or error) cancels the handler task, which is how `Hang`, delays
    and slow streams notice a disconnect at once, and how `disconnects` is counted.
    """

    def __init__(self, server: DevUpstream) -> None:
        self._server = server
        self._h11 = h11.Connection(h11.SERVER)
        self._transport: asyncio.Transport | None = None
        self._head: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._task: asyncio.Task[None] | None = None
        self._request_id = ""
        self._head_request = False
        self._complete = True
        """Whether the current response was entirely handed to the transport."""
        self._gone = False
        self._closing_by_us = False
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server._attach(self)

    def data_received(self, data: bytes) -> None:
        self._h11.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        # HTTP/1.1 clients do not half-close: EOF means the client is gone.
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        self._server._detach(self)
        self._wake_writer()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    # -- requests

    def _pump(self) -> None:
        """Turn buffered bytes into requests; start a handler when one is complete."""
        while self._task is None and not self._gone:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._reject(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._start_request(event)
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size <= MAX_BODY:
                    self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _start_request(self, event: h11.Request) -> None:
        self._head, self._body, self._body_size = event, [], 0
        if self._h11.they_are_waiting_for_100_continue:
            self._send_now(h11.InformationalResponse(status_code=100, headers=[]))

    def _dispatch(self) -> None:
        assert self._head is not None
        too_large = self._body_size > MAX_BODY
        request = _record(self._head, b"" if too_large else b"".join(self._body))
        self._server.requests.append(request)
        self._body = []
        self._request_id = self._server._next_request_id()
        self._head_request = request.method == "HEAD"
        self._complete = False
        self._task = asyncio.get_running_loop().create_task(self._handle(request, too_large))
        self._server._tasks.add(self._task)
        self._task.add_done_callback(self._handled)

    async def _handle(self, request: RecordedRequest, too_large: bool) -> None:
        self._server.active_responses += 1
        try:
            await self._server._answer(self, request, too_large)
        except ConnectionError:
            pass
        except Exception:
            logger.exception("dev upstream failed to answer %s %s", request.method, request.path)
            self._fail()
        finally:
            self._server.active_responses -= 1

    def _handled(self, task: asyncio.Task[None]) -> None:
        """After a response: next keep-alive cycle (maybe a pipelined request), or close."""
        self._server._tasks.discard(task)
        self._task = None
        if self._gone or self._closing_by_us or self._transport is None:
            return
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._pump()
        else:
            self._close()

    def _reject(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        self._request_id = self._server._next_request_id()
        body = encode_json(error_envelope(str(exc), "invalid_request_error"))
        with contextlib.suppress(h11.LocalProtocolError):
            self._send_now(
                self._response(status, JSON_TYPE, {}, len(body)),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
        self._close()

    def _fail(self) -> None:
        """An unexpected error in a handler: a 500 if nothing was sent yet, else a reset."""
        if self._gone:
            return
        if self._h11.our_state is h11.SEND_RESPONSE:
            body = encode_json(error_envelope("dev upstream internal error", "server_error"))
            self._send_now(
                self._response(500, JSON_TYPE, {}, len(body)),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
            self._complete = True
        else:
            self.reset()

    def _lost(self) -> None:
        if self._gone:
            return
        self._gone = True
        if self._task is not None and not self._task.done():
            if not self._complete and not self._closing_by_us:
                self._server.disconnects += 1
            self._task.cancel()

    # -- writing

    def _response(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None,
    ) -> h11.Response:
        merged = {
            "content-type": content_type,
            "x-request-id": self._request_id,
            "server": "bridge-devserver",
        }
        if content_length is not None:
            merged["content-length"] = str(content_length)
        merged.update((k.lower(), v) for k, v in headers.items())
        return h11.Response(
            status_code=status, headers=list(merged.items()), reason=_reason(status)
        )

    def _encode(self, *events: h11.Event) -> bytes:
        return b"".join(self._h11.send(e) or b"" for e in events)

    def _send_now(self, *events: h11.Event) -> None:
        if self._transport is not None and not self._gone:
            self._transport.write(self._encode(*events))

    async def _write(self, data: bytes) -> None:
        if self._gone or self._transport is None:
            raise ConnectionResetError("the client disconnected")
        self._transport.write(data)
        if self._paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter
            if self._gone:
                raise ConnectionResetError("the client disconnected")

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self) -> None:
        self._closing_by_us = True
        if self._transport is not None:
            self._transport.close()

    # -- bridge.devfaults.Exchange

    async def send_full(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        response = self._response(status, content_type, headers, len(body))
        events: list[h11.Event] = [response]
        if body and not self._head_request and status not in (204, 304):
            events.append(h11.Data(data=body))
        data = self._encode(*events, h11.EndOfMessage())
        self._complete = True
        await self._write(data)

    async def send_head(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None = None,
    ) -> None:
        await self._write(
            self._encode(self._response(status, content_type, headers, content_length))
        )

    async def send_data(self, data: bytes) -> None:
        if data and not self._head_request:
            await self._write(self._encode(h11.Data(data=data)))

    async def finish(self) -> None:
        data = self._encode(h11.EndOfMessage())
        self._complete = True
        await self._write(data)

    async def cut(self) -> None:
        # close(), not abort(): what was written still arrives, then a plain FIN.
        self._complete = True
        self._close()

    def reset(self) -> None:
        self._complete = True
        self._closing_by_us = True
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def stop(self) -> None:
        """Server shutdown: drop the connection without counting a disconnect."""
        self._closing_by_us = True
        if self._transport is not None:
            self._transport.abort()


def _record(head: h11.Request, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    parsed: Any | None = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return RecordedRequest(
        head.method.decode("ascii"),
        head.target.decode("latin-1"),
        headers,
        body,
        parsed,
        asyncio.get_running_loop().time(),
    )


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
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The base URL the bridge uses, `/v1` included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        """Bind and listen; afterwards `port` is the real port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection, cancel the handlers and wait for them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.stop()
        tasks = list(self._tasks)
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

    # -- used by _Connection

    def _attach(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self.open_connections += 1
        self.connections_accepted += 1

    def _detach(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self.open_connections -= 1

    def _next_request_id(self) -> str:
        return "req_" + uuid.uuid4().hex

    async def _answer(
        self, exchange: _Connection, request: RecordedRequest, too_large: bool
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
    """Run a `DevUpstream` until cancelled (`python -m bridge dev-upstream`)."""
    async with DevUpstream(host, port, api_key=api_key, stream_interval=stream_interval) as dev:
        print(f"dev upstream listening on {dev.url}", flush=True)
        await asyncio.get_running_loop().create_future()
