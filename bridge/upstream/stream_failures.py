"""Errors inside a 200: the in-stream failure categories (DESIGN.md's last row of the table).

An error object that arrives after a 200 (in an SSE stream, or as the body of a 200) has no
HTTP status to go by; `from_stream_error` maps it by the HTTP table of
`bridge.upstream.failures` when its `code` names a status, else by the words of its `type` and
`code`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from bridge.status import BridgeError
from bridge.upstream.envelope import ErrorBody, from_error_object, quote, upper_snake
from bridge.upstream.failures import (
    bad_request_details,
    error_metadata,
    is_retryable_status,
    quota_failure_details,
    rule_for,
)

__all__ = ["from_stream_error"]

_Code = grpc.StatusCode


@dataclass(frozen=True)
class _StreamCategory:
    code: grpc.StatusCode
    equivalent_status: int
    """The HTTP status the same failure would have had, for the retry rules."""
    markers: tuple[str, ...]


_STREAM_CATEGORIES = (  # first match wins: "invalid_api_key" is about authentication
    _StreamCategory(
        _Code.UNAUTHENTICATED, 401, ("authentication", "unauthenticated", "unauthorized", "api_key")
    ),
    _StreamCategory(_Code.PERMISSION_DENIED, 403, ("permission", "forbidden")),
    _StreamCategory(_Code.RESOURCE_EXHAUSTED, 429, ("rate_limit", "quota", "too_many_requests")),
    _StreamCategory(_Code.UNAVAILABLE, 529, ("overloaded", "unavailable")),
    _StreamCategory(
        _Code.INVALID_ARGUMENT, 400, ("invalid", "bad_request", "validation", "context_length")
    ),
)
_STREAM_OTHER = _StreamCategory(_Code.INTERNAL, 500, ())


def _stream_category(upstream: ErrorBody) -> _StreamCategory:
    tokens = [
        token.lower()
        for token in (upper_snake(upstream.type), upper_snake(upstream.code))
        if token is not None
    ]
    for category in _STREAM_CATEGORIES:
        if any(marker in token for token in tokens for marker in category.markers):
            return category
    return _STREAM_OTHER


def from_stream_error(
    error: Mapping[str, Any],
    *,
    domain: str,
    request_id: str | None,
    where: str = "in the stream",
) -> BridgeError:
    """Translate an error object that arrived after a 200 (see `error_object` for the shapes).

    There is no HTTP status to go by. A numeric `code` from 400 to 599 is read as the HTTP
    status it names and mapped by the HTTP table (`{"error": {"code": 502}}` is UNAVAILABLE);
    otherwise the code comes from the object's `type` / `code` words (DESIGN.md's last row).
    `where` says where the error was found ("in the stream", "in a 200 response").
    `retryable` is what the equivalent HTTP error would get, for the record: the upstream
    answered 200, so the retry loop never sends the request again.
    """
    upstream = from_error_object(error)
    numeric = _http_status_code(upstream.code)
    if numeric is not None:
        rule = rule_for(numeric)
        code, equivalent = rule.code, numeric
    else:
        category = _stream_category(upstream)
        code, equivalent = category.code, category.equivalent_status
    label = upstream.label()
    reason = upper_snake(label) or (
        f"HTTP_{numeric}" if numeric is not None else "UPSTREAM_STREAM_ERROR"
    )
    extras: list[Message] = []
    if code is _Code.INVALID_ARGUMENT:
        extras = bad_request_details(upstream)
    elif code is _Code.RESOURCE_EXHAUSTED:
        extras = quota_failure_details(upstream, reason)
    head = f"upstream reported an error {where}"
    if upstream.message:
        message = f"{head}: {quote(upstream.message)}"
    else:
        message = f"{head} ({label})" if label else f"{head} without a message"
    code_hint = "insufficient_quota" if upstream.quota_exhausted() else upstream.code
    return BridgeError(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=error_metadata(upstream, None),
        request_id=request_id,
        extra_details=extras,
        retryable=is_retryable_status(equivalent, {}, code_hint),
    )


def _http_status_code(code: str | None) -> int | None:
    """A numeric error `code` that names an HTTP error status (400-599), else None."""
    if code is None or not code.isdigit() or len(code) != 3:
        return None
    status = int(code)
    return status if 400 <= status <= 599 else None
