"""The replies of the development upstream, and the exchange they are sent over.

`dev.upstream.api` computes a *reply* for every request (a complete body, or a stream of chat
chunks); `dev.upstream.delivery` sends it over an `Exchange`, the response side of one HTTP
exchange that `dev.upstream.server` implements on aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

__all__ = [
    "CREATED",
    "DONE_EVENT",
    "JSON_TYPE",
    "SSE_TYPE",
    "Exchange",
    "FullReply",
    "Json",
    "Reply",
    "StreamReply",
    "encode_json",
]

Json: TypeAlias = dict[str, Any]

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"
DONE_EVENT = b"data: [DONE]\n\n"
CREATED = 1_700_000_000


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the real upstreams send it (no spaces to pad benchmarks)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class FullReply:
    """A complete response with a body of known length."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A streamed chat completion: chunk objects, each becoming one `data:` event.

    `chunks` may be a lazy iterator (benchmarks stream many thousands of chunks), so it is
    consumed at most once. `completion_id` and `model` let faults shape chunk-like errors.
    """

    completion_id: str
    model: str
    chunks: Iterable[Json]
    interval: float = 0.0
    named: bool = False
    """A Responses API stream: each event named by its `type` (`event: response.created`),
    and no `[DONE]` at the end (the last event says the stream is complete)."""


Reply: TypeAlias = FullReply | StreamReply


class Exchange(Protocol):
    """The response side of one HTTP exchange, as the faults need it.

    The sending methods raise `ConnectionError` once the client has gone; the handler task is
    also cancelled then, so a fault waiting forever (`Hang`) ends with the connection.
    """

    async def send_full(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        """Send a complete response with a `content-length`."""

    async def send_head(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str],
        content_length: int | None = None,
    ) -> None:
        """Send the status line and headers; chunked unless `content_length` is given."""

    async def send_data(self, data: bytes) -> None:
        """Send part of the body and wait until the transport can take more."""

    async def finish(self) -> None:
        """End the body properly (the terminating chunk of a chunked body)."""

    async def cut(self) -> None:
        """Deliver what was written, then close the connection without ending the body."""

    def reset(self) -> None:
        """Close the connection at once with a TCP RST, discarding anything unsent."""
