"""The HTTP client the bridge talks to its upstream with: aiohttp's, configured once.

aiohttp speaks HTTP/1.1 for the bridge: a C-accelerated response parser, connection pooling,
TLS, HTTP(S) proxies (a `CONNECT` tunnel for an https upstream) and content decoding (gzip,
deflate, and br / zstd where their decoders are installed; it advertises only those). Nothing
here parses HTTP by hand. The bridge used httpx's client API on top of aiohttp before; that
layer (request building, URL merging, cookie extraction, byte-stream wrappers) cost about 0.2
ms of CPU per call, a fifth of a unary call (bench/README.md, issue 16).

What this module adds to aiohttp:

- `network_for`: the proxy and the CA certificates from the environment, as the openai SDK
  reads them, resolved once at start, so that an unusable one is a configuration error then
  (`ProxyError`, `TrustError`) and not a failure of every call.
- `make_session`: one session per process (STYLE.md: one HTTP client per process), configured
  from `Config` and that `Network`: pool size, keep-alive, header size limits that tolerate
  what real servers send, no cookie jar. Redirects are never followed (the client passes
  `allow_redirects=False`).
- `BodyReader`: a response body read chunk by chunk, handing on the bytes aiohttp had already
  received when the connection fails (aiohttp raises first and would drop them).
- `classify` / `describe` / `is_transport_failure`: the one table from a foreign exception
  (aiohttp's, ssl's, the OS's, asyncio's timeout) to a
  `bridge.upstream.transport_failures.TransportKind`, and a person's wording of it.
- `pool_stats`: connections open and in use, for tests and operators.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import certifi
from aiohttp.http_exceptions import BadHttpMessage
from multidict import CIMultiDictProxy
from yarl import URL

from bridge.upstream.transport_failures import TransportKind

__all__ = [
    "BodyReader",
    "Headers",
    "Network",
    "ProxyError",
    "Response",
    "TrustError",
    "classify",
    "describe",
    "is_transport_failure",
    "make_session",
    "network_for",
    "pool_stats",
    "proxy_for",
    "trust",
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


MAX_INTERIM_RESPONSES = 16
"""Interim (1xx) responses accepted before the final one. RFC 9110 section 15.2 sets no
limit and real servers send one or two (`100 Continue`, `103 Early Hints`), but aiohttp reads
them in a loop without one: an upstream flooding them held a core until the head timeout,
slowing every other call (a reviewer's neighbouring calls reached 3.6 s)."""


class _Response(aiohttp.ClientResponse):
    """aiohttp's response, refusing a head preceded by more than MAX_INTERIM_RESPONSES
    interim responses (an `UPSTREAM_PROTOCOL_ERROR`; the connection is closed).

    `ClientResponse.start` reads message after message from its protocol until one is final;
    the protocol's `read` is wrapped for the duration of `start` to count them.
    tests/test_upstream_boundary.py's 1xx flood fails if aiohttp ever reads otherwise.
    """

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        if protocol is None:
            return await super().start(connection)
        read = protocol.read
        count = 0

        async def bounded_read() -> Any:
            nonlocal count
            count += 1
            if count > MAX_INTERIM_RESPONSES + 1:
                raise BadHttpMessage(
                    f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses before the "
                    "final one"
                )
            return await read()

        protocol.read = bounded_read
        try:
            return await super().start(connection)
        finally:
            with contextlib.suppress(AttributeError):
                del protocol.read  # the protocol's own method again, for the next request


class ProxyError(ValueError):
    """The environment names a proxy the bridge cannot use (a SOCKS proxy, a bad URL)."""


class TrustError(ValueError):
    """The environment names CA certificates the bridge cannot load (SSL_CERT_FILE / _DIR)."""


def proxy_for(url: str) -> str | None:
    """The proxy URL for requests to `url`, from the environment, or None to connect directly.

    `HTTP_PROXY` / `HTTPS_PROXY` by the upstream's scheme, else `ALL_PROXY`; `NO_PROXY` names
    hosts reached directly. Upper or lower case, read by the standard library's
    `urllib.request.getproxies()` and `proxy_bypass()` (which also ignore `HTTP_PROXY` in a CGI
    environment, httpoxy). Read once at start: the base URL is fixed. Raises `ProxyError` for
    a proxy that is not http:// or https:// (aiohttp has no SOCKS client) or not a valid URL;
    its message names the variable, never the URL (which may hold a password).
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    key = parts.scheme if proxies.get(parts.scheme) else "all"
    proxy = proxies.get(key)
    if not proxy or urllib.request.proxy_bypass(parts.netloc.rpartition("@")[2]):
        return None
    # getproxies() prefers the lower-case variable: name the one it read.
    variable = f"{key}_proxy" if os.environ.get(f"{key}_proxy") else f"{key.upper()}_PROXY"
    if "://" not in proxy:
        proxy = "http://" + proxy  # `HTTP_PROXY=host:3128`, as curl and httpx read it
    try:
        scheme = urlsplit(proxy).scheme.lower()
        host = URL(proxy).host
    except ValueError as exc:
        raise ProxyError(f"{variable} is not a valid proxy URL: {exc}") from None
    if scheme not in ("http", "https"):
        why = " (aiohttp has no SOCKS client)" if scheme.startswith("socks") else ""
        raise ProxyError(
            f"{variable} names a {scheme}:// proxy; the bridge supports only http:// and "
            f"https:// proxies{why}: unset {variable}, or list the upstream's host in NO_PROXY"
        )
    if not host:
        raise ProxyError(f"{variable} is not a valid proxy URL: it names no host")
    return proxy


def trust() -> ssl.SSLContext:
    """The TLS context for the upstream: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (a private
    CA), else certifi's bundle, as httpx and the openai SDK trust by default. Raises
    `TrustError` when the certificates named cannot be loaded."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        cafile = certifi.where()
        source = f"certifi's bundle ({cafile})"
    else:
        named = [
            f"{name}={value}"
            for name, value in (("SSL_CERT_FILE", cafile), ("SSL_CERT_DIR", capath))
            if value
        ]
        source = " and ".join(named)
    if cafile is None and capath is not None and not os.path.isdir(capath):
        # OpenSSL would accept it and then trust nothing: every call would fail.
        raise TrustError(f"cannot load the CA certificates of {source}: not a directory")
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TrustError(f"cannot load the CA certificates of {source}: {reason}") from None


@dataclass(frozen=True, slots=True)
class Network:
    """How the upstream is reached, read from the environment once at start (`network_for`)."""

    proxy: URL | None
    """The proxy (scheme, host and port only), or None to connect directly."""
    proxy_auth: aiohttp.BasicAuth | None
    """The credentials in the proxy's URL (`http://user:password@host:port`), sent to the
    proxy as Proxy-Authorization and never to the upstream."""
    ssl: ssl.SSLContext
    """The CA certificates the upstream's certificate must chain to (`trust`)."""


def network_for(base_url: str) -> Network:
    """The proxy and TLS trust for `base_url`, from the environment. Raises `ProxyError` or
    `TrustError` (configuration errors) when either is unusable."""
    proxy = proxy_for(base_url)
    if proxy is None:
        return Network(None, None, trust())
    url = URL(proxy)
    try:
        # UTF-8, as curl and httpx send a percent-encoded non-ASCII password (aiohttp's
        # default, Latin-1, would send other bytes, or fail every call).
        auth = aiohttp.BasicAuth.from_url(url, encoding="utf-8")
        if auth is not None:
            auth.encode()
    except ValueError as exc:  # UnicodeEncodeError included
        raise ProxyError(f"the credentials in the proxy URL cannot be sent: {exc}") from None
    return Network(url.origin(), auth, trust())


def make_session(
    network: Network, *, max_connections: int, headers: dict[str, str]
) -> aiohttp.ClientSession:
    """The process's one upstream session (create it inside the running event loop).

    `headers` are sent with every request. Timeouts are given per request.
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_EXPIRY,
        ssl=network.ssl,
    )
    return aiohttp.ClientSession(
        connector=connector,
        response_class=_Response,
        headers=headers,
        proxy=network.proxy,
        proxy_auth=network.proxy_auth,
        # Proxies and trust are read once, at start (`network_for`); trust_env would also
        # read ~/.netrc and re-read the environment on every request.
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
    undecodable = _undecodable(exc)
    if undecodable is not None:
        message = str(getattr(undecodable, "message", "") or undecodable)
        if "content-encoding" not in message.lower():
            message = f"Can not decode content-encoding: {message}"  # a cut deflate stream
        cause = undecodable.__cause__ or undecodable.__context__
        return f"{message} ({cause})" if cause is not None and str(cause) else message
    for item in _chain(exc):
        if isinstance(item, aiohttp.ClientHttpProxyError):
            return f"the proxy answered {item.status} {item.message}".rstrip()
        if isinstance(item, aiohttp.ClientResponseError) and item.message:
            # The parser quotes the bytes it refused as a Python literal (b'HTTP/1.1 2oo').
            return "invalid HTTP response: " + _BYTES_LITERAL.sub(r"'\1'", str(item.message))
        if isinstance(item, aiohttp.ServerDisconnectedError):
            # Its str() is the repr of the half-parsed response aiohttp held, if any.
            return "the connection was closed"
        if isinstance(item, aiohttp.ClientPayloadError):
            # "Response payload is not completed: <ContentLengthError: 400, message=...>":
            # the parser's own words (its exception is the cause), without class and code.
            why = getattr(item.__cause__, "message", None)
            if isinstance(why, str) and why:
                return f"the response body is incomplete: {why}"
            return "the response body is incomplete"
        verify_message = getattr(item, "verify_message", None)  # ssl's, not aiohttp's copy
        if isinstance(item, ssl.SSLCertVerificationError) and verify_message:
            return str(verify_message)
    return str(exc) or type(exc).__name__


_BYTES_LITERAL = re.compile(r"\bb'([^']*)'")


def _undecodable(exc: BaseException) -> BaseException | None:
    """aiohttp's ContentEncodingError in the chain of `exc`, or None: a body whose content
    coding does not decode (bad gzip, a deflate stream cut short, br or zstd without their
    decoder installed). aiohttp raises it inside a payload error while the body is read, or
    inside a response error when the whole body arrived with the head, which is then never
    handed on: the status, 2xx or not, is unknown."""
    return next((e for e in _chain(exc) if type(e).__name__ == "ContentEncodingError"), None)


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
    if _undecodable(exc) is not None:
        # A content coding that does not decode (bad gzip): never retried, even when it
        # failed with the head (a 2xx may have been billed).
        return "malformed"
    for item in chain:
        if isinstance(item, aiohttp.ClientHttpProxyError) and item.status == 407:
            return "proxy_refused"  # a CONNECT tunnel the proxy would not open
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
