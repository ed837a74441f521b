"""The programmable faults of the development upstream: one dataclass per way to misbehave.

`DevUpstream.program()` queues these for the next requests of a model; each is consumed by
exactly one request. `dev.upstream.delivery` carries them out. They bend the normal reply the
way real upstreams and the proxies in front of them misbehave: error statuses, HTML error pages,
truncated JSON, streams cut before `[DONE]`, errors inside a 200 stream, resets, hangs.

Stream-shaped faults (`CutStream`, `StreamError`, `MalformedSse`, `SlowStream`) act on a
streaming chat request; on any other request they do the closest thing, as each one documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "Behavior",
    "CutStream",
    "Delay",
    "Empty",
    "Hang",
    "Html",
    "Huge",
    "MalformedJson",
    "MalformedSse",
    "Redirect",
    "Reset",
    "SlowBody",
    "SlowStream",
    "Status",
    "StreamError",
    "WrongContentType",
]


@dataclass(frozen=True)
class Status:
    """Answer with `status` and `body` instead of the normal reply.

    `body`: a dict is sent as JSON, bytes/str as they are (content type JSON unless `headers`
    says otherwise), None means the envelope a real upstream sends with that status (see
    `default_error_body`: 429 is `rate_limit_error` / `rate_limit_exceeded`, 422 the FastAPI
    `detail` list, ...). `headers` are added last, so they can set `retry-after-ms`,
    `retry-after`, `x-should-retry`, or override `content-type` and `x-request-id`.
    """

    status: int
    body: bytes | str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Html:
    """Answer `status` with an nginx-style HTML error page (`text/html`), as a proxy does."""

    status: int


@dataclass(frozen=True)
class Empty:
    """Answer `status` with an empty body (still labelled `application/json`)."""

    status: int


@dataclass(frozen=True)
class MalformedJson:
    """Answer 200 `application/json` with a truncated, unparseable chat completion."""


@dataclass(frozen=True)
class WrongContentType:
    """Answer 200 with a `text/plain` body, even to a streaming request."""


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer, until the client disconnects or the server stops.

    The client's disconnect is counted in `DevUpstream.disconnects`.
    """


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before sending the headers of the normal reply."""

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Close the TCP connection with a RST (SO_LINGER 0), without any response."""


@dataclass(frozen=True)
class CutStream:
    """Send `after` chunks of the stream, then close the connection: no `[DONE]`, no final
    chunk of the chunked encoding. `after` counts `data:` events, the role chunk included.

    On a non-streaming request: send the headers (with the full `content-length`) and the
    first half of the body, then close.
    """

    after: int


@dataclass(frozen=True)
class StreamError:
    """Send `after` chunks, then an error event, then end the body properly (no `[DONE]`).

    Forms: `openai` = `data: {"error": {...}}`; `vercel` = a chunk-shaped object (`id`,
    `object`, `created`, `model`) with `error {code, message, type}`; `event` =
    `event: error` followed by `data: {"error": {...}}`.

    On a non-streaming request: the envelope with the status its `type` implies
    (rate limit 429, invalid request 400, authentication 401, permission 403, overloaded 529,
    anything else 500).
    """

    after: int
    form: Literal["openai", "vercel", "event"] = "openai"
    type: str = "server_error"
    code: str | None = None
    message: str = "The upstream failed while streaming."


@dataclass(frozen=True)
class MalformedSse:
    """Send `after` chunks, then `data: {not json`, then the rest of the stream and `[DONE]`,
    so the malformed event is the only fault. On a non-streaming request: like
    `MalformedJson`."""

    after: int


@dataclass(frozen=True)
class Redirect:
    """Answer `status` (307 by default) with `location`, which may name another origin."""

    location: str
    status: int = 307


@dataclass(frozen=True)
class Huge:
    """Answer 200 with a valid chat completion of about `size` bytes (a giant content string).

    `chunked`: send it without a `content-length`, in 64 KiB pieces, so a client learns the
    size only by reading (a limit on the announced length alone would miss it).

    On a streaming request: the role chunk, one content chunk of about `size` bytes, the
    final chunk and `[DONE]`.
    """

    size: int
    chunked: bool = False


@dataclass(frozen=True)
class SlowStream:
    """Stream normally but sleep `interval` seconds between events.

    On a non-streaming request: sleep `interval` once, then answer normally.
    """

    interval: float


@dataclass(frozen=True)
class SlowBody:
    """Answer a non-streaming request with its normal body in `pieces` parts, sleeping
    `interval` seconds before each: every read is answered in time, yet the whole takes
    `pieces * interval` seconds (an upstream that dribbles). Streams: like `SlowStream`.
    """

    interval: float
    pieces: int = 8


Behavior: TypeAlias = (
    Status
    | Html
    | Empty
    | MalformedJson
    | WrongContentType
    | Hang
    | Delay
    | Reset
    | CutStream
    | StreamError
    | MalformedSse
    | Redirect
    | Huge
    | SlowStream
    | SlowBody
)
