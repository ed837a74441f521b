"""The upstream boundary: requests out, answers or `BridgeError`s back, in one place.

Everything foreign that can happen while talking to the upstream (an HTTP error status, an
error object in a 200, a transport exception, a timeout, an echoed credential) becomes a
`BridgeError` here, by the one failure table in `bridge.upstream.failures`, so the servicers only
ever
see the package's own error type. The pieces:

- `headers_for`: the upstream request headers of a call, each value validated where it is
  built (DESIGN.md "Credentials": no control characters, whatever the source).
- `_open`: the one retry loop, around opening a request. It returns a 2xx response whose
  body is unread; anything else is read, mapped and retried or raised. A request the
  upstream answered with 2xx is never sent again (it may have been billed).
- `request_json`: a unary exchange (open, read the body within the limits, decode).
- `stream`: opens an SSE stream and hands it to `bridge.upstream.stream.EventStream`, which only
  decodes what the open response sends (as openai-python's `AsyncStream` does).

Every error leaving this module has passed through a `Redactor` of the credentials the call
carried, and carries the upstream's returned headers as trailing metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

import bridge
from bridge.config import Config, ConfigError
from bridge.status import BridgeError, invalid_argument
from bridge.telemetry.observability import Attempt, UpstreamHooks
from bridge.telemetry.redaction import Redactor
from bridge.upstream import body as body_module
from bridge.upstream import failures, http, transport_failures
from bridge.upstream.body import decode_object
from bridge.upstream.headers import FORWARDED_METADATA, header_value_problem, returned_metadata
from bridge.upstream.http import Headers, Response
from bridge.upstream.permits import ConnectionPermits
from bridge.upstream.stream import EventStream

log = logging.getLogger(__name__)

USER_AGENT = f"aigateway-bridge/{bridge.__version__}"


@dataclass(frozen=True, slots=True)
class _Call:
    """One upstream request as the boundary handles it, across its attempts."""

    method: str
    path: str
    content: bytes | None
    headers: Mapping[str, str]
    deadline: float | None
    """The caller's deadline on the event loop's clock, or None."""
    model: str | None
    """The model the request names, for a 404's ResourceInfo."""
    redact: Redactor
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded JSON answer, the upstream's response headers, and the metadata to return."""

    data: dict[str, Any]
    headers: Headers
    metadata: tuple[tuple[str, str], ...]
    """`returned_metadata` of the headers, credentials redacted: the call's initial metadata."""
    size: int
    """The (decoded) body's size in bytes."""


def network_of(config: Config) -> http.Network:
    """The proxy and CA certificates for the upstream, read once from the environment.
    Raises ConfigError when either is unusable, so it is refused at start (the supervisor
    of --workers checks it too, before it starts any worker)."""
    try:
        return http.network_for(config.upstream_url.rstrip("/"))
    except (http.ProxyError, http.TrustError) as exc:
        raise ConfigError(str(exc)) from None


class Upstream:
    """The one HTTP client of the process, with the rules for talking to the upstream."""

    def __init__(self, config: Config, *, rng: random.Random | None = None) -> None:
        self.config = config
        # Set by bridge.interceptors.observation: told about every attempt (metrics, spans, access
        # log).
        self.hooks: UpstreamHooks | None = None
        # The default allowlist plus --forward-metadata (checked by Config.validate).
        self.forwarded = FORWARDED_METADATA | config.extra_forwarded_metadata
        self.base_url = config.upstream_url.rstrip("/")
        self.domain = config.upstream_host
        self.policy = config.retry_policy
        self._rng = rng or random.Random()
        self._permits = ConnectionPermits(
            config.max_connections, domain=self.domain, connect_timeout=config.connect_timeout
        )
        self._network = network_of(config)
        self._session: aiohttp.ClientSession | None = None
        # Responses not yet closed: each holds a connection permit, and its attempt's span
        # (when tracing) ends when it is closed.
        self._open_responses: dict[Response, Attempt | None] = {}
        self._urls: dict[str, URL] = {}

    def session(self) -> aiohttp.ClientSession:
        """The process's one aiohttp session, made on first use (inside the event loop)."""
        if self._session is None:
            self._session = http.make_session(
                self._network,
                max_connections=self.config.max_connections,
                headers={"user-agent": USER_AGENT, "accept": "application/json"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def pool_stats(self) -> tuple[int, int]:
        """(open, in use) upstream connections, so tests can see nothing is left in use."""
        return (0, 0) if self._session is None else http.pool_stats(self._session)

    # ------------------------------------------------------------------ headers

    def headers_for(self, metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
        """Upstream headers for a call: the allow-listed caller metadata, and the caller's
        own credential or else the bridge's.

        Raises INVALID_ARGUMENT naming the key when a forwarded value could not be a header
        value (CR, LF, NUL, other controls, non-ASCII): it would otherwise let the caller
        write headers or a second request of its own (request smuggling).
        """
        headers: dict[str, str] = {}
        for key, value in metadata:
            if key == "authorization" or key in self.forwarded:
                if isinstance(value, bytes):
                    continue  # -bin keys are never on the allowlist
                problem = header_value_problem(value)
                if problem is None and key == "authorization":
                    scheme, _, credential = value.strip().partition(" ")
                    if not scheme:
                        problem = "is empty: send 'Bearer <key>', or leave it out"
                    elif scheme.lower() in ("bearer", "basic") and not credential.strip():
                        problem = f"has no key after '{scheme}': send '{scheme} <key>'"
                if problem is not None:
                    raise invalid_argument(f"metadata '{key}'", problem)
                headers[key] = value
        if "authorization" not in headers and self.config.credential:
            headers["authorization"] = f"Bearer {self.config.credential}"
        return headers

    def redactor(self, headers: Mapping[str, str | bytes]) -> Redactor:
        """Redacts the bridge's credential and the one this call carries (`headers` may be
        the call's raw metadata: only a str `authorization` counts)."""
        carried = headers.get("authorization", "")
        if not isinstance(carried, str):
            carried = ""
        return Redactor.of(self.config.credential, carried, carried.partition(" ")[2].strip())

    # ------------------------------------------------------------------ unary

    async def get_json(
        self,
        path: str,
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None = None,
    ) -> Reply:
        return await self.request_json("GET", path, None, headers, deadline, model)

    async def post_json(
        self,
        path: str,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None = None,
    ) -> Reply:
        return await self.request_json("POST", path, _encode(body), headers, deadline, model)

    async def request_json(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None,
    ) -> Reply:
        """One unary exchange: a JSON object back, or a `BridgeError`.

        Without a caller deadline, --upstream-timeout bounds the head and, separately, the
        whole body, so an upstream that dribbles cannot hold the call forever.
        """
        redact = self.redactor(headers)
        response: Response | None = None
        try:
            call = _Call(method, path, content, headers, deadline, model, redact)
            response = await self._open(call)
            try:
                body = await self.read_body(response, deadline)
            finally:
                await self.close(response)
            data = decode_object(response, body, self.domain, redact, where="in a 200 response")
            if redact.echoed_in(body, data):
                data = redact.json(data)  # an upstream echoing the key in an answer
            return Reply(
                data, response.headers, returned_metadata(response.headers, redact), len(body)
            )
        except BridgeError as error:
            raise self.failure(error, redact, response) from None

    # ------------------------------------------------------------------ streaming

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        model: str | None = None,
        until: Literal["done", "eof"] = "done",
    ) -> AsyncIterator[EventStream]:
        """Open an SSE stream (retrying only while opening) and yield its `EventStream`.

        `until="done"` (chat) requires `data: [DONE]` and raises UNAVAILABLE at an earlier
        end of body; `until="eof"` (Responses API, which ends with a terminal event instead)
        ends the iteration quietly at the end of the body. The response is closed on exit,
        whatever happened; every error raised inside is redacted and carries the returned
        headers.
        """
        redact = self.redactor(headers)
        response: Response | None = None
        try:
            call = _Call("POST", path, _encode(body), headers, deadline, model, redact, True)
            response = await self._open(call)
            events = EventStream(self, response, deadline, redact, until)
            try:
                yield events
            finally:
                await self.close(response)
        except BridgeError as error:
            raise self.failure(error, redact, response) from None

    # ------------------------------------------------------------------ the boundary

    def failure(
        self, error: BridgeError, redact: Redactor, response: Response | None
    ) -> BridgeError:
        """The error as it leaves the boundary: redacted, with the returned headers."""
        error = error.redacted(redact)
        if response is not None and not error.trailing:
            error.trailing = returned_metadata(response.headers, redact)
        else:
            error.trailing = tuple((key, redact(value)) for key, value in error.trailing)
        return error

    def transport_error(
        self,
        exc: BaseException,
        deadline: float | None,
        response: Response | None = None,
        cut: Literal["body_cut", "stream_cut"] = "body_cut",
    ) -> BridgeError:
        """Map a foreign exception by `http.classify` and the failure table."""
        kind = http.classify(exc, responded=response is not None, cut=cut)
        if kind in ("read_timeout", "connect") and _spent(deadline):
            kind = "deadline"
        detail = http.describe(exc)
        if kind == "redirect":
            detail = "its Location header is not a valid URL"
        elif kind == "read_timeout":  # aiohttp's per-read bound, which is --upstream-timeout
            detail = f"no data for {self.config.upstream_timeout:g} s (--upstream-timeout)"
        error = transport_failures.transport_error(
            kind,
            domain=self.domain,
            detail=detail,
            request_id=response.headers.get("x-request-id") if response is not None else None,
        )
        if response is not None:
            error.trailing = returned_metadata(response.headers, str)
        return error

    async def _open(self, call: _Call) -> Response:
        """The one retry loop: attempt until a 2xx response, a final failure, or time or
        attempts run out (DESIGN.md "Retries"). No attempt or sleep starts that cannot
        finish inside the caller's deadline."""
        loop = asyncio.get_running_loop()
        tries = 0
        while True:
            tries += 1
            try:
                return await self._attempt(call)
            except BridgeError as error:
                if not error.retryable or tries >= self.policy.max_attempts:
                    raise
                delay = self.policy.backoff(tries, error.retry_after, rng=self._rng)
                if call.deadline is not None and loop.time() + delay >= call.deadline:
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

    async def _attempt(self, call: _Call) -> Response:
        """One attempt: a 2xx response with its body unread, or the mapped error."""
        response = await self._send(call)
        status = response.status
        if 200 <= status < 300:
            return response
        if status < 200 or (status == 407 and self._network.proxy is not None):
            # Not a final status (aiohttp hands on 101 and anything under 100), or the HTTP
            # proxy in front of the upstream refusing the bridge (not the upstream's answer).
            await self.close(response)
            kind: transport_failures.TransportKind = "protocol" if status < 200 else "proxy_refused"
            raise transport_failures.transport_error(
                kind,
                domain=self.domain,
                detail=f"the answer's status was {status:03d} {response.reason or ''}".rstrip(),
            )
        try:
            body = await self.read_body(response, call.deadline)
        except BridgeError as unread:
            if unread.reason != "RESPONSE_TOO_LARGE":
                raise
            # An error body too large to read: the status still says what happened (a 500
            # must not read as the caller's own RESOURCE_EXHAUSTED).
            body = b"(a body over --max-response-bytes, not read)"
        finally:
            await self.close(response)
        if response.status < 400:
            error = transport_failures.transport_error(
                "redirect",
                domain=self.domain,
                request_id=response.headers.get("x-request-id"),
                detail=f"the upstream answered {response.status} redirecting to "
                f"{_origin(response.headers.get('location', ''))}",
            )
        else:
            error = failures.from_http_response(
                response.status,
                body,
                response.headers,
                domain=self.domain,
                model=call.model,
                redact=call.redact,
            )
        error.trailing = returned_metadata(response.headers, str)  # redacted by `failure`
        raise error

    async def _send(self, call: _Call) -> Response:
        """Send one request and wait for its response head (body unread).

        Waiting for a pooled connection is bounded by the caller's deadline, else by
        --connect-timeout, and answered UPSTREAM_POOL_EXHAUSTED. The head itself (with any
        number of 1xx answers before it) must arrive within --upstream-timeout in all.
        """
        deadline = call.deadline
        loop = asyncio.get_running_loop()
        remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
        request_headers = dict(call.headers)
        if call.content is not None:
            request_headers["content-type"] = "application/json"
        if call.stream:
            request_headers["accept"] = "text/event-stream"
        read = self.config.upstream_timeout
        connect = self.config.connect_timeout
        if remaining is not None:
            read, connect = min(read, remaining), min(connect, remaining)
        url = self._url(call.path)
        timeout = aiohttp.ClientTimeout(sock_read=read, sock_connect=connect)
        await self._permits.acquire(remaining)
        attempt = None
        if self.hooks is not None:
            attempt = self.hooks.started(call.method, url.path, request_headers)
        try:
            async with asyncio.timeout(self.config.upstream_timeout if deadline is None else None):
                response = await self.session().request(
                    call.method,
                    url,
                    data=call.content,
                    headers=request_headers,
                    timeout=timeout,
                    allow_redirects=False,
                )
        except BaseException as exc:
            self._permits.release()
            if attempt is not None:
                attempt.failed(exc)
            if isinstance(exc, TimeoutError) and deadline is None:
                raise transport_failures.transport_error(
                    "read_timeout",
                    domain=self.domain,
                    detail=f"no response head within {self.config.upstream_timeout:g} s "
                    "(--upstream-timeout)",
                ) from None
            if http.is_transport_failure(exc):
                raise self.transport_error(exc, deadline) from None
            raise
        self._open_responses[response] = attempt
        if attempt is not None:
            attempt.responded(response.status, response.headers, call.redact)
        return response

    def _url(self, path: str) -> URL:
        """The request URL of `path`: already percent-encoded (`url_for_model`), so yarl
        takes it as it is."""
        url = self._urls.get(path)
        if url is None:
            url = URL(self.base_url + path, encoded=True)
            if len(self._urls) < 64:  # the fixed routes; model paths vary
                self._urls[path] = url
        return url

    async def close(self, response: Response) -> None:
        """Close a response and give back its connection permit, exactly once.

        A body read to its end has already given its connection back to the pool; aiohttp
        drops the connection of one released early (what is left on it cannot be reused)."""
        try:
            response.release()
        finally:
            if response in self._open_responses:
                attempt = self._open_responses.pop(response)
                self._permits.release()
                if attempt is not None:
                    attempt.closed()

    async def read_body(self, response: Response, deadline: float | None) -> bytes:
        """The whole (decoded) body, at most --max-response-bytes, within the time left
        (`body.read_body`); a transport failure while reading is mapped as a cut body."""
        return await body_module.read_body(
            response,
            limit=self.config.max_response_bytes,
            bound=self.config.upstream_timeout if deadline is None else None,
            domain=self.domain,
            failed=lambda exc: self.transport_error(exc, deadline, response),
        )

    # ------------------------------------------------------------------ plumbing

    def url_for_model(self, model: str) -> str:
        """`/models/{model}` with the id literal: slashes kept, anything unsafe escaped."""
        return "/models/" + quote(model, safe="/:@-._~!$&'()*+,;=")


def _encode(body: dict[str, Any]) -> bytes:
    """Request bodies are JSON: a NaN or Infinity (validate.json_values refuses them first)
    is a ValueError here, never the invalid tokens `NaN` / `Infinity` on the wire."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _spent(deadline: float | None) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() >= deadline - 0.005


def _origin(location: str) -> str:
    """Where a redirect points, as scheme://host[:port] only: a path or query may carry
    signed tokens, and the origin is all an operator needs to fix the upstream URL."""
    parts = urlsplit(location)
    if not parts.netloc:
        return "a path on the same origin" if location else "nowhere (no location header)"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme else parts.netloc
