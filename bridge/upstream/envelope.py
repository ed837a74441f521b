"""What an upstream's error body or in-stream error object says, normalised (`ErrorBody`).

One place for every error shape OpenAI-compatible servers send (OpenAI, Vercel, vLLM, Ollama,
TGI, LiteLLM, FastAPI's 422 `detail`), and the text helpers that keep quoted upstream words
short and free of credentials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.status import encodable
from bridge.telemetry.redaction import scrub

_EXCERPT_LIMIT = 200
"""Longest excerpt of a body that is not an error envelope: enough to recognise a proxy's
page, short enough to keep the status readable."""


QUOTE_LIMIT = 1000
"""Longest upstream message quoted. The status message travels twice (grpc-message and the
details' Status) and again in field/quota descriptions; grpc's default limit for all trailing
metadata is 8 KiB, beyond which the caller would get an unrelated error instead of ours."""


_PARSE_LIMIT = 1 << 20
"""Error bodies longer than this are not parsed as JSON (an error envelope is a few hundred
bytes; a megabyte is a misbehaving proxy) and only excerpted."""


_REASON_LIMIT = 63
"""ErrorInfo.reason is at most 63 characters of [A-Z0-9_] (google/rpc/error_details.proto)."""


BodyKind = Literal["envelope", "json", "non_json", "empty"]


@dataclass(frozen=True)
class ErrorBody:
    """What an error body (or a stream error object) says, normalised to strings."""

    kind: BodyKind
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
        if self.code is not None and upper_snake(self.code) is not None:
            return self.code
        return self.type


def as_text(value: object) -> str | None:
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


def from_error_object(error: Mapping[str, Any]) -> ErrorBody:
    """Normalise an OpenAI-style error object ({message, type, param, code})."""
    message = as_text(error.get("message"))
    return ErrorBody(
        kind="envelope",
        message=message if message else None,
        type=as_text(error.get("type")) or None,
        code=as_text(error.get("code")) or None,
        param=as_text(error.get("param")) or None,
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
            found["message"] = as_text(dict(data)) if data else None
        return found
    return None


def _loc_field(loc: object) -> str:
    """FastAPI's `loc` as a dotted field path, without the leading "body" location marker
    (the caller knows no HTTP body; `messages.0.content` names its own request field)."""
    parts = [str(part) for part in loc] if isinstance(loc, list) else [str(loc)]
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts)


def without_surrogates(value: Any) -> Any:
    """Decoded JSON with each lone UTF-16 surrogate (`"\\ud800"`, half an emoji) in its
    strings as U+FFFD, as any UTF-8 decoder does: no protobuf string or gRPC status message
    can hold one. Python's json module keeps them; orjson refuses them."""
    if type(value) is str:
        return encodable(value)
    if type(value) is dict:
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if type(value) is list:
        return [without_surrogates(v) for v in value]
    return value


def parse_body(body: bytes) -> ErrorBody:
    """Classify an HTTP error body: OpenAI envelope, other JSON, non-JSON, or empty."""
    text = body[:_PARSE_LIMIT].decode("utf-8", errors="replace")
    if not text.strip():
        return ErrorBody(kind="empty")
    if len(body) > _PARSE_LIMIT:
        return ErrorBody(kind="non_json", excerpt=excerpt(text))
    try:
        data: object = without_surrogates(json.loads(text))
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return ErrorBody(kind="non_json", excerpt=excerpt(text))
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # some gateways (Google's OpenAI endpoint) wrap the envelope in a list
    if isinstance(data, dict):
        error = error_object(data)
        if error is not None and not isinstance(data.get("error"), str):
            return from_error_object(error)
        detail = data.get("detail")
        if isinstance(detail, list):
            violations = tuple(
                (_loc_field(item.get("loc", [])), as_text(item.get("msg")) or "")
                for item in detail
                if isinstance(item, dict)
            )
            if violations:
                return ErrorBody(kind="json", violations=violations)
        for key in ("error", "detail", "message"):  # Ollama, FastAPI HTTPException, others
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return ErrorBody(kind="json", message=value)
    return ErrorBody(kind="json", excerpt=excerpt(text))


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def excerpt(text: str) -> str:
    """A one-line excerpt of at most `_EXCERPT_LIMIT` characters, whitespace collapsed."""
    # Only the start matters; don't scan a megabyte of HTML to show 200 characters of it.
    return clip(" ".join(scrub(text[: _EXCERPT_LIMIT * 8]).split()), _EXCERPT_LIMIT)


def quote(text: str) -> str:
    return clip(scrub(text).strip(), QUOTE_LIMIT)


def upper_snake(value: str | None) -> str | None:
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
