"""Assembling and running the gRPC server: services, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from aigateway.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    embeddings_pb2,
    embeddings_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bridge.config import Config
from bridge.observe import Observability
from bridge.service import ChatService, EmbeddingsService, ModelsService
from bridge.upstream import Upstream

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    models_pb2.DESCRIPTOR.services_by_name["ModelsService"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    embeddings_pb2.DESCRIPTOR.services_by_name["EmbeddingsService"].full_name,
)


@dataclass
class Bridge:
    """A started server with what it owns; `stop` releases all of it."""

    server: grpc.aio.Server
    upstream: Upstream
    health: health.aio.HealthServicer
    port: int
    config: Config
    observability: Observability | None = None

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Flip health to NOT_SERVING, refuse new calls, give in-flight ones `grace` seconds."""
        await self.set_serving(False)
        await self.server.stop(grace)
        await self.upstream.aclose()
        if self.observability is not None:
            await self.observability.aclose()


def server_options(config: Config) -> list[tuple[str, int]]:
    return [
        # Twice --max-message-bytes: the servicers check the limit themselves and answer with
        # details naming the option (bridge.validate.message_size); grpc core's own refusal,
        # kept beyond that to bound memory, has neither.
        ("grpc.max_receive_message_length", min(2 * config.max_message_bytes, 2**31 - 1)),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


async def start(config: Config, *, upstream: Upstream | None = None) -> Bridge:
    """Build and start the server on `config.listen` (port 0 picks a free one)."""
    # Metrics, the access log and spans: outermost, so they also see refused calls.
    observability = await Observability.start(config)
    upstream = upstream or Upstream(config)
    observability.attach(upstream)
    server = grpc.aio.server(
        options=server_options(config), interceptors=observability.interceptors
    )
    models_pb2_grpc.add_ModelsServiceServicer_to_server(ModelsService(upstream), server)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatService(upstream), server)
    embeddings_pb2_grpc.add_EmbeddingsServiceServicer_to_server(
        EmbeddingsService(upstream), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    port = server.add_insecure_port(config.listen)
    if port == 0:
        await upstream.aclose()
        await observability.aclose()
        raise OSError(f"could not bind {config.listen}")
    await server.start()
    bridge = Bridge(server, upstream, health_servicer, port, config, observability)
    await bridge.set_serving(True)
    return bridge


async def serve(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. Returns the exit code."""
    bridge = await start(config)
    host = config.listen.rpartition(":")[0]
    log.info(
        "bridge serving",
        extra={"listen": f"{host}:{bridge.port}", "upstream": config.upstream_url},
    )
    print(f"aigateway bridge listening on {host}:{bridge.port}, upstream {config.upstream_url}",
          flush=True)
    if config.credential_source is None:
        print(
            "warning: no upstream credential configured: set AI_GATEWAY_API_KEY (or "
            "VERCEL_OIDC_TOKEN), or have callers send 'authorization: Bearer <key>' "
            "metadata. Until then, calls without their own credential will fail with "
            "UNAUTHENTICATED (listing models works at the Vercel AI Gateway).",
            flush=True,
        )
    else:
        print(f"using the upstream credential from {config.credential_source}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"shutting down: {config.shutdown_grace:g} s for in-flight calls", flush=True)
    await bridge.stop(config.shutdown_grace)
    return 0
