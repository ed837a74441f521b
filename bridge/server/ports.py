"""Whether the gRPC address is free, checked before binding, and what to say when it is not."""

from __future__ import annotations

import errno
import socket

from bridge.config import split_host_port


def address_in_use(listen: str) -> bool:
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
    """The sentence printed when `listen` ("HOST:PORT") is taken: who may hold it and three
    ways to choose another address (the next port). Raises ConfigError when malformed."""
    host, port = split_host_port(listen)
    other = f"{'[' + host + ']' if ':' in host else host}:{port + 1 if port < 65535 else 50052}"
    return (
        f"error: cannot listen on {listen}: the address is already in use (another bridge, "
        "say an earlier `make run`, or another program). Stop that one, or choose another "
        f"address: --listen {other}, BRIDGE_LISTEN={other}, or `make run LISTEN={other}`."
    )
