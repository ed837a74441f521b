"""Command line: `python -m bridge serve | config | health | hash-token`.

Thin: it parses, then hands over to `bridge.server` (the development upstream and the demo are
not part of the product: `python -m dev.upstream`, `python -m dev.demo` from a checkout).

Exit codes: 0 success; 2 configuration error; `serve`: 3 when calls had to be cancelled at
shutdown (see bridge.server.assembly), 1 when it cannot start (address taken) or its workers crash
in a loop (see bridge.server.workers); `health`: see bridge.server.probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bridge.config import Config, ConfigError
from bridge.server import ports, probe


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
    health = commands.add_parser(
        "health",
        help="check a running bridge's grpc.health.v1 status (exit 0 when SERVING)",
        description="Call grpc.health.v1.Health/Check, print the status, exit 0 when "
        "SERVING, 1 when not serving or the service is unknown, 2 when unreachable. "
        "Usable as a container health probe.",
    )
    probe.add_arguments(health)
    commands.add_parser(
        "hash-token",
        help="print the SHA-256 digest of a bridge access token read from stdin",
        description="Read a bridge access token from stdin (one line) and print the "
        "digest to configure in --access-token-sha256 / BRIDGE_ACCESS_TOKEN_SHA256. "
        "Example: head -c 32 /dev/urandom | base64 | tee token | python -m bridge hash-token",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "health":
            return probe.main(args)
        if args.command == "hash-token":
            return _hash_token()
        config = Config.load(args)
        if args.command == "config":
            print(json.dumps(config.masked(), indent=2))
            return 0
        if (
            config.workers == 1
            and config.worker_index is None
            and ports.address_in_use(config.listen)
        ):
            print(ports.busy_address_message(config.listen), file=sys.stderr, flush=True)
            return 1
        if config.workers > 1 and config.worker_index is None:
            from bridge.server.workers import supervise
            from bridge.upstream.client import network_of

            network_of(config)  # a bad proxy or CA: exit 2 here, not a crash loop of workers

            return supervise(config)
        from bridge.server.assembly import run

        return run(config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _hash_token() -> int:
    token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        print("hash-token: no token on stdin", file=sys.stderr)
        return 2
    from bridge.interceptors.access import token_digest

    print(token_digest(token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
