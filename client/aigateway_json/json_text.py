"""JSON text a caller wrote for a `<key>_json` field, checked so the upstream body can carry it
as it is (RFC 8259: no NaN or Infinity, unique keys advised; UTF-8 only, so no lone surrogate).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aigateway_json.errors import MAX_NESTING, TranslationError


def parse_json_text(text: str) -> dict[str, Any]:
    """The JSON object in a `<key>_json` field, its keys in the order written.

    TranslationError unless `text` is JSON text of one object that the upstream body can
    carry as it is: no NaN or Infinity (nor a number too large for a double), no key twice
    in an object (which of the two would count is up to each parser), no lone UTF-16
    surrogate escape (the body is UTF-8), and no deeper than MAX_NESTING objects and arrays.
    """
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise TranslationError(f"JSON nested deeper than {MAX_NESTING} levels") from None
    except TranslationError:
        raise
    except ValueError as exc:
        raise TranslationError(f"not JSON: {exc}") from None
    if type(data) is not dict:
        raise TranslationError(f"got {_json_kind(data)}")
    _check_json_text(data)
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise TranslationError(f"the key {json.dumps(key)} appears twice in an object")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise TranslationError(f"{name} is not JSON; send a finite number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (math.inf, -math.inf):
        raise TranslationError(f"{literal[:40]} is beyond the range of a double (about 1e308)")
    return value


def _json_kind(data: Any) -> str:
    if type(data) is list:
        return "an array"
    if type(data) is str:
        return "a string"
    if data is None:
        return "null"
    return "a boolean" if type(data) is bool else "a number"


def _check_json_text(data: dict[str, Any]) -> None:
    """Nesting depth and lone surrogates, walked without recursion."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise TranslationError(f"JSON nested deeper than {MAX_NESTING} levels")
        if type(value) is dict:
            for key, item in value.items():
                _check_string(key)
                pending.append((item, depth + 1))
        elif type(value) is list:
            pending.extend((item, depth + 1) for item in value)
        elif type(value) is str:
            _check_string(value)


def _check_string(value: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise TranslationError(
                "a lone UTF-16 surrogate escape (such as \\ud83d), which is not a character; "
                "send the character or its full surrogate pair"
            ) from None
