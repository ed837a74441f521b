"""The HTTP client the bridge talks to its upstream with: aiohttp's, configured once.

aiohttp speaks HTTP/1.1 for the bridge: a C-accelerated response parser, connection pooling,
TLS, HTTP(S) proxies (a `CONNECT` tunnel for an https upstream) and content decoding (gzip,
deflate, and br / zstd where their decoders are installed; it advertises only those). Nothing
here parses HTTP by hand. The bridge used httpx's client API on top of aiohttp before; that
layer (request building, URL merging, cookie extraction, byte-stream wrappers) cost about 0.2
ms of CPU per call, a fifth of a unary call (bench/README.md, issue 16).

What this module adds to aiohttp:

- `make_session`: one session per process (STYLE.md: one HTTP client per process), configured
  from `Config`: pool size, keep-alive, header size limits that tolerate what real servers
  send, no cookie jar, the proxy and CA bundle from the environment as the openai SDK reads
  them. Redirects are never followed (`open_request` passes `allow_redirects=False`).
- `BodyReader`: a response body read chunk by chunk, handing on the bytes aiohttp had already
  received when the connection fails (aiohttp raises first and would drop them).
- `classify` / `describe` / `is_transport_failure`: the one table from a foreign exception
  (aiohttp's, ssl's, the OS's, asyncio's timeout) to a
  `bridge.upstream.transport_failures.TransportKind`, and a person's wording of it.
- `pool_stats`: connections open and in use, for tests and operators.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from yarl import URL

from bridge.upstream.transport_failures import TransportKind

__all__ = [
    "BodyReader",
    "Headers",
    "Response",
    "classify",
    "describe",
    "is_transport_failure",
    "make_session",
    "pool_stats",
    "proxy_for",
]

Response = aiohttp.ClientResponse
"""An upstream response: `.status`, `.headers` (case-insensitive), `.content` (the body)."""

Headers = CIMultiDictProxy[str]
"""An upstream response's headers: case-insensitive, repeated names kept in order."""

MAX_FIELD_SIZE = 128 * 1024
"""Largest response header line aiohttp accepts, in bytes (its default is 8190). Real servers
send long values (a 60 KB `x-request-id`, huge cookies from a proxy); such a value must not
fail the call (DESIGN.md: it is dropped from the metadata returned, never a failed call)."""

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle upstream connection is kept (httpx's and the openai SDK's default)."""


class ProxyError(ValueError):
    """The environment names a proxy the bridge cannot use (a SOCKS proxy, a bad URL)."""


def proxy_for(url: str) -> str | None:
    """The proxy URL for requests to `url`, from the environment, or None to connect directly.

    `HTTP_PROXY` / `HTTPS_PROXY` by the upstream's scheme, else `ALL_PROXY`; `NO_PROXY` names
    hosts reached directly. Upper or lower case, read by the standard library's
    `urllib.request.getproxies()` and `proxy_bypass()` (which also ignore `HTTP_PROXY` in a CGI
    environment, httpoxy). Read once at start: the base URL is fixed. Raises `ProxyError` for
    a proxy that is not http:// or https:// (aiohttp has no SOCKS client).
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc.rpartition("@")[2]):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy  # `HTTP_PROXY=host:3128`, as curl and httpx read it
    scheme = urlsplit(proxy).scheme.lower()
    if scheme not in ("http", "https"):
        raise ProxyError(
            f"the {scheme}:// proxy in the environment is not supported: only http:// and "
            "https:// proxies are (unset ALL_PROXY, or name the upstream's host in NO_PROXY)"
        )
    return proxy


def trust() -> ssl.SSLContext:
    """The TLS context for the upstream: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (a private
    CA), else certifi's bundle, as httpx and the openai SDK trust by default."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


def make_session(
    *, base_url: str, max_connections: int, headers: dict[str, str]
) -> aiohttp.ClientSession:
    """The process's one upstream session (create it inside the running event loop).

    `headers` are sent with every request. Timeouts are given per request. Raises
    `ProxyError` when the environment's proxy for `base_url` is unusable.
    """
    proxy = proxy_for(base_url)
    proxy_auth = None
    if proxy is not None:
        proxy_auth = aiohttp.BasicAuth.from_url(URL(proxy))
        parts = urlsplit(proxy)
        proxy = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_EXPIRY,
        ssl=trust(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        proxy=proxy,
        proxy_auth=proxy_auth,
        # Proxies and trust are read above, once; trust_env would also read ~/.netrc and
        # re-read the environment on every request.
        trust_env=False,
        max_line_size=MAX_FIELD_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        # Cookies are not part of the OpenAI API; one caller's must not reach another.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class BodyReader:
    """A response body, decoded (content codings), read as chunks in arrival order.

    When the connection fails mid-body, aiohttp's reader raises the failure before handing on
    what had already arrived, so the events an upstream sent just before a cut would be lost
    whenever the bridge's reading lagged behind the network. `read` hands those bytes on
    first and raises the failure at the next call (DESIGN.md: every event, in order; then
    UNAVAILABLE).
    """

    __slots__ = ("_content", "_failure")

    def __init__(self, response: Response) -> None:
        self._content = response.content
        self._failure: BaseException | None = None

    async def read(self) -> bytes:
        """The next chunk as it arrived (any size), or b"" at the end of the body. Raises
        aiohttp's exception for a failed connection, once what had arrived is handed on."""
        if self._failure is not None:
            raise self._failure
        try:
            return await self._content.readany()
        except aiohttp.ClientError as exc:
            rest = _buffered(self._content)
            if not rest:
                raise
            self._failure = exc
            return rest


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp had received but not handed on (read from its buffer, which has no
    public accessor once the stream has failed)."""
    buffer = getattr(content, "_buffer", None)
    if not buffer:
        return b""
    data = b"".join(buffer)[getattr(content, "_buffer_offset", 0) :]
    buffer.clear()
    return data


def pool_stats(session: aiohttp.ClientSession) -> tuple[int, int]:
    """(open, in use) upstream connections of `session`.

    Read from aiohttp's connector bookkeeping, which has no public accessor: for tests and
    diagnostics only, never for a decision on the request path.
    """
    if session.closed:
        return 0, 0
    connector: Any = session.connector
    idle = sum(len(conns) for conns in getattr(connector, "_conns", {}).values())
    busy = len(getattr(connector, "_acquired", ()))
    return idle + busy, busy


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transport_failure(exc: BaseException) -> bool:
    """Whether `exc` is a failure of the HTTP exchange that `classify` maps: one of aiohttp's
    or one of the OS's (asyncio's TimeoutError, which aiohttp's timeouts derive from,
    included)."""
    return isinstance(exc, aiohttp.ClientError | OSError) or _from_aiohttp(exc)


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
        if isinstance(item, aiohttp.ClientPayloadError) and _undecodable(item):
            return str(item.__cause__ or item)
    return str(exc) or type(exc).__name__


def _undecodable(exc: BaseException) -> bool:
    """A body whose content coding does not decode (bad gzip): aiohttp reports it as a
    payload error caused by its ContentEncodingError."""
    return any(type(item).__name__ == "ContentEncodingError" for item in _chain(exc)) or (
        "content-encoding" in str(exc).lower()
    )


def classify(
    exc: BaseException, *, responded: bool, cut: Literal["body_cut", "stream_cut"] = "body_cut"
) -> TransportKind:
    """The kind of a transport failure, from the exception and its causes.

    `responded` says whether the response head had arrived (a connection lost after it is
    `cut`, before it a `reset`). The whole chain is read; the most specific cause decides.
    """
    # aiohttp's own exception is the most specific; then the OS's.
    chain = sorted(_chain(exc), key=lambda e: 0 if _from_aiohttp(e) else 1)
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return "certificate"
    for item in chain:
        if isinstance(item, aiohttp.ClientPayloadError) and _undecodable(item):
            return "malformed"  # a content coding that does not decode (bad gzip)
        if isinstance(item, aiohttp.ConnectionTimeoutError):
            return "connect"
        if isinstance(item, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
            return "connect"
        if isinstance(item, aiohttp.ClientConnectorError):
            return "connect"
        if isinstance(item, TimeoutError):
            return "read_timeout"
        if isinstance(item, aiohttp.ClientResponseError | aiohttp.InvalidURL):
            return "protocol"  # a response head aiohttp could not parse
        if isinstance(
            item,
            aiohttp.ClientPayloadError
            | aiohttp.ServerDisconnectedError
            | aiohttp.ClientOSError
            | aiohttp.ClientConnectionError
            | ConnectionError,
        ):
            return cut if responded else "reset"
    return "protocol"
