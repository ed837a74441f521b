"""Which headers cross the bridge, and which values they may carry (DESIGN.md "Credentials").

Upstream request headers: the allow-list of caller metadata sent on (`FORWARDED_METADATA`, plus
the operator's `--forward-metadata`, minus what `unforwardable` refuses), each value checked by
`header_value_problem` (RFC 9110 section 5.5). Upstream response headers returned to the caller
as gRPC metadata: `returned_metadata`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

FORWARDED_METADATA = frozenset(
    {
        "x-request-id",
        "traceparent",
        "tracestate",
        "http-referer",
        "x-title",
        "ai-reporting-tags",
        "ai-reporting-user",
    }
)
"""Caller metadata keys sent on as upstream request headers (besides `authorization`)."""


RETURNED_HEADERS = frozenset(
    {"x-request-id", "openai-processing-ms", "retry-after", "retry-after-ms", "x-should-retry"}
)
"""Upstream response headers returned to the caller (with every `x-ratelimit-*`)."""


_RETURNED_PREFIX = "x-ratelimit-"


_RETURNED_VALUE_LIMIT = 512
"""Longest returned header value, in characters: a longer one is dropped, not cut. Trailing
metadata shares grpc's 8 KiB default limit with the status and its details."""


_RETURNED_BUDGET = 4096
"""Most bytes of returned headers, counted as HTTP/2 does (name + value + 32 per entry, RFC
7541 section 4.1): gRPC clients refuse metadata past 8 KiB by default (some at random between
8 and 16), and on an error the status, its details and gRPC's own entries share that limit.
Past it, further headers are dropped (DESIGN.md: never a failed call), `x-ratelimit-*` first."""


_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
"""A header value the bridge sends: visible ASCII, space and tab (RFC 9110 section 5.5,
without obs-text). CR, LF and NUL would let a value start a new header or request."""


_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")
"""A value that is valid ASCII gRPC metadata (printable ASCII, gRPC's PROTOCOL-HTTP2)."""


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be an HTTP header value, or None when it can."""
    if _HEADER_VALUE.fullmatch(value):
        return None
    bad = next(c for c in value if not _HEADER_VALUE.fullmatch(c))
    kind = "a control character" if ord(bad) < 0x20 or ord(bad) == 0x7F else "a non-ASCII character"
    return f"contains {kind} (U+{ord(bad):04X}); only visible ASCII, space and tab are allowed"


def returned_metadata(
    headers: Mapping[str, str], redact: Callable[[str], str]
) -> tuple[tuple[str, str], ...]:
    """The upstream headers a caller gets back, as gRPC metadata pairs.

    `x-request-id`, `openai-processing-ms`, `retry-after(-ms)`, `x-should-retry` and every
    `x-ratelimit-*`. A value that is not valid gRPC metadata (non-ASCII, control characters)
    or longer than 512 characters is dropped: never a failed call (DESIGN.md "Streaming"); so
    are those past `_RETURNED_BUDGET` in all. `redact` cuts an echoed credential out of what
    is kept.
    """
    candidates: list[tuple[bool, str, str]] = []  # (is x-ratelimit-*, key, value)
    for name, value in headers.items():
        key = name.lower()  # gRPC metadata keys are lower case; HTTP field names any case
        if len(value) > _RETURNED_VALUE_LIMIT or not _METADATA_VALUE.fullmatch(value):
            continue
        if key in RETURNED_HEADERS or key.startswith(_RETURNED_PREFIX):
            candidates.append((key not in RETURNED_HEADERS, key, value))
    kept: set[int] = set()
    size = 0
    # The named headers take the budget first, then x-ratelimit-*; each in arrival order.
    for index in sorted(range(len(candidates)), key=lambda i: candidates[i][0]):
        _, key, value = candidates[index]
        cost = len(key) + len(value) + 32
        if size + cost <= _RETURNED_BUDGET:
            size += cost
            kept.add(index)
    return tuple((key, redact(value)) for i, (_, key, value) in enumerate(candidates) if i in kept)


# Never forwarded, whatever the configuration says: connection-level (hop-by-hop) headers,
# headers the HTTP client computes, credentials the bridge manages, gRPC's own metadata.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


_RESERVED = {
    "content-length": "the HTTP client computes it from the body",
    "content-type": "the bridge always sends JSON",
    "content-encoding": "the bridge sends the body unencoded",
    "host": "it names the upstream, which --upstream decides",
    "authorization": "a call's own authorization is always forwarded (see "
    "--caller-credentials); it needs no allowlist entry",
    "cookie": "credentials other than authorization are not forwarded",
    "x-bridge-token": "it is the bridge's access token and never leaves the bridge",
    "user-agent": "the bridge identifies itself",
}


def unforwardable(key: str) -> str | None:
    """Why a metadata key must never become an upstream header, or None when it may."""
    if not key or key.startswith(":"):
        return "pseudo-headers are HTTP/2 framing, not metadata"
    if key.startswith("grpc-"):
        return "grpc-* metadata belongs to the gRPC transport"
    if key in _HOP_BY_HOP:
        return "hop-by-hop headers apply to one connection only"
    if key in _RESERVED:
        return _RESERVED[key]
    if key.endswith("-bin"):
        return "binary (-bin) metadata has no HTTP header form"
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", key):
        return "metadata keys are lowercase letters, digits, '-', '_' and '.'"
    return None
