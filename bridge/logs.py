"""Logging setup: one line per event, as JSON (`--log-format json`) or as readable text.

Log collectors (Loki, Cloud Logging, Elasticsearch) parse one JSON object per line without
any configuration, so `json` is the format for production; `text` is for a terminal. Both
carry the `extra={...}` fields of a record (the access log's method, code, duration, request
ids). As a last line of defence, every configured secret value and every bearer token is
masked in the formatted line, whatever a log call was given.
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
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for people reading a terminal."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in _extras(record).items())
        line = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redact(line)


def _text_value(value: Any) -> str:
    text = str(value)
    return text if text and " " not in text and '"' not in text else json.dumps(text)


def _iso(created: float) -> str:
    millis = int(created % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


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
    # httpx logs every upstream request at INFO: a second line per call beside the access
    # log, and about a sixth of a unary call's CPU (bench/README.md). Shown at DEBUG only.
    logging.getLogger("httpx").setLevel(
        logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    )
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
