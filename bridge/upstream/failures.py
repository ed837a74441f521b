"""Every failure the bridge reports, translated once into `BridgeError`.

Foreign failures (an HTTP error response, an error object inside an SSE stream, a transport
failure, a bad request from the caller) become a `BridgeError` here and nowhere else, so the
servicers only ever `await err.abort(context)`. The HTTP status → gRPC code relation lives in
one registered table (`_register` below, after google-api-core's `exceptions.py`), from which
`HTTP_STATUS_TO_CODE` is derived, so the table, the docs and the behaviour cannot drift apart.
An error object inside a 200 is read by `bridge.upstream.stream_failures`, by the same table
when its code names a status.

Codes follow the semantic mapping of `google/rpc/code.proto` (DESIGN.md, "Error mapping"), not
grpc's transport table, which maps 404 to UNIMPLEMENTED for the benefit of middleboxes.

Every error carries, in `grpc-status-details-bin`, a `google.rpc.Status` whose message equals the
status message, with exactly one `ErrorInfo` first, then a `RequestInfo` when the upstream
request id is known, then whichever of `BadRequest`, `RetryInfo`, `QuotaFailure`,
`ResourceInfo` apply. `BridgeError.__init__` builds ErrorInfo and RequestInfo itself, so that
invariant holds for every instance, including ones other modules construct directly.
"""

from __future__ import annotations

import http
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from bridge.status import BridgeError
from bridge.upstream.envelope import (
    ErrorBody,
    clip,
    parse_body,
    quote,
    upper_snake,
)

from .retry import get_header, parse_retry_after

__all__ = [
    "DEFAULT_RETRY_DELAY",
    "HTTP_STATUS_TO_CODE",
    "code_for_http_status",
    "from_http_response",
    "is_retryable_status",
]


DEFAULT_RETRY_DELAY = 1.0
"""RetryInfo delay in seconds for a 408 without a retry-after header: DESIGN.md promises
RetryInfo on 408, and a timeout on the upstream's side says nothing about when to come back."""


_STATUS_PHRASES = {499: "Client Closed Request", 529: "Overloaded"}
"""Reason phrases of non-standard statuses that upstreams (nginx, Anthropic) use."""


# --------------------------------------------------------------------------------------------
# The error type


# --------------------------------------------------------------------------------------------
# Reading what the upstream said


# --------------------------------------------------------------------------------------------
# Small formatting helpers


def _seconds(delay: float) -> str:
    shown = f"{delay:.3f}".rstrip("0")
    return shown + "0" if shown.endswith(".") else shown


def _duration(delay: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(delay * 1e9))
    return duration


def _status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = _STATUS_PHRASES.get(status, "")
    return f"{status} {phrase}" if phrase else str(status)


def error_metadata(upstream: ErrorBody, http_status: int | None) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if http_status is not None:
        metadata["httpStatus"] = str(http_status)
    for key, value in (("type", upstream.type), ("code", upstream.code), ("param", upstream.param)):
        if value is not None:
            metadata[key] = clip(value, 256)
    return metadata


def bad_request_details(upstream: ErrorBody) -> list[Message]:
    violations = []
    if upstream.param is not None:
        violations.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=upstream.param, description=quote(upstream.message or "")
            )
        )
    for field, description in upstream.violations:
        violations.append(
            error_details_pb2.BadRequest.FieldViolation(field=field, description=quote(description))
        )
    return [error_details_pb2.BadRequest(field_violations=violations)] if violations else []


def quota_failure_details(upstream: ErrorBody, fallback_subject: str) -> list[Message]:
    violation = error_details_pb2.QuotaFailure.Violation(
        subject=upstream.label() or fallback_subject,
        description=quote(upstream.message or ""),
    )
    return [error_details_pb2.QuotaFailure(violations=[violation])]


# --------------------------------------------------------------------------------------------
# The one HTTP status → gRPC code table


class RetryInfoRule(Enum):
    """When a mapped HTTP error carries RetryInfo."""

    NEVER = "never"
    WHEN_GIVEN = "when_given"
    """Only when the upstream sent retry-after-ms / retry-after."""
    ALWAYS = "always"
    """The upstream's delay, else `DEFAULT_RETRY_DELAY`."""


@dataclass(frozen=True)
class _Case:
    """One HTTP error being mapped, as seen by a rule's detail builder."""

    status: int
    upstream: ErrorBody
    model: str | None
    reason: str


@dataclass(frozen=True)
class HttpRule:
    """How one HTTP status becomes a gRPC status."""

    code: grpc.StatusCode
    retryable: bool
    """Whether the bridge tries again (DESIGN.md "Retries"); `x-should-retry` overrides it."""
    retry_info: RetryInfoRule = RetryInfoRule.NEVER
    reason: str | None = None
    """A fixed ErrorInfo reason that replaces the envelope's (413's REQUEST_TOO_LARGE)."""
    extras: Callable[[_Case], list[Message]] | None = None
    """Builds the status-specific details (BadRequest, QuotaFailure, ResourceInfo)."""


_HTTP_RULES: dict[int, HttpRule] = {}


def _register(*statuses: int, rule: HttpRule) -> None:
    for status in statuses:
        if status in _HTTP_RULES:
            raise RuntimeError(f"HTTP {status} is mapped twice")
        _HTTP_RULES[status] = rule


def _bad_request_extras(case: _Case) -> list[Message]:
    return bad_request_details(case.upstream)


def _quota_extras(case: _Case) -> list[Message]:
    return quota_failure_details(case.upstream, case.reason)


def _model_extras(case: _Case) -> list[Message]:
    """ResourceInfo naming the model, but only when the upstream says the model is what is
    missing: a 404 for a wrong base URL must not send the user hunting for a model typo."""
    upstream, model = case.upstream, case.model
    if not model:
        return []
    about_model = (
        "model_not_found" in (upstream.code, upstream.type)
        or upstream.param == "model"
        or (upstream.message is not None and model in upstream.message)
    )
    if not about_model:
        return []
    return [
        error_details_pb2.ResourceInfo(
            resource_type="model",
            resource_name=model,
            description=quote(upstream.message or f"model {model} not found"),
        )
    ]


_Code = grpc.StatusCode
_NO, _YES = False, True
_register(400, 422, rule=HttpRule(_Code.INVALID_ARGUMENT, _NO, extras=_bad_request_extras))
_register(401, rule=HttpRule(_Code.UNAUTHENTICATED, _NO))
_register(403, rule=HttpRule(_Code.PERMISSION_DENIED, _NO))
_register(404, rule=HttpRule(_Code.NOT_FOUND, _NO, extras=_model_extras))
_register(408, rule=HttpRule(_Code.UNAVAILABLE, _YES, retry_info=RetryInfoRule.ALWAYS))
_register(409, rule=HttpRule(_Code.ABORTED, _YES))
_register(413, rule=HttpRule(_Code.RESOURCE_EXHAUSTED, _NO, reason="REQUEST_TOO_LARGE"))
# insufficient_quota drops the RetryInfo and the retry: see from_http_response.
_register(
    429,
    rule=HttpRule(
        _Code.RESOURCE_EXHAUSTED, _YES, retry_info=RetryInfoRule.WHEN_GIVEN, extras=_quota_extras
    ),
)
_register(499, rule=HttpRule(_Code.CANCELLED, _NO))
_register(500, rule=HttpRule(_Code.INTERNAL, _YES))
_register(501, rule=HttpRule(_Code.UNIMPLEMENTED, _YES))
_register(
    502, 503, 529, rule=HttpRule(_Code.UNAVAILABLE, _YES, retry_info=RetryInfoRule.WHEN_GIVEN)
)
_register(504, rule=HttpRule(_Code.DEADLINE_EXCEEDED, _YES))

_OTHER_4XX = HttpRule(_Code.INVALID_ARGUMENT, _NO, extras=_bad_request_extras)
_OTHER_5XX = HttpRule(_Code.INTERNAL, _YES)
_OTHER = HttpRule(_Code.INTERNAL, _NO)
"""Statuses that should never reach here as errors (1xx-3xx) or do not exist (600 and up):
the upstream broke the protocol, which is its fault, not the caller's, and is not retried."""

HTTP_STATUS_TO_CODE: Mapping[int, grpc.StatusCode] = MappingProxyType(
    {status: rule.code for status, rule in sorted(_HTTP_RULES.items())}
)
"""The statuses mapped explicitly; any other 4xx is INVALID_ARGUMENT, anything else INTERNAL."""


def rule_for(status: int) -> HttpRule:
    rule = _HTTP_RULES.get(status)
    if rule is not None:
        return rule
    if 400 <= status < 500:
        return _OTHER_4XX
    return _OTHER_5XX if 500 <= status < 600 else _OTHER


def code_for_http_status(status: int) -> grpc.StatusCode:
    """The gRPC code an upstream HTTP error status maps to."""
    return rule_for(status).code


def is_retryable_status(status: int, headers: Mapping[str, str], error_code: str | None) -> bool:
    """Whether an HTTP error response is worth another attempt (DESIGN.md "Retries").

    The upstream's `x-should-retry: true|false` decides first: it knows better than any table
    (OpenAI and the Vercel gateway send it). Then the table's column decides, except that a 429
    whose `error_code` is `insufficient_quota` is never retried: the account is out of credit
    and waiting will not refill it.
    """
    should_retry = get_header(headers, "x-should-retry")
    if should_retry is not None:
        verdict = should_retry.strip().lower()
        if verdict == "true":
            return True
        if verdict == "false":
            return False
    if status == 429 and error_code == "insufficient_quota":
        return False
    return rule_for(status).retryable


# --------------------------------------------------------------------------------------------
# The translators


def from_http_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    domain: str,
    model: str | None = None,
    redact: Callable[[str], str] | None = None,
) -> BridgeError:
    """Translate an upstream HTTP error response.

    `domain` is the upstream host (ErrorInfo.domain); `model` is the model the request named,
    so a 404 about it can say so in a ResourceInfo. Headers may be any mapping; names are
    matched case-insensitively. The body may be anything: an OpenAI envelope, a FastAPI 422, a
    proxy's HTML page, nothing at all; the status decides the code either way. `redact` (a
    `Redactor` of the credentials the request carried) is applied to the body before anything
    is read from it, in case the upstream echoes them (the boundary redacts the result too).
    """
    if redact is not None:
        body = redact(body.decode("utf-8", errors="replace")).encode()
    rule = rule_for(status)
    upstream = parse_body(body)
    reason = rule.reason or upper_snake(upstream.label()) or f"HTTP_{status}"
    quota_exhausted = status == 429 and upstream.quota_exhausted()
    retry_after = parse_retry_after(headers)
    retryable = is_retryable_status(
        status, headers, "insufficient_quota" if quota_exhausted else upstream.code
    )

    delay: float | None = None
    if rule.retry_info is RetryInfoRule.ALWAYS:
        delay = retry_after if retry_after is not None else DEFAULT_RETRY_DELAY
    elif rule.retry_info is RetryInfoRule.WHEN_GIVEN and not quota_exhausted:
        delay = retry_after

    extras = rule.extras(_Case(status, upstream, model, reason)) if rule.extras else []
    if delay is not None:
        extras.append(error_details_pb2.RetryInfo(retry_delay=_duration(delay)))

    head = f"upstream returned {_status_line(status)}"
    if upstream.message:
        message = f"{head}: {quote(upstream.message)}"
    elif upstream.violations:
        shown = "; ".join(f"{field}: {text}" for field, text in upstream.violations[:3])
        more = len(upstream.violations) - 3
        message = f"{head}: {quote(shown)}" + (f" (and {more} more)" if more > 0 else "")
    elif upstream.kind == "envelope":
        label = upstream.label()
        message = f"{head} ({label})" if label else f"{head} with an error without a message"
    elif upstream.kind == "empty":
        message = f"{head} with an empty body"
    elif upstream.kind == "non_json":
        message = f'{head} with a non-JSON body: "{upstream.excerpt}"'
    else:
        message = f'{head} with an unrecognized JSON body: "{upstream.excerpt}"'
    if delay is not None:
        message += f" (retry after {_seconds(delay)} s)"

    return BridgeError(
        rule.code,
        message,
        reason=reason,
        domain=domain,
        metadata=error_metadata(upstream, status),
        request_id=get_header(headers, "x-request-id"),
        extra_details=extras,
        retry_after=retry_after,
        retryable=retryable,
        http_status=status,
    )
