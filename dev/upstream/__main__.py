"""`python -m dev.upstream` (`make dev-upstream`): the development upstream until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from dev.upstream.server import serve_forever


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.upstream",
        description="A local OpenAI-compatible upstream with deterministic answers.",
    )
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument(
        "--stream-interval", type=float, default=0.02, help="seconds between streamed chunks"
    )
    args = parser.parse_args(argv)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, got {args.listen!r}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve_forever(
                host.strip("[]"),
                int(port),
                api_key=args.api_key,
                stream_interval=args.stream_interval,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
