"""Credentials cut out of text bound for a caller or a log (DESIGN.md "Credentials").

`Redactor` removes the secrets it was given in every form an upstream or HTTP parser may echo
them; `scrub` masks anything shaped like a well-known credential, ours or not.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote as _quote_url

import orjson

_MIN_SECRET = 8
"""Shorter "credentials" are not cut out of error bodies: they would mangle ordinary words."""


PARTIAL_RUN = 10
"""Characters of a secret in a row that count as an echo of it (see `Redactor`)."""


class Redactor:
    """Cuts credentials out of text bound for a caller (DESIGN.md "Credentials").

    The upstream may echo the key it was sent: in an error envelope, a stream error, `param`,
    `code`, a malformed body, JSON-escaped in a 401 body. `secrets` (the bridge's credential
    and the caller's own) are removed in every form they can take there: raw, JSON-escaped
    (with and without `\\u` escapes and `\\/`), percent-encoded, and as Python's repr of
    each, once or twice (an HTTP parser's error quotes the line it refused that way). Shapes
    of well-known keys (`Bearer ...`, `sk-...`, Vercel's `vck_...`) are masked even when not
    one of ours. A run of `PARTIAL_RUN` or more characters of a form is cut too: upstreams
    echo keys in part (OpenAI's "Incorrect API key provided: sk-proj-****abcd" keeps both
    ends), and an excerpt may cut a key in two.
    Secrets shorter than 8 characters are not cut: they would mangle ordinary words.
    """

    __slots__ = ("_byte_forms", "_forms", "_windows")

    _windows: re.Pattern[str] | None

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
        self._byte_forms = tuple(form.encode() for form in self._forms)
        windows = sorted(
            {
                form[i : i + PARTIAL_RUN]
                for form in forms
                for i in range(len(form) - PARTIAL_RUN + 1)
            }
        )
        # A lookahead finds every start of a window, overlapping ones included, in one pass.
        self._windows = (
            re.compile("(?=(" + "|".join(re.escape(w) for w in windows) + "))") if windows else None
        )

    @staticmethod
    def of(*secrets: str | None) -> Redactor:
        """A Redactor of `secrets`, shared between calls that carry the same ones: building
        one costs tens of microseconds, and a caller's key repeats call after call."""
        return _redactor_of(secrets)

    def found_in(self, text: str | bytes) -> bool:
        """Whether a secret occurs whole, in any of its forms, in `text`: a few substring
        searches in C. Echoes in part are not looked for here."""
        if isinstance(text, bytes):
            return any(form in text for form in self._byte_forms)
        return any(form in text for form in self._forms)

    def echoed_in(self, raw: str | bytes, decoded: Any) -> bool:
        """Whether JSON text `raw`, decoded as `decoded`, carries a secret whole: cheap enough
        for every answer and stream event, to decide whether the costly `json` redaction is
        needed. JSON may escape any character (`\\u0073k-...`) and a body may be in UTF-16,
        so text with a backslash or a NUL is judged on `decoded`, written out again as
        UTF-8 by orjson (which escapes nothing but quotes, backslashes and controls)."""
        if self.found_in(raw):
            return True
        if isinstance(raw, bytes):
            plain = b"\\" not in raw and b"\x00" not in raw
        else:
            plain = "\\" not in raw and "\x00" not in raw
        if plain:
            return False
        try:
            return self.found_in(orjson.dumps(decoded))
        except TypeError:  # NaN-free but not orjson's: a huge integer, say
            return self.found_in(json.dumps(decoded, ensure_ascii=False).encode())

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, "[redacted]")
        if self._windows is not None and len(text) >= PARTIAL_RUN:
            text = self._cut_partial(self._windows, text)
        return scrub(text)

    @staticmethod
    def _cut_partial(windows: re.Pattern[str], text: str) -> str:
        """Replace every run of text made of overlapping secret windows with [redacted]."""
        spans: list[list[int]] = []
        for match in windows.finditer(text):
            start = match.start()
            if spans and start <= spans[-1][1]:
                spans[-1][1] = start + PARTIAL_RUN
            else:
                spans.append([start, start + PARTIAL_RUN])
        if not spans:
            return text
        out: list[str] = []
        at = 0
        for start, end in spans:
            out.append(text[at:start])
            out.append("[redacted]")
            at = end
        out.append(text[at:])
        return "".join(out)

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


@functools.lru_cache(maxsize=1024)
def _redactor_of(secrets: tuple[str | None, ...]) -> Redactor:
    return Redactor(secrets)
