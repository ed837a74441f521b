"""`python -m bridge health`: a grpc.health.v1 Check as a process exit code, for probes.

Kubernetes has native gRPC probes, but not every runtime does (Docker HEALTHCHECK, Nomad,
systemd, probes needing TLS or client certificates); this command works everywhere the
image runs. Exit codes: 0 SERVING, 1 not serving (NOT_SERVING, UNKNOWN, or a service the
server does not know), 2 unreachable or failed (connection refused, TLS failure, timeout).
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_UNREACHABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="127.0.0.1:50051", help="HOST:PORT of the bridge")
    parser.add_argument(
        "--service",
        default="",
        help="service to check, e.g. aigateway.v1.ChatService (default: the whole server)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS (implied by --tls-ca and --tls-cert), trusting the system CAs",
    )
    parser.add_argument("--tls-ca", default=None, help="PEM CA bundle that signed the server")
    parser.add_argument("--tls-cert", default=None, help="client certificate for mutual TLS")
    parser.add_argument("--tls-key", default=None, help="key of --tls-cert")
    parser.add_argument(
        "--tls-server-name",
        default=None,
        help="name to verify in the server certificate when it differs from the address host",
    )


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if not (args.tls or args.tls_ca or args.tls_cert):
        return grpc.aio.insecure_channel(args.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.tls_ca),
        private_key=_read(args.tls_key),
        certificate_chain=_read(args.tls_cert),
    )
    options = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    return grpc.aio.secure_channel(args.address, credentials, options=options)


async def check(args: argparse.Namespace) -> tuple[int, str]:
    """(exit code, one-line message) for the health of `args.service` at `args.address`."""
    if bool(args.tls_cert) != bool(args.tls_key):
        return EXIT_UNREACHABLE, "--tls-cert and --tls-key go together"
    target = f"{args.address} service {args.service!r}" if args.service else args.address
    try:
        channel = _channel(args)
    except OSError as exc:
        return EXIT_UNREACHABLE, f"cannot read a TLS file: {exc}"
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout,
                wait_for_ready=False,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return EXIT_NOT_SERVING, f"{target}: unknown service"
            return EXIT_UNREACHABLE, f"{target}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    code = (
        EXIT_SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING
    )
    return code, f"{target}: {status}"


def main(args: argparse.Namespace) -> int:
    code, message = asyncio.run(check(args))
    print(message, flush=True)
    return code
