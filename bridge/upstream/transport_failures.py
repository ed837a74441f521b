"""Failures that leave no usable HTTP error response, and the one table that maps them.

A connect error, a reset, a timeout, a cut stream, a redirect never followed: each
`TransportKind` has one `TransportRule` (code, ErrorInfo reason, message, retryability),
after one table's translation of foreign exceptions. `bridge.upstream.http.classify`
decides the kind; `transport_error` builds the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

import grpc
import grpc.aio

from bridge.status import BridgeError
from bridge.telemetry.redaction import scrub
from bridge.upstream.envelope import QUOTE_LIMIT, clip

_Code = grpc.StatusCode
_NO, _YES = False, True


TransportKind = Literal[
    "connect",
    "certificate",
    "pool_exhausted",
    "read_timeout",
    "reset",
    "body_cut",
    "stream_cut",
    "deadline",
    "protocol",
    "too_large",
    "redirect",
    "malformed",
    "proxy_refused",
]
"""Failures that leave no usable HTTP error response (see `transport_error`)."""


@dataclass(frozen=True)
class TransportRule:
    """How one transport failure becomes a gRPC status, and whether it is retried."""

    code: grpc.StatusCode
    reason: str
    summary: str
    """The status message; `{}` is the upstream host."""
    retryable: bool


_TRANSPORT: Mapping[TransportKind, TransportRule] = MappingProxyType(
    {
        # The request never reached the upstream, or it never answered: trying again is the
        # documented remedy ("retry connect errors, timeouts").
        "connect": TransportRule(
            _Code.UNAVAILABLE, "UPSTREAM_UNREACHABLE", "could not connect to upstream {}", _YES
        ),
        # A connect error that cannot fix itself (DESIGN.md: "not a failed certificate
        # verification"): said once, with the reason, instead of three attempts.
        "certificate": TransportRule(
            _Code.UNAVAILABLE,
            "UPSTREAM_CERTIFICATE_UNTRUSTED",
            "the TLS certificate of upstream {} failed verification (check the upstream URL, "
            "or SSL_CERT_FILE / SSL_CERT_DIR for a private CA); not retried",
            _NO,
        ),
        # Every pooled connection is busy until the caller's deadline (or --connect-timeout):
        # more attempts would only queue again behind the same calls.
        "pool_exhausted": TransportRule(
            _Code.UNAVAILABLE,
            "UPSTREAM_POOL_EXHAUSTED",
            "every connection to upstream {} stayed busy (the pool holds --max-connections); "
            "retry later, or raise --max-connections",
            _NO,
        ),
        "reset": TransportRule(
            _Code.UNAVAILABLE,
            "UPSTREAM_CONNECTION_RESET",
            "upstream {} closed the connection before responding",
            _YES,
        ),
        "protocol": TransportRule(
            _Code.UNAVAILABLE,
            "UPSTREAM_PROTOCOL_ERROR",
            "upstream {} broke the HTTP protocol",
            _YES,
        ),
        # The connection dropped after a 200 began: the upstream may have billed the request,
        # so it is never sent again (DESIGN.md "Retries").
        "body_cut": TransportRule(
            _Code.UNAVAILABLE,
            "UPSTREAM_RESPONSE_INCOMPLETE",
            "upstream {} closed the connection before the response was complete",
            _NO,
        ),
        "stream_cut": TransportRule(
            _Code.UNAVAILABLE,
            "STREAM_INCOMPLETE",
            "upstream {} ended the stream before [DONE]; the response is incomplete",
            _NO,
        ),
        "read_timeout": TransportRule(
            _Code.DEADLINE_EXCEEDED,
            "UPSTREAM_TIMEOUT",
            "upstream {} did not answer within the read timeout",
            _YES,
        ),
        # The caller's time is spent; there is nothing left to retry into.
        "deadline": TransportRule(
            _Code.DEADLINE_EXCEEDED,
            "DEADLINE_EXCEEDED",
            "the call's deadline ran out before upstream {} finished",
            _NO,
        ),
        # The upstream's fault, not the caller's: INTERNAL, not UNAVAILABLE. Clients retry
        # UNAVAILABLE automatically, and a 200 with garbage was already done (and billed) by the
        # upstream; the same request would get the same garbage.
        "malformed": TransportRule(
            _Code.INTERNAL,
            "MALFORMED_RESPONSE",
            "upstream {} sent a response the bridge cannot read",
            _NO,
        ),
        "too_large": TransportRule(
            _Code.RESOURCE_EXHAUSTED,
            "RESPONSE_TOO_LARGE",
            "upstream {} sent a response larger than the bridge accepts",
            _NO,
        ),
        # INTERNAL, not FAILED_PRECONDITION: FAILED_PRECONDITION tells the *caller* to fix
        # state before retrying, but the caller can do nothing here; the bridge's configured
        # upstream URL is wrong (moved, http→https), which only its operator can fix.
        "redirect": TransportRule(
            _Code.INTERNAL,
            "UPSTREAM_REDIRECT",
            "upstream {} answered with a redirect, which the bridge never follows so that"
            " credentials stay with the configured upstream (check the upstream URL)",
            _NO,
        ),
        # The HTTP proxy from the environment refused the bridge (407): its configuration
        # (the credentials in HTTP_PROXY / HTTPS_PROXY / ALL_PROXY), not the caller's request
        # nor the upstream; the same request would be refused again.
        "proxy_refused": TransportRule(
            _Code.UNAVAILABLE,
            "UPSTREAM_PROXY_REFUSED",
            "the HTTP proxy in front of upstream {} refused the bridge's request (check the "
            "proxy credentials in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY)",
            _NO,
        ),
    }
)
"""Transport failures: code, reason, message and retryability; the one place that decides."""

if set(_TRANSPORT) != set(get_args(TransportKind)):  # pragma: no cover - import guard
    raise RuntimeError("_TRANSPORT must cover every TransportKind exactly")


def is_retryable_transport(kind: TransportKind) -> bool:
    """Whether a transport failure is worth another attempt (the table's column)."""
    return _TRANSPORT[kind].retryable


def transport_error(
    kind: TransportKind,
    *,
    domain: str,
    detail: str = "",
    request_id: str | None = None,
) -> BridgeError:
    """Translate a failure that left no usable HTTP error response.

    `detail` is appended to the message (e.g. `http.describe(exc)` of the aiohttp exception,
    or for a redirect the target origin, without its path or query, which may carry signed tokens).
    Whether it is retryable is the table's column (`TransportRule.retryable`).
    """
    rule = _TRANSPORT[kind]
    code, reason = rule.code, rule.reason
    message = rule.summary.format(domain)
    detail = " ".join(scrub(detail).split())
    if detail:
        message += f": {clip(detail, QUOTE_LIMIT)}"
    return BridgeError(
        code,
        message,
        reason=reason,
        domain=domain,
        request_id=request_id,
        retryable=rule.retryable,
    )
