"""Every failure the bridge reports, translated once into `BridgeError`.

Foreign failures (an HTTP error response, an error object inside an SSE stream, a transport
failure, a bad request from the caller) become a `BridgeError` here and nowhere else, so the
servicers only ever `await err.abort(context)`. The HTTP status → gRPC code relation lives in
one registered table (`_register` below, after google-api-core's `exceptions.py`), from which
`HTTP_STATUS_TO_CODE` is derived, so the table, the docs and the behaviour cannot drift apart.

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
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal, NoReturn, get_args
from urllib.parse import quote as _quote_url

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .retry import get_header, parse_retry_after

__all__ = [
    "BRIDGE_DOMAIN",
    "DEFAULT_RETRY_DELAY",
    "HTTP_STATUS_TO_CODE",
    "BridgeError",
    "Redactor",
    "TransportKind",
    "code_for_http_status",
    "error_object",
    "from_http_response",
    "from_stream_error",
    "invalid_argument",
    "is_retryable_status",
    "is_retryable_transport",
    "resource_exhausted",
    "transport_error",
]

BRIDGE_DOMAIN = "bridge"
"""ErrorInfo domain of failures the bridge decides on its own (bad input, size limits)."""

DEFAULT_RETRY_DELAY = 1.0
"""RetryInfo delay in seconds for a 408 without a retry-after header: DESIGN.md promises
RetryInfo on 408, and a timeout on the upstream's side says nothing about when to come back."""

_EXCERPT_LIMIT = 200
"""Longest excerpt of a body that is not an error envelope: enough to recognise a proxy's
page, short enough to keep the status readable."""

_QUOTE_LIMIT = 1000
"""Longest upstream message quoted. The status message travels twice (grpc-message and the
details' Status) and again in field/quota descriptions; grpc's default limit for all trailing
metadata is 8 KiB, beyond which the caller would get an unrelated error instead of ours."""

_PARSE_LIMIT = 1 << 20
"""Error bodies longer than this are not parsed as JSON (an error envelope is a few hundred
bytes; a megabyte is a misbehaving proxy) and only excerpted."""

_REASON_LIMIT = 63
"""ErrorInfo.reason is at most 63 characters of [A-Z0-9_] (google/rpc/error_details.proto)."""

_MIN_SECRET = 8
"""Shorter "credentials" are not cut out of error bodies: they would mangle ordinary words."""

_STATUS_PHRASES = {499: "Client Closed Request", 529: "Overloaded"}
"""Reason phrases of non-standard statuses that upstreams (nginx, Anthropic) use."""


# --------------------------------------------------------------------------------------------
# The error type


_DETAIL_ORDER: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
)


def _detail_rank(detail: Message) -> int:
    for rank, kind in enumerate(_DETAIL_ORDER):
        if isinstance(detail, kind):
            return rank
    return len(_DETAIL_ORDER)


class BridgeError(Exception):
    """A failure with its gRPC status already decided.

    Built by the functions of this module (or directly, with the same guarantees): the details
    always start with exactly one ErrorInfo, then a RequestInfo when `request_id` is given, then
    the other details in a fixed order, so clients can rely on where to look.
    """

    code: grpc.StatusCode
    message: str
    """The status message: what happened and, where known, the upstream's own words."""
    details: tuple[Message, ...]
    retry_after: float | None
    """Seconds the upstream asked us to wait (retry-after-ms / retry-after), for the retry loop."""
    retryable: bool
    """Whether the bridge's retry loop may try again (decided by `bridge.upstream.retry`)."""
    http_status: int | None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        domain: str,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        extra_details: Iterable[Message] = (),
        retry_after: float | None = None,
        retryable: bool = False,
        http_status: int | None = None,
    ) -> None:
        if code is grpc.StatusCode.OK:
            raise ValueError("a BridgeError cannot carry status OK")
        extras = list(extra_details)
        for detail in extras:
            if isinstance(detail, error_details_pb2.ErrorInfo | error_details_pb2.RequestInfo):
                raise ValueError("ErrorInfo and RequestInfo are built from reason and request_id")
        super().__init__(message)
        self.code = code
        self.message = message
        head: list[Message] = [
            error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
        ]
        if request_id:
            head.append(error_details_pb2.RequestInfo(request_id=request_id))
        self.details = (*head, *sorted(extras, key=_detail_rank))
        self.retry_after = retry_after
        self.retryable = retryable
        self.http_status = http_status
        self.trailing: tuple[tuple[str, str], ...] = ()
        """Upstream response headers to return as trailing metadata (DESIGN.md "Streaming")."""

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo:
        """The one ErrorInfo, for logging and tests."""
        info = self.details[0]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        return info

    @property
    def reason(self) -> str:
        return str(self.error_info.reason)

    def __repr__(self) -> str:
        return f"BridgeError({self.code.name}, {self.message!r}, reason={self.reason!r})"

    def to_status(self) -> grpc.Status:
        """The grpc.Status to abort with: code, message, the details as google.rpc.Status in
        `grpc-status-details-bin`, and `trailing` (the upstream's returned headers)."""
        packed = []
        for detail in self.details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        rich = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        status: grpc.Status = rpc_status.to_status(rich)
        if self.trailing:
            return _Status(status.code, status.details, (*self.trailing, *status.trailing_metadata))
        return status

    def redacted(self, redact: Callable[[str], str]) -> BridgeError:
        """A copy with `redact` applied to every string the caller would see: the message,
        every string field of every detail (ErrorInfo reason and metadata included) and the
        trailing metadata."""
        copy = BridgeError.__new__(BridgeError)
        copy.__dict__.update(self.__dict__)
        copy.message = redact(self.message)
        copy.args = (copy.message,)
        details = []
        for detail in self.details:
            clone = type(detail)()
            clone.CopyFrom(detail)
            _redact_fields(clone, redact)
            details.append(clone)
        copy.details = tuple(details)
        # The upstream's returned headers (x-request-id, x-ratelimit-*) may echo a key too.
        copy.trailing = tuple((key, redact(value)) for key, value in self.trailing)
        return copy

    async def abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        """End the RPC with this status.

        grpc raises its own AbortError from here; let it propagate (never wrap this call in a
        bare `except Exception`, or the abort is swallowed).
        """
        await context.abort_with_status(self.to_status())
        raise AssertionError("abort_with_status returned")  # pragma: no cover


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _redact_fields(message: Message, redact: Callable[[str], str]) -> None:
    """Apply `redact` to every string field of `message`, recursively (maps included)."""
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = {redact(str(k)): v for k, v in value.items()}
            value.clear()
            for key, item in entries.items():
                if isinstance(item, str):
                    value[key] = redact(item)
                else:
                    value[key].CopyFrom(item)
                    _redact_fields(value[key], redact)
        elif field.message_type is not None:
            for item in value if field.is_repeated else (value,):
                _redact_fields(item, redact)
        elif field.type == field.TYPE_STRING:
            if field.is_repeated:
                value[:] = [redact(item) for item in value]
            else:
                setattr(message, field.name, redact(value))


class Redactor:
    """Cuts credentials out of text bound for a caller (DESIGN.md "Credentials").

    The upstream may echo the key it was sent: in an error envelope, a stream error, `param`,
    `code`, a malformed body, JSON-escaped in a 401 body. `secrets` (the bridge's credential
    and the caller's own) are removed in every form they can take there: raw, JSON-escaped
    (with and without `\\u` escapes and `\\/`), percent-encoded, and as Python's repr of
    each, once or twice (an HTTP parser's error quotes the line it refused that way). Shapes
    of well-known keys (`Bearer ...`, `sk-...`, Vercel's `vck_...`) are masked even when not
    one of ours.
    Secrets shorter than 8 characters are not cut: they would mangle ordinary words.
    """

    __slots__ = ("_forms",)

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < _MIN_SECRET:
                continue
            forms.update(
                (
                    secret,
                    json.dumps(secret)[1:-1],
                    json.dumps(secret, ensure_ascii=False)[1:-1],
                    json.dumps(secret)[1:-1].replace("/", "\\/"),
                    _quote_url(secret, safe=""),
                    repr(secret.encode())[2:-1],
                )
            )
        # Python's repr, once and twice: aiohttp quotes a response line it cannot parse as a
        # bytes literal inside a message that its exception's str() quotes again.
        for _ in range(2):
            forms.update([repr(form)[1:-1] for form in forms])
        # Longest first, so that a form containing another is cut whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, "[redacted]")
        return _scrub(text)

    def json(self, value: Any) -> Any:
        """`value` (decoded JSON) with every string, keys included, redacted.

        Iterative, not recursive: upstream JSON may nest as deep as the decoder accepts
        (orjson: 1024), past Python's recursion limit."""
        holder: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(holder, 0, value)]
        while stack:
            parent, slot, item = stack.pop()
            if isinstance(item, str):
                parent[slot] = self(item)
            elif isinstance(item, dict):
                copy: dict[str, Any] = {}
                parent[slot] = copy
                for key, inner in item.items():
                    name = self(str(key))
                    copy[name] = None  # keeps the order of the keys
                    stack.append((copy, name, inner))
            elif isinstance(item, list):
                items: list[Any] = [None] * len(item)
                parent[slot] = items
                stack.extend((items, index, inner) for index, inner in enumerate(item))
            else:
                parent[slot] = item
        return holder[0]


# --------------------------------------------------------------------------------------------
# Reading what the upstream said


_BodyKind = Literal["envelope", "json", "non_json", "empty"]


@dataclass(frozen=True)
class _Upstream:
    """What an error body (or a stream error object) says, normalised to strings."""

    kind: _BodyKind
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    violations: tuple[tuple[str, str], ...] = ()
    """(field, description) pairs of a FastAPI/vLLM 422 `detail` list."""
    excerpt: str | None = None

    def quota_exhausted(self) -> bool:
        """`insufficient_quota`: out of credit, which no wait will fix (OpenAI's 429 variant)."""
        return "insufficient_quota" in (self.code, self.type)

    def label(self) -> str | None:
        """The upstream's own name for the error, preferring a non-numeric code to the type."""
        if self.code is not None and _upper_snake(self.code) is not None:
            return self.code
        return self.type


def _text(value: object) -> str | None:
    """A JSON scalar as a metadata string; structures as compact JSON; null/absent as None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError):
        return "(JSON nested too deeply to show)"


def _from_error_object(error: Mapping[str, Any]) -> _Upstream:
    """Normalise an OpenAI-style error object ({message, type, param, code})."""
    message = _text(error.get("message"))
    return _Upstream(
        kind="envelope",
        message=message if message else None,
        type=_text(error.get("type")) or None,
        code=_text(error.get("code")) or None,
        param=_text(error.get("param")) or None,
    )


def _meaningful(value: object) -> bool:
    return value not in (None, "", 0, False, {}, [])


def error_object(data: Mapping[str, Any], *, event: str = "message") -> Mapping[str, Any] | None:
    """The error a JSON object reports, as an OpenAI-style error object, or None.

    One place for every shape OpenAI-compatible servers use (DESIGN.md "Streaming"):

    - the nested envelope `{"error": {message, type, param, code}}` (OpenAI, Vercel, vLLM,
      llama.cpp; Anthropic-style `{"type": "error", "error": {...}}` too);
    - `{"error": "a string"}` (Ollama, TGI, with `error_type` beside it at TGI);
    - the flat object `{"type": "error", "code": ..., "message": ...}` (OpenAI Responses and
      Realtime events, LiteLLM streams) and older vLLM's `{"object": "error", ...}`;
    - anything sent as an SSE `event: error` (`event`), whatever its shape.

    An error object whose fields are all empty (`{"message": "", "type": "", "param": "",
    "code": null}`, seen from LiteLLM providers beside a complete answer) reports no error.
    """
    error = data.get("error")
    if isinstance(error, Mapping):
        if any(_meaningful(error.get(key)) for key in ("message", "type", "code")):
            return error
    elif isinstance(error, str) and error.strip():
        flat: dict[str, Any] = {"message": error}
        for key, source in (("type", "error_type"), ("type", "type"), ("code", "code")):
            if key not in flat and _meaningful(data.get(source)) and data.get(source) != "error":
                flat[key] = data.get(source)
        return flat
    if data.get("type") == "error" or data.get("object") == "error" or event == "error":
        found = {key: data.get(key) for key in ("message", "type", "param", "code")}
        if found["type"] == "error":
            found["type"] = None  # the event's kind, not the error's
        if not any(_meaningful(value) for value in found.values()):
            found["message"] = _text(dict(data)) if data else None
        return found
    return None


def _loc_field(loc: object) -> str:
    """FastAPI's `loc` as a dotted field path, without the leading "body" location marker
    (the caller knows no HTTP body; `messages.0.content` names its own request field)."""
    parts = [str(part) for part in loc] if isinstance(loc, list) else [str(loc)]
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts)


def _parse_body(body: bytes) -> _Upstream:
    """Classify an HTTP error body: OpenAI envelope, other JSON, non-JSON, or empty."""
    text = body[:_PARSE_LIMIT].decode("utf-8", errors="replace")
    if not text.strip():
        return _Upstream(kind="empty")
    if len(body) > _PARSE_LIMIT:
        return _Upstream(kind="non_json", excerpt=_excerpt(text))
    try:
        data: object = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return _Upstream(kind="non_json", excerpt=_excerpt(text))
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # some gateways (Google's OpenAI endpoint) wrap the envelope in a list
    if isinstance(data, dict):
        error = error_object(data)
        if error is not None and not isinstance(data.get("error"), str):
            return _from_error_object(error)
        detail = data.get("detail")
        if isinstance(detail, list):
            violations = tuple(
                (_loc_field(item.get("loc", [])), _text(item.get("msg")) or "")
                for item in detail
                if isinstance(item, dict)
            )
            if violations:
                return _Upstream(kind="json", violations=violations)
        for key in ("error", "detail", "message"):  # Ollama, FastAPI HTTPException, others
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return _Upstream(kind="json", message=value)
    return _Upstream(kind="json", excerpt=_excerpt(text))


# --------------------------------------------------------------------------------------------
# Small formatting helpers


_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-[redacted]"),
    # Vercel AI Gateway API keys.
    (re.compile(r"\bvck_[A-Za-z0-9_-]{16,}"), "vck_[redacted]"),
)


def _scrub(text: str) -> str:
    """Remove anything shaped like a credential. The bridge never puts credentials into
    messages itself; this guards against an upstream or proxy echoing the request's
    Authorization header back in its error page."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _excerpt(text: str) -> str:
    """A one-line excerpt of at most `_EXCERPT_LIMIT` characters, whitespace collapsed."""
    # Only the start matters; don't scan a megabyte of HTML to show 200 characters of it.
    return _clip(" ".join(_scrub(text[: _EXCERPT_LIMIT * 8]).split()), _EXCERPT_LIMIT)


def _quote(text: str) -> str:
    return _clip(_scrub(text).strip(), _QUOTE_LIMIT)


def _upper_snake(value: str | None) -> str | None:
    """`rate_limit_exceeded` → `RATE_LIMIT_EXCEEDED`, `BadRequestError` → `BAD_REQUEST_ERROR`.

    Returns None when nothing usable is left or the token starts with a digit: a numeric code
    (`429`) repeats the HTTP status and would make a poor reason, so the type is used instead.
    """
    if not value:
        return None
    token = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", value)
    token = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", token)
    token = re.sub(r"[^A-Za-z0-9]+", "_", token).strip("_").upper()
    if not token or not token[0].isalpha():
        return None
    return token[:_REASON_LIMIT].rstrip("_")


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


def _metadata(upstream: _Upstream, http_status: int | None) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if http_status is not None:
        metadata["httpStatus"] = str(http_status)
    for key, value in (("type", upstream.type), ("code", upstream.code), ("param", upstream.param)):
        if value is not None:
            metadata[key] = _clip(value, 256)
    return metadata


def _bad_request(upstream: _Upstream) -> list[Message]:
    violations = []
    if upstream.param is not None:
        violations.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=upstream.param, description=_quote(upstream.message or "")
            )
        )
    for field, description in upstream.violations:
        violations.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=field, description=_quote(description)
            )
        )
    return [error_details_pb2.BadRequest(field_violations=violations)] if violations else []


def _quota_failure(upstream: _Upstream, fallback_subject: str) -> list[Message]:
    violation = error_details_pb2.QuotaFailure.Violation(
        subject=upstream.label() or fallback_subject,
        description=_quote(upstream.message or ""),
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
    upstream: _Upstream
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
    return _bad_request(case.upstream)


def _quota_extras(case: _Case) -> list[Message]:
    return _quota_failure(case.upstream, case.reason)


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
            description=_quote(upstream.message or f"model {model} not found"),
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
"""Statuses that should never reach here as errors (1xx-3xx): the upstream broke the
protocol, which is its fault, not the caller's."""

HTTP_STATUS_TO_CODE: Mapping[int, grpc.StatusCode] = MappingProxyType(
    {status: rule.code for status, rule in sorted(_HTTP_RULES.items())}
)
"""The statuses mapped explicitly; any other 4xx is INVALID_ARGUMENT, anything else INTERNAL."""


def _rule_for(status: int) -> HttpRule:
    rule = _HTTP_RULES.get(status)
    if rule is not None:
        return rule
    if 400 <= status < 500:
        return _OTHER_4XX
    return _OTHER_5XX if status >= 500 else _OTHER


def code_for_http_status(status: int) -> grpc.StatusCode:
    """The gRPC code an upstream HTTP error status maps to."""
    return _rule_for(status).code


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
    return _rule_for(status).retryable


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
    rule = _rule_for(status)
    upstream = _parse_body(body)
    reason = rule.reason or _upper_snake(upstream.label()) or f"HTTP_{status}"
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
        message = f"{head}: {_quote(upstream.message)}"
    elif upstream.violations:
        shown = "; ".join(f"{field}: {text}" for field, text in upstream.violations[:3])
        more = len(upstream.violations) - 3
        message = f"{head}: {_quote(shown)}" + (f" (and {more} more)" if more > 0 else "")
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
        metadata=_metadata(upstream, status),
        request_id=get_header(headers, "x-request-id"),
        extra_details=extras,
        retry_after=retry_after,
        retryable=retryable,
        http_status=status,
    )


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


def _stream_category(upstream: _Upstream) -> _StreamCategory:
    tokens = [
        token.lower()
        for token in (_upper_snake(upstream.type), _upper_snake(upstream.code))
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
    upstream = _from_error_object(error)
    numeric = _http_status_code(upstream.code)
    if numeric is not None:
        rule = _rule_for(numeric)
        code, equivalent = rule.code, numeric
    else:
        category = _stream_category(upstream)
        code, equivalent = category.code, category.equivalent_status
    label = upstream.label()
    reason = _upper_snake(label) or (
        f"HTTP_{numeric}" if numeric is not None else "UPSTREAM_STREAM_ERROR"
    )
    extras: list[Message] = []
    if code is _Code.INVALID_ARGUMENT:
        extras = _bad_request(upstream)
    elif code is _Code.RESOURCE_EXHAUSTED:
        extras = _quota_failure(upstream, reason)
    head = f"upstream reported an error {where}"
    if upstream.message:
        message = f"{head}: {_quote(upstream.message)}"
    else:
        message = f"{head} ({label})" if label else f"{head} without a message"
    code_hint = "insufficient_quota" if upstream.quota_exhausted() else upstream.code
    return BridgeError(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=_metadata(upstream, None),
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

    `detail` is appended to the message (e.g. `str(exc)` of the httpx exception, or for a
    redirect the target origin, without its path or query, which may carry signed tokens).
    Whether it is retryable is the table's column (`TransportRule.retryable`).
    """
    rule = _TRANSPORT[kind]
    code, reason = rule.code, rule.reason
    message = rule.summary.format(domain)
    detail = " ".join(_scrub(detail).split())
    if detail:
        message += f": {_clip(detail, _QUOTE_LIMIT)}"
    return BridgeError(
        code,
        message,
        reason=reason,
        domain=domain,
        request_id=request_id,
        retryable=rule.retryable,
    )


def invalid_argument(field: str, description: str, *, domain: str = BRIDGE_DOMAIN) -> BridgeError:
    """A request the bridge rejects itself, before calling the upstream.

    Reason INVALID_REQUEST (the bridge's own, distinct from the upstream's
    INVALID_REQUEST_ERROR), with a BadRequest naming the field so clients can point at it.
    """
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    return BridgeError(
        _Code.INVALID_ARGUMENT,
        f"invalid request: {field}: {description}",
        reason="INVALID_REQUEST",
        domain=domain,
        extra_details=[error_details_pb2.BadRequest(field_violations=[violation])],
    )


def resource_exhausted(limit_name: str, limit: int, actual: int) -> BridgeError:
    """A request over one of the bridge's own size limits (`limit_name` is the Config field).

    Reason REQUEST_TOO_LARGE, as for an upstream 413, so clients handle both alike; the limit's
    name and its flag are in the message and metadata so the operator knows which setting to
    raise, and the caller knows by how much to shrink the request.
    """
    flag = "--" + limit_name.replace("_", "-")
    return BridgeError(
        _Code.RESOURCE_EXHAUSTED,
        f"request too large: {actual} bytes exceeds the bridge's {limit_name} limit of "
        f"{limit} bytes (option {flag})",
        reason="REQUEST_TOO_LARGE",
        domain=BRIDGE_DOMAIN,
        metadata={"limitName": limit_name, "limit": str(limit), "actual": str(actual)},
    )
