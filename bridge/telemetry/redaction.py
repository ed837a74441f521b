"""Credentials cut out of text bound for a caller or a log (DESIGN.md "Credentials").

`Redactor` removes the secrets it was given in every form an upstream or HTTP parser may echo
them; `scrub` masks anything shaped like a well-known credential, ours or not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote as _quote_url

_MIN_SECRET = 8
"""Shorter "credentials" are not cut out of error bodies: they would mangle ordinary words."""


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
        return scrub(text)

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


_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-[redacted]"),
    # Vercel AI Gateway API keys.
    (re.compile(r"\bvck_[A-Za-z0-9_-]{16,}"), "vck_[redacted]"),
)


def scrub(text: str) -> str:
    """Remove anything shaped like a credential. The bridge never puts credentials into
    messages itself; this guards against an upstream or proxy echoing the request's
    Authorization header back in its error page."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
