r"""Logging setup: one line per event, as JSON (`--log-format json`) or as readable text.

Log collectors (Loki, Cloud Logging, Elasticsearch) parse one JSON object per line without
any configuration, so `json` is the format for production; `text` is for a terminal. Both
carry the `extra={...}` fields of a record (the access log's method, code, duration, request
ids). As a last line of defence, every configured secret value and every bearer token is
masked in the formatted line, whatever a log call was given.

Fields can hold what a caller chose (a model id, a request id, an exception's message), so
no record may forge another (issue 12, "Log forging"): in text, control characters (C0, DEL,
C1, U+2028/U+2029) are escaped (`\n`, `\x85`, `\u2028`) and every line after a record's
first (a traceback) is indented with `  | `; in JSON the encoder escapes C0 itself and the
others are written as `\uXXXX`, so a record is always one line. Every field is bounded
(`clean`: FIELD_LIMIT characters for extras, MESSAGE_LIMIT for the message,
EXCEPTION_LIMIT for a traceback), the rest replaced by `...(N more)`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_MASK = "***"

FIELD_LIMIT = 256
"""Characters kept of one logged or traced field (a model id, a request id, a header)."""
MESSAGE_LIMIT = 4096
"""Characters kept of a record's message."""
EXCEPTION_LIMIT = 16384
"""Characters kept of a record's traceback."""

# Characters that end or rewrite a line in some reader: C0 controls, DEL, C1 controls (NEL,
# U+0085, ends a line in some), and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}
# In JSON, C0 is escaped by the encoder; the rest must not appear raw in a line either.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")


def bound(text: str, limit: int = FIELD_LIMIT) -> str:
    """`text` cut to `limit` characters, with `...(N more)` saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more)"


def clean(value: object, limit: int = FIELD_LIMIT) -> str:
    r"""`value` as text fit for one log line or span attribute: bounded, controls escaped.

    Escapes C0, DEL, C1, U+2028 and U+2029 as `\n`, `\xNN` or `\uNNNN` after cutting to
    `limit` characters (so the result is at most about six times `limit`).
    """
    text = bound(value if isinstance(value, str) else str(value), limit)
    return text.translate(_ESCAPES) if _CONTROL.search(text) else text


class _Redactor:
    """Masks secrets in a formatted line: configured values verbatim, and bearer tokens."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, _MASK)
        # Every line passes here: look for the words before running the regex.
        lowered = line.lower()
        if "bearer" in lowered or "basic" in lowered:
            line = _BEARER.sub(lambda m: f"{m.group(1)} {_MASK}", line)
        return line


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extras."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": bound(self.redact(record.getMessage()), MESSAGE_LIMIT),
        }
        for key, value in _extras(record).items():
            entry[bound(key)] = _json_value(value, self.redact)
        if record.exc_info:
            entry["exception"] = bound(
                self.redact(self.formatException(record.exc_info)), EXCEPTION_LIMIT
            )
        line = json.dumps(entry, default=str, ensure_ascii=False)
        if _JSON_RAW.search(line):
            line = _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
        return self.redact(line)


def _json_value(value: Any, redact: _Redactor) -> Any:
    """Numbers, booleans and None as they are; anything else as bounded text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return bound(redact(value if isinstance(value, str) else str(value)))


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for people reading a terminal."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = _Redactor(secrets)
        self._keys: dict[str, str] = {}

    def _key(self, key: str) -> str:
        """`clean(key)`, remembered: the keys of extra fields are the code's, and few."""
        cleaned = self._keys.get(key)
        if cleaned is None:
            cleaned = clean(key)
            if len(self._keys) < 1024:
                self._keys[key] = cleaned
        return cleaned

    def _value(self, value: object) -> str:
        if type(value) is int or type(value) is float:
            return repr(value)  # no spaces, quotes or controls; the line is redacted after
        return _text_value(bound(self.redact(str(value))))

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{self._key(k)}={self._value(v)}" for k, v in _extras(record).items())
        message = clean(self.redact(record.getMessage()), MESSAGE_LIMIT)
        line = f"{_iso(record.created)} {record.levelname} {record.name}: {message}"
        if fields:
            line += " " + fields
        if record.exc_info:
            # One record, however many lines: each continuation line is marked as such.
            text = bound(self.redact(self.formatException(record.exc_info)), EXCEPTION_LIMIT)
            line += "".join(f"\n  | {clean(part, EXCEPTION_LIMIT)}" for part in text.split("\n"))
        return self.redact(line)


def _text_value(text: str) -> str:
    """`text` as is, or quoted as a JSON string when it is empty or has spaces, quotes or
    control characters (escaped there, U+2028 and C1 included)."""
    if text and " " not in text and '"' not in text and not _CONTROL.search(text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


_last_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    """RFC 3339 UTC time with milliseconds; the part up to the second is formatted once per
    second (a log line per call made `strftime` a measurable share of a call)."""
    global _last_second
    second = int(created)
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    millis = int(created % 1 * 1000)
    return f"{_last_second[1]}.{millis:03d}Z"


class _UndecodableMetadata(logging.Filter):
    """Turns grpc's "Invalid encoding on b'...'" records into one bounded DEBUG line.

    grpc's Cython layer logs, at ERROR and with a traceback, every metadata value that is not
    UTF-8, with the whole value (up to grpc's metadata limit, 16 KiB), then decodes it as
    Latin-1 and hands it on. Any caller, authorized or not, could thus fill the log with
    ERROR records and tracebacks (and alerts on them), and a value under `authorization` is
    the caller's credential. The call itself is judged by the bridge: a forwarded key with
    such a value is INVALID_ARGUMENT (`bridge.upstream.client.headers_for`), any other is ignored.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Invalid encoding on"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = "a caller sent a metadata value that is not UTF-8", None
            record.exc_info = record.exc_text = None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_GRPC_DECODING = _UndecodableMetadata()


def quiet_grpc_decoding() -> None:
    """Install the `_UndecodableMetadata` filter on grpc's Cython logger (idempotent)."""
    logger = logging.getLogger("grpc._cython.cygrpc")
    if _GRPC_DECODING not in logger.filters:
        logger.addFilter(_GRPC_DECODING)


def configure(
    level: str = "INFO",
    fmt: str = "text",
    *,
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) in `fmt`; returns the handler.

    Replaces handlers installed earlier, so calling it again (a test, a worker) never
    doubles lines.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    known = [s for s in secrets if s]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(known) if fmt == "json" else TextFormatter(known))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_bridge_handler", False):
            root.removeHandler(old)
    handler._bridge_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def secrets_of(config: Any) -> list[str]:
    """Every secret option's value (credentials, token digests), to be masked in logs."""
    import dataclasses

    found: list[str] = []
    for option in dataclasses.fields(config):
        value = getattr(config, option.name)
        if option.metadata.get("secret") and isinstance(value, str) and value:
            found.extend(part.strip() for part in value.split(",") if part.strip())
            found.append(value)
    return found
