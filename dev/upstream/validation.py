"""Request validation shared by the development upstream's endpoints."""

from __future__ import annotations

from typing import Any

__all__ = ["BadRequest", "positive_int"]


class BadRequest(Exception):
    """A validation failure, answered 400 with an envelope naming `param`."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def positive_int(body: dict[str, Any], name: str, default: int) -> int:
    """`body[name]` if it is an integer >= 1 (bools excluded), `default` if absent or null.

    Raises `BadRequest` naming `name` otherwise.
    """
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"'{name}' must be a positive integer", name)
    return value
