"""The one error of the translation, and the nesting limit it enforces.

Every failure of `from_json`, `to_json`, `request_body` and `parse_json_text` is a
`TranslationError`; nothing else escapes the package for bad input.
"""

from __future__ import annotations


class TranslationError(ValueError):
    """JSON that cannot become the requested message at all (e.g. not an object)."""


MAX_NESTING = 100
"""How deep messages may nest below the top one: the default recursion limit of the protobuf
parsers of C++, Java, Python (upb) and C#. A message nested deeper serializes, but the
caller's generated client cannot decode it, so `from_json` refuses JSON that would need it
(a JSON object inside a Struct costs 3 levels, so about 32 levels of JSON fit)."""


def too_deep() -> TranslationError:
    """The error for JSON that would nest messages deeper than MAX_NESTING (returned, to raise)."""
    return TranslationError(
        f"JSON nested deeper than protobuf's limit of {MAX_NESTING} message levels, which "
        "generated clients cannot decode"
    )
