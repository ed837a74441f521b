"""Programmable faults of the development upstream, and the delivery of its replies.

One import for the whole catalogue; the parts live by kind in sibling modules:

- `dev.upstream.replies`: what the normal behaviour sends (`FullReply`, `StreamReply`) and the
  `Exchange` it is sent over;
- `dev.upstream.error_bodies`: the error envelopes and pages real upstreams and proxies send;
- `dev.upstream.behaviors`: the faults, one dataclass each (`Status`, `CutStream`, ...);
- `dev.upstream.delivery`: `deliver`, which sends a reply faithfully or as a fault bends it.
"""

from __future__ import annotations

from dev.upstream.behaviors import (
    Behavior,
    CutStream,
    Delay,
    Empty,
    Hang,
    Html,
    Huge,
    MalformedJson,
    MalformedSse,
    Redirect,
    Reset,
    SlowBody,
    SlowStream,
    Status,
    StreamError,
    WrongContentType,
)
from dev.upstream.delivery import deliver
from dev.upstream.error_bodies import default_error_body, error_envelope
from dev.upstream.replies import (
    CREATED,
    DONE_EVENT,
    JSON_TYPE,
    SSE_TYPE,
    Exchange,
    FullReply,
    Json,
    Reply,
    StreamReply,
    encode_json,
)

__all__ = [
    "CREATED",
    "DONE_EVENT",
    "JSON_TYPE",
    "SSE_TYPE",
    "Behavior",
    "CutStream",
    "Delay",
    "Empty",
    "Exchange",
    "FullReply",
    "Hang",
    "Html",
    "Huge",
    "Json",
    "MalformedJson",
    "MalformedSse",
    "Redirect",
    "Reply",
    "Reset",
    "SlowBody",
    "SlowStream",
    "Status",
    "StreamError",
    "StreamReply",
    "WrongContentType",
    "default_error_body",
    "deliver",
    "encode_json",
    "error_envelope",
]
