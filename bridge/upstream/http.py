"""The HTTP client the bridge talks to its upstream with: httpx's API on aiohttp's transport.

httpx is the client API (requests, headers, timeouts, content decoding, proxies from the
environment, as the openai SDK reads them); beneath it, aiohttp speaks HTTP/1.1 through the
`httpx-aiohttp` package (which the openai SDK also uses): a C-accelerated response parser,
connection pooling, TLS, and HTTP(S) proxies. Nothing here parses HTTP by hand.

What this module adds to that pair:

- `make_client`: one client per process, configured from `Config` (pool size, keep-alive,
  header size limits that tolerate what real servers send, `trust_env` proxies and CA
  bundles), never following redirects (credentials stay with the configured origin).
- `classify`: the one table from a foreign exception (httpx's, aiohttp's, ssl's, asyncio's
  timeout) to a `bridge.upstream.failures.TransportKind`; codes, reasons and retryability come from
  `bridge.upstream.failures`' table for that kind.
- `pool_stats`: connections open and in use, for tests and operators.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient
from httpx_aiohttp.transport import map_aiohttp_exceptions

from bridge.upstream.transport_failures import TransportKind

__all__ = ["classify", "describe", "is_transport_failure", "make_client", "pool_stats"]

MAX_FIELD_SIZE = 128 * 1024
"""Largest response header line aiohttp accepts, in bytes (its default is 8190). Real servers
send long values (a 60 KB `x-request-id`, huge cookies from a proxy); such a value must not
fail the call (DESIGN.md: it is dropped from the metadata returned, never a failed call)."""

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle upstream connection is kept, as httpx does by default."""


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it, without losing its last bytes.

    When the connection fails mid-body, aiohttp's readers raise the failure before handing
    on what had already arrived, so the events an upstream sent just before a cut would be
    dropped whenever the bridge's reading lagged behind the network. This stream hands those
    bytes on first, then raises (DESIGN.md: every event, in order; then UNAVAILABLE).
    """

    def __init__(self, original: Any) -> None:
        self._original = original
        self._content: aiohttp.StreamReader = original._aiohttp_response.content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._content
        while True:
            try:
                chunk = await content.readany()
            except aiohttp.ClientError:
                rest = _buffered(content)
                if rest:
                    yield rest
                with map_aiohttp_exceptions():
                    raise
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        await self._original.aclose()


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp had received but not handed on (read from its buffer, which has no
    public accessor once the stream has failed)."""
    buffer = getattr(content, "_buffer", None)
    if not buffer:
        return b""
    data = b"".join(buffer)[getattr(content, "_buffer_offset", 0) :]
    buffer.clear()
    return data


class _Transport(AiohttpTransport):
    """httpx-aiohttp's transport with a session built here: header limits, pool, trust."""

    def __init__(self, *, limit: int, proxy: httpx.Proxy | None = None) -> None:
        super().__init__(proxy=proxy, trust_env=True)
        self._limit = limit

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            max_line_size=MAX_FIELD_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            # httpx decodes content codings itself (the ones it advertises), on every path.
            auto_decompress=False,
            # Cookies are not part of the OpenAI API; one caller's must not reach another.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        response.stream = _ResponseStream(response.stream)
        return response

    @property
    def session(self) -> aiohttp.ClientSession | None:
        return self.client if isinstance(self.client, aiohttp.ClientSession) else None


class _Client(HttpxAiohttpClient):
    """httpx.AsyncClient whose transports, the proxy ones included, are `_Transport`."""

    def __init__(self, *, limit: int, **kwargs: Any) -> None:
        self._limit = limit
        super().__init__(**kwargs)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return _Transport(limit=self._limit)

    def _init_proxy_transport(
        self, proxy: httpx.Proxy, *args: Any, **kwargs: Any
    ) -> httpx.AsyncBaseTransport:
        return _Transport(limit=self._limit, proxy=proxy)


def make_client(
    *, base_url: str, max_connections: int, headers: dict[str, str]
) -> httpx.AsyncClient:
    """The process's one upstream client.

    Proxies come from `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` / `NO_PROXY` and the CA
    bundle from `SSL_CERT_FILE` / `SSL_CERT_DIR`, as httpx and the openai SDK read them
    (`trust_env`). Redirects are never followed. Timeouts are given per request.
    """
    return _Client(
        limit=max_connections,
        base_url=base_url,
        follow_redirects=False,
        trust_env=True,
        headers=headers,
    )


def pool_stats(client: httpx.AsyncClient) -> tuple[int, int]:
    """(open, in use) upstream connections over every transport of `client`.

    Read from aiohttp's connector bookkeeping, which has no public accessor: for tests and
    diagnostics only, never for a decision on the request path.
    """
    transports: list[Any] = [getattr(client, "_transport", None)]
    transports += list(getattr(client, "_mounts", {}).values())
    opened = in_use = 0
    for transport in transports:
        session = transport.session if isinstance(transport, _Transport) else None
        if session is None or session.closed:
            continue
        connector: Any = session.connector
        idle = sum(len(conns) for conns in getattr(connector, "_conns", {}).values())
        busy = len(getattr(connector, "_acquired", ()))
        opened += idle + busy
        in_use += busy
    return opened, in_use


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transport_failure(exc: BaseException) -> bool:
    """Whether `exc` is a failure of the HTTP exchange that `classify` maps: one of httpx's,
    one of the OS's (asyncio's TimeoutError included), or one of aiohttp's that httpx-aiohttp
    let through unmapped."""
    return isinstance(exc, httpx.HTTPError | OSError) or _from_aiohttp(exc)


def _from_aiohttp(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("aiohttp")


def describe(exc: BaseException) -> str:
    """A person's description of a transport failure: the library's own words, without its
    wrapping (aiohttp's `400, message="...", url=...` names its parser's code, not a status)."""
    for item in _chain(exc):
        if isinstance(item, aiohttp.ClientResponseError) and item.message:
            return f"invalid HTTP response: {item.message}"
        verify_message = getattr(item, "verify_message", None)  # ssl's, not aiohttp's copy
        if isinstance(item, ssl.SSLCertVerificationError) and verify_message:
            return str(verify_message)
    return str(exc) or type(exc).__name__


def classify(
    exc: BaseException, *, responded: bool, cut: Literal["body_cut", "stream_cut"] = "body_cut"
) -> TransportKind:
    """The kind of a transport failure, from the exception and its causes.

    `responded` says whether the response head had arrived (a connection lost after it is
    `cut`, before it a `reset`). httpx-aiohttp re-raises aiohttp's exceptions as httpx's with
    the original as `__cause__`, and lets some through unchanged, so the whole chain is read:
    the most specific cause decides.
    """
    # aiohttp's own exception is the most specific (httpx-aiohttp's mapping is coarse: it
    # turns a server disconnect into httpx.ConnectTimeout); then httpx's, then the OS's.
    chain = sorted(_chain(exc), key=lambda e: 0 if _from_aiohttp(e) else 1)
    if isinstance(exc, httpx.RemoteProtocolError) and "location header" in str(exc):
        # httpx reads a redirect's Location even when it follows none: a 3xx answer.
        return "redirect"
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return "certificate"
    for item in chain:
        if isinstance(item, httpx.DecodingError):
            return "malformed"  # a content coding that does not decode (bad gzip)
        if isinstance(item, aiohttp.ConnectionTimeoutError | httpx.ConnectTimeout):
            return "connect"
        if isinstance(item, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
            return "connect"
        if isinstance(item, aiohttp.ClientConnectorError | httpx.ConnectError):
            return "connect"
        if isinstance(item, TimeoutError | httpx.TimeoutException):
            return "read_timeout"
        if isinstance(item, aiohttp.ClientResponseError | aiohttp.InvalidURL):
            return "protocol"  # a response head aiohttp could not parse
        if isinstance(
            item,
            aiohttp.ClientPayloadError
            | aiohttp.ServerDisconnectedError
            | aiohttp.ClientOSError
            | aiohttp.ClientConnectionError
            | httpx.ReadError
            | httpx.WriteError
            | httpx.RemoteProtocolError
            | ConnectionError,
        ):
            return cut if responded else "reset"
    return "protocol"
