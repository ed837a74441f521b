"""The upstream HTTP side: one pooled httpx.AsyncClient, credentials, retries, SSE streams.

Every httpx exception and every non-2xx answer is turned into a `BridgeError` here, at
this one boundary, so the servicers only ever see the package's own error type. Retries
follow DESIGN.md and happen only before the first result reaches the caller; the caller's
deadline bounds every attempt and every backoff sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import orjson

from bridge import errors
from bridge.config import Config
from bridge.errors import BridgeError
from bridge.observe import UpstreamHooks
from bridge.retry import RetryPolicy
from bridge.sse import EventTooLarge, SSEDecoder
from bridge.transport import FastTransport

log = logging.getLogger(__name__)

__version__ = "0.1.0"
USER_AGENT = f"aigateway-bridge/{__version__}"

FORWARDED_METADATA = frozenset(
    {
        "x-request-id",
        "traceparent",
        "tracestate",
        "http-referer",
        "x-title",
        "ai-reporting-tags",
        "ai-reporting-user",
    }
)
"""Caller metadata keys sent on as upstream request headers (besides `authorization`)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded JSON answer and the upstream's response headers."""

    data: dict[str, Any]
    headers: httpx.Headers


class Upstream:
    """The one HTTP client of the process, with the rules for talking to the upstream."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        # Set by bridge.observe: told about every attempt (metrics, spans, access log).
        self.hooks: UpstreamHooks | None = None
        # The default allowlist plus --forward-metadata (checked by Config.validate).
        self.forwarded = FORWARDED_METADATA | config.extra_forwarded_metadata
        self.base_url = config.upstream_url.rstrip("/")
        self.domain = config.upstream_host
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts,
            initial_backoff=config.initial_backoff,
            max_backoff=config.max_backoff,
        )
        self._rng = rng or random.Random()
        if transport is None and config.upstream_http == "fast":
            transport = FastTransport(max_connections=config.max_connections)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            # Credentials must reach only the configured origin: never follow redirects.
            follow_redirects=False,
            timeout=httpx.Timeout(config.upstream_timeout, connect=config.connect_timeout),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def pool_stats(self) -> tuple[int, int]:
        """(open, in use) upstream connections, so tests can see nothing is left in use.

        Both transports keep a `connections` list of objects with `is_closed()`/`is_idle()`:
        FastTransport itself, and httpcore's pool behind httpx's own transport.
        """
        transport = self._client._transport
        pool: Any = transport if isinstance(transport, FastTransport) else None
        if isinstance(transport, httpx.AsyncHTTPTransport):
            pool = transport._pool
        if pool is None:
            return 0, 0
        live = [conn for conn in pool.connections if not conn.is_closed()]
        return len(live), sum(1 for conn in live if not conn.is_idle())

    # ------------------------------------------------------------------ headers

    def headers_for(self, metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
        """Upstream headers for a call: the caller's own credential or the bridge's."""
        headers: dict[str, str] = {}
        for key, value in metadata:
            if isinstance(value, bytes):
                continue
            if key == "authorization" or key in self.forwarded:
                headers[key] = value
        if "authorization" not in headers and self.config.credential:
            headers["authorization"] = f"Bearer {self.config.credential}"
        return headers

    # ------------------------------------------------------------------ unary

    async def get_json(
        self,
        path: str,
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None = None,
    ) -> Reply:
        return await self._retrying(
            lambda: self._exchange("GET", path, None, headers, deadline, model), deadline
        )

    async def post_json(
        self,
        path: str,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None = None,
    ) -> Reply:
        content = _encode(body)
        return await self._retrying(
            lambda: self._exchange("POST", path, content, headers, deadline, model), deadline
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None,
    ) -> Reply:
        # The caller's deadline bounds the attempt (grpc ends the call then). Without one,
        # --upstream-timeout bounds the whole attempt, not only each read, so an upstream that
        # dribbles its body cannot hold the call forever.
        limit = None if deadline is not None else self.config.upstream_timeout
        try:
            async with asyncio.timeout(limit):
                response = await self._send(method, path, content, headers, deadline, stream=False)
                try:
                    body = await self._read_body(response, deadline)
                    if response.status_code >= 300:
                        raise self._http_error(response, body, model)
                    return Reply(self._decode_object(response, body), response.headers)
                finally:
                    await response.aclose()
        except TimeoutError:
            if limit is None:  # not ours: only the timeout above is turned into a status
                raise
            raise self._transport_error(
                httpx.ReadTimeout(f"no complete answer within {limit:g} s (--upstream-timeout)"),
                None,
            ) from None

    # ------------------------------------------------------------------ streaming

    def stream(
        self,
        path: str,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None = None,
        until: Literal["done", "eof"] = "done",
    ) -> EventStream:
        """An SSE stream of JSON events. `until="done"` (chat) requires `data: [DONE]` and
        raises UNAVAILABLE at an earlier end of body; `until="eof"` (Responses API, which
        ends with a terminal event instead) ends the iteration quietly at the end of the
        body, and the caller judges whether the last event was a terminal one."""
        return EventStream(self, path, _encode(body), headers, deadline, model, until)

    # ------------------------------------------------------------------ plumbing

    def url_for_model(self, model: str) -> str:
        """`/models/{model}` with the id literal: slashes kept, anything unsafe escaped."""
        return "/models/" + quote(model, safe="/:@-._~!$&'()*+,;=")

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        deadline: float | None,
        *,
        stream: bool,
    ) -> httpx.Response:
        timeout = self._timeout(deadline)
        request_headers = dict(headers)
        if content is not None:
            request_headers["content-type"] = "application/json"
        if stream:
            request_headers["accept"] = "text/event-stream"
        request = self._client.build_request(
            method,
            self.base_url + path,
            content=content,
            headers=request_headers,
            timeout=timeout,
        )
        if self.hooks is not None:
            self.hooks.started(request)
        try:
            response = await self._client.send(request, stream=True)
        except BaseException as exc:
            if self.hooks is not None:
                self.hooks.failed(request, exc)
            if isinstance(exc, httpx.HTTPError):
                raise self._transport_error(exc, deadline) from None
            raise
        if self.hooks is not None:
            self.hooks.responded(request, response)
        return response

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        read = self.config.upstream_timeout
        connect = self.config.connect_timeout
        if deadline is not None:
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
            read = min(read, remaining)
            connect = min(connect, remaining)
        return httpx.Timeout(read, connect=connect)

    async def _read_body(self, response: httpx.Response, deadline: float | None) -> bytes:
        limit = self.config.max_response_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise errors.transport_error(
                "too_large",
                domain=self.domain,
                detail=f"it announced {declared} bytes; the limit is {limit} bytes "
                "(--max-response-bytes)",
                request_id=response.headers.get("x-request-id"),
            )
        parts: list[bytes] = []
        size = 0
        try:
            async for part in response.aiter_bytes():
                size += len(part)
                if size > limit:
                    raise errors.transport_error(
                        "too_large",
                        domain=self.domain,
                        detail=f"the response exceeded the limit of {limit} bytes "
                        "(--max-response-bytes)",
                        request_id=response.headers.get("x-request-id"),
                    )
                parts.append(part)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline, response) from None
        return b"".join(parts)

    def _decode_object(self, response: httpx.Response, body: bytes) -> dict[str, Any]:
        content_type = response.headers.get("content-type", "")
        request_id = response.headers.get("x-request-id")
        if content_type and "json" not in content_type:
            raise errors.transport_error(
                "malformed",
                domain=self.domain,
                request_id=request_id,
                detail=f"expected JSON, got content-type {content_type!r}: {_excerpt(body)}",
            )
        try:
            data = _loads(body)
        except ValueError:
            raise errors.transport_error(
                "malformed",
                domain=self.domain,
                request_id=request_id,
                detail=f"the response body is not valid JSON: {_excerpt(body)}",
            ) from None
        if type(data) is not dict:
            raise errors.transport_error(
                "malformed",
                domain=self.domain,
                request_id=request_id,
                detail=f"expected a JSON object, got {type(data).__name__}",
            )
        if isinstance(data.get("error"), dict):
            raise errors.from_stream_error(data["error"], domain=self.domain, request_id=request_id)
        return data

    def _http_error(self, response: httpx.Response, body: bytes, model: str | None) -> BridgeError:
        if 300 <= response.status_code < 400:
            return errors.transport_error(
                "redirect",
                domain=self.domain,
                request_id=response.headers.get("x-request-id"),
                detail=f"the upstream answered {response.status_code} redirecting to "
                f"{_origin(response.headers.get('location', ''))}",
            )
        # The credential this request carried (the caller's or the bridge's), never to be
        # echoed back in the status.
        credential = response.request.headers.get("authorization", "").partition(" ")[2]
        return errors.from_http_response(
            response.status_code,
            body,
            response.headers,
            domain=self.domain,
            model=model,
            secrets=(credential.strip(),),
        )

    def _transport_error(
        self,
        exc: httpx.HTTPError,
        deadline: float | None,
        response: httpx.Response | None = None,
        cut: Literal["body_cut", "stream_cut"] = "body_cut",
    ) -> BridgeError:
        """Classify an httpx failure; `cut` names a connection lost after the response began."""
        request_id = response.headers.get("x-request-id") if response is not None else None
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            spent = deadline is not None and asyncio.get_running_loop().time() >= deadline - 0.005
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) and not spent:
                kind = "connect"
            else:
                kind = "deadline" if spent else "read_timeout"
        elif isinstance(exc, httpx.ConnectError):
            kind = "connect"
        elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            kind = "reset" if response is None else cut
        else:
            kind = "protocol"
        return errors.transport_error(
            kind,  # type: ignore[arg-type]
            domain=self.domain,
            detail=detail,
            request_id=request_id,
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        """Run `attempt` until it succeeds, fails for good, or time or attempts run out."""
        loop = asyncio.get_running_loop()
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except BridgeError as error:
                if not error.retryable or tries >= self.policy.max_attempts:
                    raise
                delay = self.policy.backoff(tries, error.retry_after, rng=self._rng)
                if deadline is not None and loop.time() + delay >= deadline:
                    raise
                log.info(
                    "retrying upstream call",
                    extra={
                        "attempt": tries + 1,
                        "delay_s": round(delay, 3),
                        "code": error.code.name,
                    },
                )
                await asyncio.sleep(delay)


class EventStream:
    """An upstream SSE stream that owns its HTTP response and always closes it.

    Iterating yields each event's decoded JSON object as soon as it arrives. `[DONE]`
    ends the iteration; an error object or `event: error` raises the mapped BridgeError;
    the end of the body without `[DONE]` raises UNAVAILABLE. Retries happen only while
    nothing has been yielded.
    """

    def __init__(
        self,
        upstream: Upstream,
        path: str,
        content: bytes,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None,
        until: Literal["done", "eof"] = "done",
    ) -> None:
        self._until = until
        self._upstream = upstream
        self._path = path
        self._content = content
        self._headers = headers
        self._deadline = deadline
        self._model = model
        self._response: httpx.Response | None = None
        self.response_headers: httpx.Headers | None = None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    async def _open(self) -> AsyncIterator[dict[str, Any]]:
        """Open the response and pull events until the first one (the retryable part)."""
        up = self._upstream
        response = await up._send(
            "POST", self._path, self._content, self._headers, self._deadline, stream=True
        )
        self._response = response
        if response.status_code >= 300:
            body = await up._read_body(response, self._deadline)
            await self.aclose()
            raise up._http_error(response, body, self._model)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            body = await up._read_body(response, self._deadline)
            await self.aclose()
            # A JSON error envelope sent with 200 instead of a stream is still an error.
            data = up._decode_object(response, body)
            raise errors.transport_error(
                "malformed",
                domain=up.domain,
                request_id=response.headers.get("x-request-id"),
                detail=f"expected an event stream, got content-type {content_type!r}: "
                f"{_excerpt(json.dumps(data).encode())}",
            )
        self.response_headers = response.headers
        async for event in self._events(response):
            yield event

    async def _events(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        up = self._upstream
        request_id = response.headers.get("x-request-id")
        decoder = SSEDecoder(up.config.max_response_bytes)
        try:
            parts = response.aiter_raw()
            async for part in parts:
                for event in decoder.feed(part):
                    data = self._decode(event.event, event.data, request_id)
                    if data is None:
                        await self._finish_body(parts)
                        return
                    yield data
            tail = decoder.close()
            if tail is not None:
                data = self._decode(tail.event, tail.data, request_id)
                if data is None:
                    return
                yield data
            if self._until == "eof":
                return
        except EventTooLarge as exc:
            raise errors.transport_error(
                "too_large",
                domain=up.domain,
                detail=f"{exc} (--max-response-bytes)",
                request_id=request_id,
            ) from None
        except httpx.HTTPError as exc:
            raise up._transport_error(exc, self._deadline, response, "stream_cut") from None
        raise errors.transport_error(
            "stream_cut",
            domain=up.domain,
            request_id=request_id,
            detail="the upstream closed the stream before sending [DONE]",
        )

    async def _finish_body(self, parts: AsyncIterator[bytes]) -> None:
        """Read what follows `[DONE]` (normally just the end of the chunked body), briefly.

        A response read to its end gives its connection back to the pool; one closed early
        is dropped, and the next stream pays a new TCP and TLS handshake. An upstream that
        goes on sending or stays open after `[DONE]` only loses its connection, as before.
        """
        budget = _DRAIN_SECONDS
        if self._deadline is not None:
            budget = min(budget, self._deadline - asyncio.get_running_loop().time() - 0.01)
        if budget <= 0:
            return
        received = 0
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(budget):
                async for part in parts:
                    received += len(part)
                    if received > _DRAIN_BYTES:
                        return

    def _decode(self, event: str, data: str, request_id: str | None) -> dict[str, Any] | None:
        up = self._upstream
        if data == "[DONE]":
            return None
        try:
            obj = _loads(data)
        except ValueError:
            if event == "error":
                raise errors.from_stream_error(
                    {"message": data}, domain=up.domain, request_id=request_id
                ) from None
            raise errors.transport_error(
                "malformed",
                domain=up.domain,
                request_id=request_id,
                detail=f"a stream event is not valid JSON: {_excerpt(data.encode())}",
            ) from None
        if type(obj) is not dict:
            raise errors.transport_error(
                "malformed",
                domain=up.domain,
                request_id=request_id,
                detail=f"a stream event is a JSON {type(obj).__name__}, not an object",
            )
        error = obj.get("error")
        if error is not None or event == "error":
            payload = error if isinstance(error, dict) else {"message": str(error or obj)}
            raise errors.from_stream_error(payload, domain=up.domain, request_id=request_id)
        return obj

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        up = self._upstream
        loop = asyncio.get_running_loop()
        tries = 0
        events: AsyncIterator[dict[str, Any]] | None = None
        try:
            while True:
                tries += 1
                events = self._open()
                try:
                    first = await events.__anext__()
                except StopAsyncIteration:
                    return
                except BridgeError as error:
                    await events.aclose()  # type: ignore[attr-defined]
                    await self.aclose()
                    if not error.retryable or tries >= up.policy.max_attempts:
                        raise
                    delay = up.policy.backoff(tries, error.retry_after, rng=up._rng)
                    if self._deadline is not None and loop.time() + delay >= self._deadline:
                        raise
                    await asyncio.sleep(delay)
                    continue
                yield first
                async for event in events:
                    yield event
                return
        finally:
            if events is not None:
                await events.aclose()  # type: ignore[attr-defined]
            await self.aclose()


_DRAIN_SECONDS = 0.05
"""How long a stream waits after `[DONE]` for its body's end, to keep the connection."""
_DRAIN_BYTES = 64 * 1024
"""How much it reads after `[DONE]` before it gives up on the connection."""


def _loads(text: bytes | str) -> Any:
    """Decode upstream JSON: orjson (6x faster on a 5 MB embeddings answer), else json.

    What orjson refuses (NaN, Infinity, lone surrogates) the standard library still reads,
    so the bridge accepts what it always did. Integers past 64 bits come back as floats;
    the translation could only store them as doubles anyway.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)
        except RecursionError:  # nested over ~1000 deep (orjson stops at 1024)
            raise ValueError("JSON nested too deeply to decode") from None


def _encode(body: dict[str, Any]) -> bytes:
    """Request bodies are JSON: a NaN or Infinity (validate.json_values refuses them first)
    is a ValueError here, never the invalid tokens `NaN` / `Infinity` on the wire."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _origin(location: str) -> str:
    """Where a redirect points, as scheme://host[:port] only: a path or query may carry
    signed tokens, and the origin is all an operator needs to fix the upstream URL."""
    parts = urlsplit(location)
    if not parts.netloc:
        return "a path on the same origin" if location else "nowhere (no location header)"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme else parts.netloc


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = " ".join(body.decode("utf-8", errors="replace").split())
    if not text:
        return "(empty body)"
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
