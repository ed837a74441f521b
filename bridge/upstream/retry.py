"""How long to wait between upstream attempts, and how many to make.

DESIGN.md ("Retries") fixes the rules. *Whether* a failure is retried is a column of the one
failure table in `bridge.upstream.failures` (each HTTP status, transport failure and in-stream
error has
its code, reason and retryability there); this module holds the *timing*: the attempt count,
jittered exponential backoff, and the delay an upstream asks for (`retry-after-ms`,
`retry-after` as seconds or an HTTP date, RFC 9110 section 10.2.3). The one retry loop, in
`bridge.upstream.client`, reads `BridgeError.retryable` and `BridgeError.retry_after`, calls
`RetryPolicy.backoff`, and checks that the next attempt fits inside the caller's deadline.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC

__all__ = [
    "DEFAULT_POLICY",
    "RetryPolicy",
    "get_header",
    "parse_retry_after",
]


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try and how long to wait in between.

    One immutable value built from configuration and passed down, so tests can use a fast policy
    and a seeded RNG without patching module globals.
    """

    max_attempts: int = 3
    """Attempts in all, including the first; 1 disables retries."""
    initial_backoff: float = 0.5
    """Delay in seconds before the first retry, before jitter."""
    max_backoff: float = 8.0
    """Longest computed delay in seconds, jitter included (server-given: `max_retry_after`)."""
    multiplier: float = 2.0
    """Growth of the delay per attempt."""
    jitter: float = 0.25
    """Random spread of a computed delay, as a ± fraction, so clients that failed together do not
    retry together."""
    max_retry_after: float = 60.0
    """Cap in seconds on a delay the upstream asked for, so a hostile or buggy header cannot park
    a call for an hour (the caller's deadline still bounds it further)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")
        if self.multiplier < 1.0:
            raise ValueError("multiplier must be at least 1")

    def backoff(
        self, attempt: int, retry_after: float | None, *, rng: random.Random | None = None
    ) -> float:
        """Seconds to sleep before the next attempt.

        `attempt` is the number of attempts already made (1 after the first failure). A delay
        the upstream gave (`retry_after`) wins because the upstream knows when its limit resets;
        it is capped at `max_retry_after`. Otherwise the delay grows exponentially from
        `initial_backoff`, spread by ±`jitter`, and never exceeds `max_backoff`.
        """
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(retry_after, 0.0), self.max_retry_after)
        exponent = max(attempt, 1) - 1
        # min() before the power would overflow for absurd attempt counts.
        try:
            base = min(self.initial_backoff * self.multiplier**exponent, self.max_backoff)
        except OverflowError:
            base = self.max_backoff
        spread = (rng if rng is not None else random).uniform(-self.jitter, self.jitter)
        return min(max(base * (1.0 + spread), 0.0), self.max_backoff)

    def attempts_left(self, attempts_made: int) -> bool:
        """Whether another attempt is allowed after `attempts_made` attempts."""
        return attempts_made < self.max_attempts


DEFAULT_POLICY = RetryPolicy()
"""The policy DESIGN.md describes: 3 attempts, 0.5 s doubling to 8 s, ±25 %, server delay ≤ 60 s."""


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping.

    aiohttp's response headers are already case-insensitive, but plain dicts (tests) are not,
    and HTTP header names are case-insensitive by definition.
    """
    wanted = name.lower()
    direct = headers.get(wanted)
    if direct is not None:
        return direct
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The delay in seconds the upstream asked for, or None when it gave none we can read.

    `retry-after-ms` (OpenAI's and Vercel's precise form) comes first, then the standard
    `retry-after` as delta-seconds or an HTTP date (relative to `now`, a Unix time, default the
    current time). A date in the past or a negative number means "now" (0). Unreadable values
    are ignored rather than guessed at, so the caller falls back to its own backoff.
    """
    millis = _parse_number(get_header(headers, "retry-after-ms"))
    if millis is not None:
        return _bounded(millis / 1000.0)
    raw = get_header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _parse_number(raw)
    if seconds is not None:
        return _bounded(seconds)
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown local zone (RFC 5322)
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return _bounded(when.timestamp() - current)


MAX_RETRY_AFTER = 366 * 86400.0
"""Longest delay read from an upstream header, in seconds (a year): a larger one is read as
this, so that RetryInfo's Duration stays representable (google.protobuf.Duration holds at
most about 10,000 years, and an absurd header must not make the status itself fail)."""


def _bounded(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _parse_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
