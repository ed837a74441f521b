"""Assembling and running the gRPC server: services, health, reflection, security, shutdown.

`start` builds the server from a Config in one place: `interceptors()` lists the server
interceptors, `server_options()` the gRPC channel arguments (limits, keepalive),
`server_credentials()` the transport security. `serve` runs it until SIGTERM/SIGINT.

Exit codes of `serve` (and of `python -m bridge serve`): 0 when every call in flight
finished within --shutdown-grace, 3 (EXIT_CANCELLED) when some had to be cancelled; `run`
adds 1 (EXIT_FAILED) when the server cannot start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from aigateway.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    embeddings_pb2,
    embeddings_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    responses_pb2,
    responses_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bridge.config import DEFAULT_UPSTREAM, Config
from bridge.grpc_api.base import ChatService, EmbeddingsService, ModelsService
from bridge.grpc_api.responses import ResponsesService
from bridge.interceptors.access import CallTracker, GuardInterceptor
from bridge.interceptors.decoding import DecodingInterceptor
from bridge.server.reflection import Reflection
from bridge.telemetry.observability import Observability
from bridge.upstream.client import Upstream

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    models_pb2.DESCRIPTOR.services_by_name["ModelsService"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    embeddings_pb2.DESCRIPTOR.services_by_name["EmbeddingsService"].full_name,
    responses_pb2.DESCRIPTOR.services_by_name["ResponsesService"].full_name,
)


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpcio-health-checking's servicer with `List`, which it leaves UNIMPLEMENTED."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        """Every service with a status, and the server as a whole (`""`), as Check sees them."""
        reply = health_pb2.HealthListResponse()
        for name, status in list(self._server_status.items()):
            reply.statuses[name].status = status
        return reply


EXIT_DRAINED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3


@dataclass
class Bridge:
    """A started server with what it owns; `stop` releases all of it."""

    server: grpc.aio.Server
    upstream: Upstream
    health: HealthServicer
    port: int
    config: Config
    tracker: CallTracker = field(default_factory=CallTracker)
    observability: Observability | None = None

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def stop(
        self, grace: float | None = None, *, refusing: Callable[[], None] | None = None
    ) -> bool:
        """Flip health to NOT_SERVING, refuse new calls, give in-flight ones `grace` seconds.

        `refusing` is called once new calls are refused. Returns True when every API call
        finished in time, False when some were cancelled (cancelling a call closes its
        upstream request). Health watches and reflection streams do not count: they never
        finish on their own.
        """
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # the server's shutdown starts (and refuses calls) at once
        if refusing is not None:
            refusing()
        drained = await self.tracker.wait_idle(grace or 0.0)
        if drained:
            # Health watchers were told NOT_SERVING above; give that message a moment to
            # leave before the remaining watch/reflection streams are ended.
            await asyncio.sleep(min(grace or 0.0, 0.1))
            await self.server.stop(None)
        await stopping
        await self.upstream.aclose()
        if self.observability is not None:
            await self.observability.aclose()
        return drained


def interceptors(config: Config, tracker: CallTracker) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptors, outermost first: add new ones here.

    The guard (access rules, in-flight count, worker tag) applies to aigateway.v1 calls only.
    An interceptor that should also see refused calls (metrics, logs) goes before it.
    The decoding interceptor is innermost: it only turns an undecodable request into
    INVALID_ARGUMENT, after the outer ones have admitted the call.
    """
    return [GuardInterceptor(config, tracker), DecodingInterceptor()]


# grpc core's backlog of calls not yet taken by the application (see server_options).
MAX_PENDING_CALLS = 16_384


def server_options(config: Config) -> list[tuple[str, int]]:
    """gRPC core channel arguments: message sizes, stream limits, keepalive, connection age."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        # Twice --max-message-bytes: the guard (bridge.interceptors.access) checks the limit itself
        # on the
        # wire bytes, before parsing, and answers with details naming the option; grpc core's
        # own refusal, kept beyond that to bound the bytes buffered, has neither.
        ("grpc.max_receive_message_length", min(2 * config.max_message_bytes, 2**31 - 1)),
        # An answer is a translation of an upstream body of at most --max-response-bytes;
        # protobuf is mostly smaller than its JSON, Struct-heavy answers a little larger.
        ("grpc.max_send_message_length", min(2 * config.max_response_bytes, 2**31 - 1)),
        ("grpc.keepalive_time_ms", ms(config.keepalive_time)),
        ("grpc.keepalive_timeout_ms", ms(config.keepalive_timeout)),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(config.min_client_ping_interval)),
        ("grpc.keepalive_permit_without_calls", int(config.client_pings_without_calls)),
        # Several workers share the port only when they all ask for SO_REUSEPORT; a single
        # process must not, or a second bridge on the same port would silently share it.
        ("grpc.so_reuseport", int(config.workers > 1 or config.worker_index is not None)),
        # Calls that reached grpc core but that the aio server has not taken yet (it takes
        # them one at a time). Past 1,000 waiting (core's default) core drops new ones at
        # random, and past 3,000 all of them, with RST_STREAM: the client sees CANCELLED and
        # the bridge never sees the call. A burst of stream openings (clients reconnecting
        # their streams, the bench's 10,000 idle streams) gets there in a second.
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
    ]
    if config.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
    if config.max_connection_age:
        options.append(("grpc.max_connection_age_ms", ms(config.max_connection_age)))
        options.append(("grpc.max_connection_age_grace_ms", ms(config.max_connection_age_grace)))
    return options


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS (and with --tls-client-ca, required client certificates), or None: plaintext."""
    if not config.tls_cert or not config.tls_key:
        return None

    def read(path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    client_ca = read(config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read(config.tls_key), read(config.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def start(config: Config, *, upstream: Upstream | None = None) -> Bridge:
    """Build and start the server on `config.listen` (port 0 picks a free one)."""
    from bridge.telemetry import logs

    logs.quiet_grpc_decoding()  # a caller's non-UTF-8 metadata is not an ERROR of ours
    # Metrics, the access log and spans: outermost, so they also see refused calls.
    observability = await Observability.start(config)
    upstream = upstream or Upstream(config)
    observability.attach(upstream)
    tracker = CallTracker()
    server = grpc.aio.server(
        options=server_options(config),
        interceptors=[*observability.interceptors, *interceptors(config, tracker)],
    )
    models_pb2_grpc.add_ModelsServiceServicer_to_server(ModelsService(upstream), server)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatService(upstream), server)
    embeddings_pb2_grpc.add_EmbeddingsServiceServicer_to_server(EmbeddingsService(upstream), server)
    responses_pb2_grpc.add_ResponsesServiceServicer_to_server(ResponsesService(upstream), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        Reflection.for_services((*SERVICE_NAMES, health.SERVICE_NAME)).add_to_server(server)
    credentials = server_credentials(config)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as exc:
        await upstream.aclose()
        await observability.aclose()
        raise OSError(f"could not bind {config.listen}: {exc}") from None
    if port == 0:
        await upstream.aclose()
        await observability.aclose()
        raise OSError(f"could not bind {config.listen}")
    await server.start()
    bridge = Bridge(server, upstream, health_servicer, port, config, tracker, observability)
    await bridge.set_serving(True)
    return bridge


def describe_security(config: Config) -> str:
    """One line on transport and access rules for the startup banner (no secrets)."""
    transport = "mutual TLS" if config.tls_client_ca else "TLS" if config.tls else "plaintext"
    if config.credential_source is None:
        access = "no credential of its own: callers bring theirs"
    else:
        ways = []
        if config.tls_client_ca:
            ways.append("verified client certificates")
        if config.access_token_digests:
            ways.append(f"{len(config.access_token_digests)} access token(s)")
        if not ways:
            ways.append("any caller" if config.trust_network else "loopback callers only")
        access = f"credential from {config.credential_source} lent to " + ", ".join(ways)
    own = "forwarded" if config.caller_credentials == "allow" else "refused"
    return f"{transport}; {access}; callers' own authorization {own}"


def startup_warnings(config: Config) -> list[str]:
    """What a person starting the bridge should know before the first call fails.

    Worded for the configured upstream: only the Vercel AI Gateway is known to need a
    credential for chat and to list models without one; a local server (Ollama, vLLM, the
    development upstream) often needs none at all.
    """
    if config.credential_source is not None:
        return []
    host = urlsplit(config.upstream_url).hostname or ""
    if host == urlsplit(DEFAULT_UPSTREAM).hostname:
        return [
            "warning: no upstream credential configured: set AI_GATEWAY_API_KEY (or "
            "VERCEL_OIDC_TOKEN), or have callers send 'authorization: Bearer <key>' metadata. "
            "Until then, calls without their own credential fail with UNAUTHENTICATED "
            "(listing models works without one).",
            "To try the bridge offline without a key: `make demo` (development upstream, "
            "bridge and a client in one command), or `make dev-upstream` and then "
            "`BRIDGE_UPSTREAM_URL=http://127.0.0.1:8080/v1 make run`.",
        ]
    return [
        f"note: no upstream credential configured: calls reach {config.upstream_url} "
        "without authorization unless the caller sends 'authorization: Bearer <key>' "
        "metadata (set AI_GATEWAY_API_KEY if this upstream wants a key)."
    ]


async def serve(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. Returns the exit code.

    On the signal: health turns NOT_SERVING, new calls are refused, calls in flight get
    --shutdown-grace seconds, then are cancelled (closing their upstream requests). A second
    signal cancels them at once. Exit code 0: drained cleanly; EXIT_CANCELLED (3): calls
    were cancelled.
    """
    bridge = await start(config)
    host = config.listen.rpartition(":")[0]
    worker = "" if config.worker_index is None else f"worker {config.worker_index}: "
    log.info(
        "bridge serving",
        extra={"listen": f"{host}:{bridge.port}", "upstream": config.upstream_url},
    )
    print(
        f"{worker}aigateway bridge listening on {host}:{bridge.port}, upstream "
        f"{config.upstream_url}",
        flush=True,
    )
    print(f"{worker}{describe_security(config)}", flush=True)
    for line in startup_warnings(config):
        print(f"{worker}{line}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    def refusing() -> None:
        print(
            f"{worker}shutting down: health NOT_SERVING, new calls refused, "
            f"{config.shutdown_grace:g} s for {bridge.tracker.active} call(s) in flight",
            flush=True,
        )

    hurried: list[asyncio.Future[None]] = []
    cut_short = False

    def hurry() -> None:
        nonlocal cut_short
        cut_short = cut_short or bridge.tracker.active > 0
        print(f"{worker}second signal: cancelling {bridge.tracker.active} call(s) now", flush=True)
        hurried.append(asyncio.ensure_future(bridge.server.stop(None)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hurry)
    drained = await bridge.stop(config.shutdown_grace, refusing=refusing)
    if drained and not cut_short:
        print(f"{worker}stopped: all calls finished", flush=True)
        return EXIT_DRAINED
    when = "on the second signal" if cut_short else f"after {config.shutdown_grace:g} s"
    print(
        f"{worker}stopped: calls still running {when} were cancelled (exit code {EXIT_CANCELLED})",
        flush=True,
    )
    return EXIT_CANCELLED


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `--event-loop` asks for (None: asyncio's default).

    `auto` takes uvloop when it can be imported (a runtime dependency, but a platform
    without a wheel for it still serves, on asyncio's loop); `uvloop` insists on it.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise OSError("--event-loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run(config: Config) -> int:
    """Serve in this process (the only one, or one worker) until a signal; the exit code.

    Sets up logging from `config` first. An OSError while starting (the address is taken, a
    TLS file vanished) is printed to stderr and returns EXIT_FAILED.
    """
    from bridge.telemetry import logs

    logs.configure(config.log_level, config.log_format, secrets=logs.secrets_of(config))
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
            return runner.run(serve(config))
    except OSError as exc:
        worker = "" if config.worker_index is None else f"worker {config.worker_index}: "
        print(f"{worker}error: {exc}", file=sys.stderr, flush=True)
        if str(exc).startswith("could not bind"):
            print(
                f"{worker}choose another address with --listen HOST:PORT, BRIDGE_LISTEN or "
                "`make run LISTEN=HOST:PORT`",
                file=sys.stderr,
                flush=True,
            )
        return EXIT_FAILED
