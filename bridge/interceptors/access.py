"""Who may use the bridge, checked in one place: a grpc.aio server interceptor.

The bridge holds a credential of its own (an API key or OIDC token). Lending it to whoever
reaches the port would make the bridge an open proxy to a paid account, so a call that relies
on it must prove who it is:

- a verified client certificate (mutual TLS, `--tls-client-ca`: gRPC has already refused
  any connection without one), or
- a bridge access token in `x-bridge-token` metadata, one of the `--access-token-sha256`
  digests (only digests are configured; comparison is constant-time), or
- when neither mechanism is configured: coming from loopback (`make run`, tests, a sidecar
  on the same host), or any peer with `--trust-network`.

A call that brings its own `authorization` metadata spends its own credential: it is
forwarded unless `--caller-credentials refuse`. A bridge without a credential has nothing to
lend, so its calls pass (the upstream decides). Health and reflection are always open.

An unauthorized call must cost almost nothing (DESIGN.md "Credentials": "refused from its
metadata, before its message is read"). A protobuf message can take about 80 times its wire
size once parsed (a repeated empty message is 2 bytes on the wire, an object in memory), so the
guard takes over deserialization: the handler it returns receives the request's raw bytes,
decides access first (metadata, peer address, client certificate), then refuses a request over
--max-message-bytes by its wire size, and only then parses it with the service's deserializer.
The peer address is not known in `intercept_service` (grpc.aio's HandlerCallDetails has only
the method and metadata), which is why the decision runs in the handler, before parsing.

The interceptor also counts the calls in flight, so a shutdown can tell a clean drain from
calls it had to cancel, and tags answers with the worker that served them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf.message import DecodeError

from bridge.config import Config, is_loopback_host
from bridge.interceptors import observation
from bridge.status import BRIDGE_DOMAIN, BridgeError, resource_exhausted

TOKEN_KEY = "x-bridge-token"
"""Metadata key of the bridge access token (never forwarded upstream)."""

WORKER_KEY = "x-bridge-worker"
"""Trailing metadata naming the worker process (0..N-1) that served a call."""

API_PREFIX = "/aigateway.v1."


def token_digest(token: str) -> str:
    """The SHA-256 hex digest to configure in --access-token-sha256 for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def _is_local_peer(peer: str) -> bool:
    """True when the caller connected over loopback or a Unix socket (grpc peer strings)."""
    if peer.startswith("unix:"):
        return True
    scheme, _, address = peer.partition(":")  # "ipv4:127.0.0.1:5000", "ipv6:%5B::1%5D:5000"
    if scheme not in ("ipv4", "ipv6"):
        return False
    host = unquote(address).rpartition(":")[0].strip("[]")
    # A dual-stack socket shows an IPv4 caller as ::ffff:a.b.c.d: judge the IPv4 address.
    return is_loopback_host(host.removeprefix("::ffff:"))


class Denied(Exception):
    """A call the access rules refuse; `code`, `message` and `reason` become its status.

    The status carries an ErrorInfo (domain `bridge`) like every other error of the bridge, so
    clients tell "the bridge refused me" from "the upstream refused my key" by its reason.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def to_error(self) -> BridgeError:
        return BridgeError(self.code, self.message, reason=self.reason, domain=BRIDGE_DOMAIN)


class AccessPolicy:
    """The access rules of one configuration, applied to one call's metadata and peer."""

    def __init__(self, config: Config) -> None:
        self.has_credential = config.credential is not None
        self.refuse_caller_credentials = config.caller_credentials == "refuse"
        self.mtls = config.tls_client_ca is not None
        self.digests = config.access_token_digests
        self.trust_network = config.trust_network

    def check(self, metadata: dict[str, str], context: grpc.aio.ServicerContext) -> None:
        """Raise Denied unless the call may proceed. Never echoes what the caller sent."""
        if "authorization" in metadata:
            if self.refuse_caller_credentials:
                raise Denied(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this bridge does not forward callers' own credentials "
                    "(--caller-credentials refuse): remove the 'authorization' metadata and "
                    f"authenticate to the bridge instead ('{TOKEN_KEY}' metadata or a client "
                    "certificate)",
                    "CALLER_CREDENTIALS_REFUSED",
                )
            return
        if not self.has_credential:
            return
        if self.mtls and context.auth_context().get("x509_pem_cert"):
            return
        token = metadata.get(TOKEN_KEY)
        if self.digests:
            if token is not None and self._token_ok(token):
                return
            what = "an unknown" if token is not None else "no"
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this call relies on the bridge's upstream credential but has {what} "
                f"bridge access token: send a valid token as '{TOKEN_KEY}' metadata"
                + (" or connect with a client certificate" if self.mtls else "")
                + ", or bring your own upstream key as 'authorization: Bearer <key>'",
                "BRIDGE_TOKEN_INVALID" if token is not None else "BRIDGE_TOKEN_MISSING",
            )
        if self.mtls:
            # Unreachable in practice: gRPC refuses TLS connections without a client cert.
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                "this call relies on the bridge's upstream credential: connect with a "
                "client certificate signed by the bridge's --tls-client-ca",
                "CLIENT_CERTIFICATE_REQUIRED",
            )
        if self.trust_network or _is_local_peer(context.peer()):
            return
        raise Denied(
            grpc.StatusCode.PERMISSION_DENIED,
            "this bridge lends its upstream credential only to callers on its own host: "
            "bring your own key as 'authorization: Bearer <key>' metadata, or ask the "
            "bridge's operator for an access token (--access-token-sha256) or a client "
            "certificate (--tls-client-ca)",
            "NOT_A_LOCAL_CALLER",
        )

    def _token_ok(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).digest()
        ok = False
        for expected in self.digests:  # no early exit: time does not depend on which matched
            ok |= hmac.compare_digest(digest, expected)
        return ok


class CallTracker:
    """Counts the API calls in flight, so shutdown can wait for them to drain."""

    def __init__(self) -> None:
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def wait_idle(self, within: float) -> bool:
        """True when no call is in flight within `within` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True


Behavior = Callable[..., Any]
Deserializer = Callable[[bytes], Any]


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies AccessPolicy to every aigateway.v1 call, tracks it, tags it with the worker.

    The handler it returns has no request deserializer: its behaviour gets the raw bytes and
    parses them only once the call is admitted and within --max-message-bytes (see the module
    docstring). Only unary-request methods exist in aigateway.v1; a client-streaming one would
    be refused at registration (RuntimeError) rather than served unguarded.
    """

    def __init__(self, config: Config, tracker: CallTracker) -> None:
        self.policy = AccessPolicy(config)
        self.tracker = tracker
        self.max_message_bytes = config.max_message_bytes
        self.worker = None if config.worker_index is None else str(config.worker_index)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(API_PREFIX):
            return handler
        parse: Deserializer = handler.request_deserializer or (lambda raw: raw)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, parse),
                request_deserializer=None,  # raw bytes: parsed after the access check
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, parse),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        raise RuntimeError(f"{details.method}: client-streaming methods are not guarded")

    async def _admit(
        self, raw: bytes, parse: Deserializer, context: grpc.aio.ServicerContext
    ) -> Any:
        """The parsed request of an admitted call; aborts the call otherwise.

        Order: access rules (UNAUTHENTICATED / PERMISSION_DENIED), then the wire size
        (RESOURCE_EXHAUSTED naming --max-message-bytes), then parsing (INVALID_ARGUMENT
        INVALID_REQUEST when the bytes are not the method's request message).
        """
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            self.policy.check(metadata, context)
        except Denied as denied:
            await denied.to_error().abort(context)
        if self.worker is not None:
            context.set_trailing_metadata(((WORKER_KEY, self.worker),))
        if len(raw) > self.max_message_bytes:
            await resource_exhausted("max_message_bytes", self.max_message_bytes, len(raw)).abort(
                context
            )
        try:
            request = parse(raw)
        except DecodeError as exc:
            # The parser's message names the type, never the caller's bytes.
            await BridgeError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid request: not a valid protobuf message ({exc})",
                reason="INVALID_REQUEST",
                domain=BRIDGE_DOMAIN,
            ).abort(context)
        observation.request_read(request)
        return request

    def _unary(self, behavior: Behavior, parse: Deserializer) -> Behavior:
        async def guarded(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            self.tracker.enter()
            try:
                request = await self._admit(raw, parse, context)
                del raw  # the parsed request replaces the bytes for the rest of the call
                return await behavior(request, context)
            finally:
                self.tracker.leave()

        return guarded

    def _streaming(self, behavior: Behavior, parse: Deserializer) -> Behavior:
        async def guarded(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self.tracker.enter()
            try:
                request = await self._admit(raw, parse, context)
                del raw
                # aclosing: a cancelled call closes the servicer's generator (and with it the
                # upstream response) at once, not whenever it is garbage-collected.
                async with contextlib.aclosing(behavior(request, context)) as messages:
                    async for message in messages:
                        yield message
            finally:
                self.tracker.leave()

        return guarded
