"""Command line: `python -m bridge serve | config | health | hash-token | dev-upstream | demo`.

Exit codes: 0 success; 2 configuration error; `serve`: 3 when calls had to be cancelled at
shutdown (see bridge.server), 1 when it cannot start (address taken) or its workers crash
in a loop (see bridge.workers); `health`: see bridge.healthcheck.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import socket
import sys
from collections.abc import Sequence

from bridge import healthcheck
from bridge.config import Config, ConfigError, split_host_port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="A gRPC bridge for OpenAI-compatible AI APIs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the gRPC API",
        description="Serve the gRPC API. Every option "
        "can also be set by the environment variable named in its help.",
    )
    Config.add_arguments(serve)
    show = commands.add_parser(
        "config", help="validate the configuration and print it with secrets masked"
    )
    Config.add_arguments(show)
    probe = commands.add_parser(
        "health",
        help="check a running bridge's grpc.health.v1 status (exit 0 when SERVING)",
        description="Call grpc.health.v1.Health/Check, print the status, exit 0 when "
        "SERVING, 1 when not serving or the service is unknown, 2 when unreachable. "
        "Usable as a container health probe.",
    )
    healthcheck.add_arguments(probe)
    commands.add_parser(
        "hash-token",
        help="print the SHA-256 digest of a bridge access token read from stdin",
        description="Read a bridge access token from stdin (one line) and print the "
        "digest to configure in --access-token-sha256 / BRIDGE_ACCESS_TOKEN_SHA256. "
        "Example: head -c 32 /dev/urandom | base64 | tee token | python -m bridge hash-token",
    )
    dev = commands.add_parser(
        "dev-upstream", help="run the local OpenAI-compatible development upstream"
    )
    dev.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    dev.add_argument("--api-key", default=None, help="require this bearer key")
    dev.add_argument(
        "--stream-interval", type=float, default=0.02, help="seconds between streamed chunks"
    )
    demo = commands.add_parser(
        "demo", help="offline demo: dev upstream + bridge + a client streaming a chat"
    )
    demo.add_argument("--prompt", default="Tell me about gRPC bridges")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev-upstream":
            from bridge.devserver import serve_forever

            host, port = split_host_port(args.listen)
            asyncio.run(
                serve_forever(
                    host, port, api_key=args.api_key, stream_interval=args.stream_interval
                )
            )
            return 0
        if args.command == "demo":
            from bridge.demo import run_demo

            return asyncio.run(run_demo(args.prompt))
        if args.command == "health":
            return healthcheck.main(args)
        if args.command == "hash-token":
            return _hash_token()
        config = Config.load(args)
        if args.command == "config":
            print(json.dumps(config.masked(), indent=2))
            return 0
        if config.workers == 1 and config.worker_index is None and _address_in_use(config.listen):
            print(busy_address_message(config.listen), file=sys.stderr, flush=True)
            return 1
        if config.workers > 1 and config.worker_index is None:
            from bridge.workers import supervise

            return supervise(config)
        from bridge.server import run

        return run(config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _address_in_use(listen: str) -> bool:
    """True when another process already listens on `listen`.

    Checked before gRPC binds, so that a second `make run` gets a sentence saying what to do
    rather than grpc core's own log line (with --workers each worker reports its own bind
    failure). Anything but EADDRINUSE is left for gRPC to report.
    """
    host, port = split_host_port(listen)
    if port == 0:
        return False
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False
    for family, kind, proto, _, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def busy_address_message(listen: str) -> str:
    host, port = split_host_port(listen)
    other = f"{'[' + host + ']' if ':' in host else host}:{port + 1 if port < 65535 else 50052}"
    return (
        f"error: cannot listen on {listen}: the address is already in use (another bridge, "
        "say an earlier `make run`, or another program). Stop that one, or choose another "
        f"address: --listen {other}, BRIDGE_LISTEN={other}, or `make run LISTEN={other}`."
    )


def _hash_token() -> int:
    token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        print("hash-token: no token on stdin", file=sys.stderr)
        return 2
    from bridge.auth import token_digest

    print(token_digest(token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
