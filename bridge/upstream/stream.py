"""An open upstream SSE response, decoded into JSON events (after openai-python's AsyncStream).

`EventStream` does not open, retry or close anything: `Upstream.stream` opened the response
(2xx, with retries while opening) and closes it. This object only reads the body and turns it
into events, by DESIGN.md "Streaming":

- Events are decoded by the WHATWG rules (`bridge.upstream.sse`); each `data:` JSON object is one
  event, in order, as soon as it arrives. `data: [DONE]` (whitespace trimmed) ends the stream.
- An error in the stream (a top-level `error`, an `event: error`, a flat `{"type": "error"}`)
  raises its mapped status; the end of the body before `[DONE]` raises UNAVAILABLE.
- A body that is not an event stream at all (a bare JSON error envelope, served as
  `text/event-stream` or as JSON) raises the error it reports, or MALFORMED_RESPONSE.
- Media types are compared case-insensitively (RFC 9110 section 8.3.1); a response without
  a Content-Type is read as an event stream, as the openai SDK reads it.
- The silence between two events is bounded by --upstream-timeout, comments and keep-alives
  included (they do not count as events).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from bridge.status import BridgeError
from bridge.telemetry.redaction import Redactor
from bridge.upstream import envelope, http, stream_failures, transport_failures
from bridge.upstream.body import decode_object, loads, media_type
from bridge.upstream.headers import returned_metadata
from bridge.upstream.http import BodyReader, Response
from bridge.upstream.sse import Event, EventTooLarge, SSEDecoder

if TYPE_CHECKING:
    from bridge.upstream.client import Upstream

__all__ = ["EventStream"]

_DRAIN_SECONDS = 0.05
"""How long a stream waits after `[DONE]` for its body's end, to keep the connection."""
_DRAIN_BYTES = 64 * 1024
"""How much it reads after `[DONE]` before it gives up on the connection."""
_SNIFF_BYTES = 64
"""How much of the body start is looked at to tell an event stream from a bare JSON body."""


class _Silence:
    """The bound on silence between two events: one timer per stream, not one per read.

    `asyncio.timeout_at` around every read schedules and cancels a timer per chunk; here
    the deadline (`until`) is only a number moved forward per event, and one timer checks
    it when it would have expired, re-arming itself for the deadline as it is then. It
    cancels the task only while it waits in a read (`reading`), as a timeout around the
    read would; a deadline passed while the caller held the stream (at `yield`) is checked
    when the next read starts, as before. The reader turns the cancellation it caused into
    TimeoutError, and leaves anyone else's alone (`Task.uncancel`, as `asyncio.Timeout`).
    """

    __slots__ = ("_cancelling", "_fired", "_loop", "_task", "handle", "reading", "until")

    def __init__(self, loop: asyncio.AbstractEventLoop, silence: float) -> None:
        self._loop = loop
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = False
        self.reading = False
        self.until = loop.time() + silence
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.handle = self._loop.call_at(self.until, self._check)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _check(self) -> None:
        if self._loop.time() < self.until:
            self.handle = self._loop.call_at(self.until, self._check)
        elif self.reading:
            self.handle = None
            self._fired = True
            self._task.cancel()
        else:
            self.handle = None  # re-armed by the next read, with the deadline as it is then

    def expired(self) -> bool:
        """True when the CancelledError being handled is this bound's, and only its."""
        if not self._fired:
            return False
        self._fired = False
        return self._task.uncancel() <= self._cancelling


class EventStream:
    """The JSON events of one open SSE response; iterate it once.

    Yields each event's JSON object (a dict). Raises `BridgeError` for an error in the
    stream, a malformed event, an event over --max-response-bytes, a silence longer than
    --upstream-timeout, or a connection lost (UNAVAILABLE, never retried: the upstream
    answered 200). `response_headers` are the upstream's response headers.
    """

    def __init__(
        self,
        upstream: Upstream,
        response: Response,
        deadline: float | None,
        redact: Redactor,
        until: Literal["done", "eof"],
    ) -> None:
        self._upstream = upstream
        self._response = response
        self._deadline = deadline
        self._redact = redact
        self._until = until
        self._domain = upstream.domain
        self._request_id = response.headers.get("x-request-id")
        self.response_headers = response.headers

        self.metadata = returned_metadata(response.headers, redact)
        """The metadata to return to the caller (initial metadata), credentials redacted."""
        self.last_size = 0
        """The length of the `data` of the event just yielded (its JSON text, in characters)."""

    def _malformed(self, detail: str) -> BridgeError:
        return transport_failures.transport_error(
            "malformed", domain=self._domain, request_id=self._request_id, detail=detail
        )

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        response = self._response
        kind = media_type(response.headers)
        if kind not in ("", "text/event-stream"):
            # Not a stream: a JSON error envelope sent with 200, or something else entirely.
            await self._bare_json(await self._upstream.read_body(response, self._deadline), kind)
        loop = asyncio.get_running_loop()
        silence = self._upstream.config.upstream_timeout
        decoder = SSEDecoder(self._upstream.config.max_response_bytes)
        reader = BodyReader(response)
        first = True
        watch = _Silence(loop, silence)
        try:
            while True:
                if watch.handle is None:
                    watch.arm()
                watch.reading = True
                try:
                    part = await reader.read()
                except asyncio.CancelledError:
                    if watch.expired():
                        raise TimeoutError from None
                    raise
                finally:
                    watch.reading = False
                if not part:
                    break
                if first:
                    first = False
                    head = part.lstrip(b"\xef\xbb\xbf \t\r\n")
                    if head[:1] in (b"{", b"["):
                        body = await self._rest(part, reader)
                        await self._bare_json(body, kind or "no content-type")
                for event in decoder.feed(part):
                    data = self._decode(event)
                    if data is None:
                        await self._finish_body(reader)
                        return
                    watch.until = loop.time() + silence
                    self.last_size = len(event.data)
                    yield data
            tail = decoder.close()
            if tail is not None:
                data = self._decode(tail)
                if data is None:
                    return
                self.last_size = len(tail.data)
                yield data
        except EventTooLarge as exc:
            raise transport_failures.transport_error(
                "too_large",
                domain=self._domain,
                detail=f"{exc} (--max-response-bytes)",
                request_id=self._request_id,
            ) from None
        except TimeoutError as exc:
            raise transport_failures.transport_error(
                "read_timeout",
                domain=self._domain,
                detail=f"no event for {silence:g} s (--upstream-timeout)",
                request_id=self._request_id,
            ) from exc
        except BridgeError:
            raise
        except Exception as exc:
            if http.is_transport_failure(exc):
                raise self._upstream.transport_error(
                    exc, self._deadline, response, "stream_cut"
                ) from None
            raise
        finally:
            watch.disarm()
        if self._until == "done":
            raise transport_failures.transport_error(
                "stream_cut",
                domain=self._domain,
                request_id=self._request_id,
                detail="the upstream closed the stream before sending [DONE]",
            )

    async def _rest(self, first: bytes, reader: BodyReader) -> bytes:
        """The whole body of a stream whose first bytes were `first`, within the limit."""
        limit = self._upstream.config.max_response_bytes
        pieces, size = [first], len(first)
        while part := await reader.read():
            size += len(part)
            if size > limit:
                raise EventTooLarge(f"a JSON body in place of events exceeded {limit} bytes")
            pieces.append(part)
        return b"".join(pieces)

    async def _bare_json(self, body: bytes, kind: str) -> None:
        """Raise what a body that is a JSON document instead of events says."""
        decode_object(self._response, body, self._domain, self._redact, where="in the stream")
        shape = "a JSON document"
        with contextlib.suppress(ValueError):
            data = loads(body)
            if isinstance(data, dict) and "object" in data:
                shape = f"a JSON {data['object']!r} object"
        raise self._malformed(
            f"expected an event stream (text/event-stream), got {shape} ({kind}); "
            "does the upstream support streaming?"
        )

    def _decode(self, event: Event) -> dict[str, Any] | None:
        data = event.data
        if data == "[DONE]" or (data[-1:].isspace() and data.strip() == "[DONE]"):
            return None
        obj: dict[str, Any]
        try:
            obj = loads(data)
            problem = None if type(obj) is dict else f"a JSON {type(obj).__name__}, not an object"
        except ValueError as exc:
            # Redacted before cut (a key across the cut would escape the redaction).
            excerpt = " ".join(self._redact(data)[:400].split())[:200]
            problem = f"not valid JSON ({exc}): {excerpt!r}"
        if problem is not None:
            if event.event == "error":  # its data, whatever its shape, is the message
                raise stream_failures.from_stream_error(
                    {"message": self._redact(data)},
                    domain=self._domain,
                    request_id=self._request_id,
                )
            raise self._malformed(f"a stream event is {problem}")
        if "error" in obj or event.event == "error" or obj.get("type") == "error":
            error = envelope.error_object(obj, event=event.event)
            if error is not None:
                raise stream_failures.from_stream_error(
                    self._redact.json(error), domain=self._domain, request_id=self._request_id
                )
        if self._redact.echoed_in(data, obj):
            obj = self._redact.json(obj)  # an upstream echoing the key in an event
        return obj

    async def _finish_body(self, reader: BodyReader) -> None:
        """Read what follows `[DONE]` (normally just the end of the chunked body), briefly.

        A response read to its end gives its connection back to the pool; one closed early
        is dropped, and the next stream pays a new TCP and TLS handshake. An upstream that
        goes on sending or stays open after `[DONE]` only loses its connection.
        """
        budget = _DRAIN_SECONDS
        if self._deadline is not None:
            budget = min(budget, self._deadline - asyncio.get_running_loop().time() - 0.01)
        if budget <= 0:
            return
        received = 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(budget):
                while part := await reader.read():
                    received += len(part)
                    if received > _DRAIN_BYTES:
                        return
