"""The retry rules of DESIGN.md ("Retries"), checked one by one."""

from __future__ import annotations

import email.utils
import random
from typing import get_args

import httpx
import pytest

from bridge.retry import (
    DEFAULT_POLICY,
    TRANSPORT_RETRYABLE,
    RetryPolicy,
    TransportKind,
    get_header,
    is_retryable_status,
    is_retryable_transport,
    parse_retry_after,
)

NOW = 1_750_000_000.0


# --- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250.5"}, 0.2505),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"Retry-After": "7"}, 7.0),
        ({"RETRY-AFTER-MS": "40"}, 0.04),
        ({"retry-after-ms": "2000", "retry-after": "9"}, 2.0),  # ms wins
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # unreadable ms falls through
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after-ms": "-100"}, 0.0),
    ],
)
def test_parse_retry_after_numbers(headers: dict[str, str], expected: float) -> None:
    assert parse_retry_after(headers, now=NOW) == pytest.approx(expected)


def test_parse_retry_after_http_date() -> None:
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=NOW) == pytest.approx(30.0)


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    date = email.utils.formatdate(NOW - 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=NOW) == 0.0


def test_parse_retry_after_http_date_without_zone_is_utc() -> None:
    date = email.utils.formatdate(NOW + 10, usegmt=True).replace("GMT", "-0000")
    assert parse_retry_after({"retry-after": date}, now=NOW) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "tomorrow-ish"},
        {"retry-after": ""},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after-ms": "NaN"},
        {"x-retry": "5"},
    ],
)
def test_parse_retry_after_garbage_is_none(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers, now=NOW) is None


def test_parse_retry_after_accepts_httpx_headers() -> None:
    headers = httpx.Headers({"Retry-After-Ms": "300"})
    assert parse_retry_after(headers) == pytest.approx(0.3)


def test_get_header_is_case_insensitive_on_plain_dicts() -> None:
    assert get_header({"X-Request-ID": "req_1"}, "x-request-id") == "req_1"
    assert get_header({"x-request-id": "req_2"}, "X-Request-Id") == "req_2"
    assert get_header({}, "x-request-id") is None


# --- is_retryable_status -------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520, 529])
def test_retried_statuses(status: int) -> None:
    assert is_retryable_status(status, {}, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 418, 422, 451, 499])
def test_never_retried_statuses(status: int) -> None:
    assert not is_retryable_status(status, {}, None)


def test_insufficient_quota_is_not_retried() -> None:
    assert not is_retryable_status(429, {}, "insufficient_quota")
    assert is_retryable_status(429, {}, "rate_limit_exceeded")


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (500, "false", False),
        (503, "False", False),
        (429, "false", False),
        (400, "true", True),
        (404, " TRUE ", True),
        (500, "maybe", True),  # an unreadable header decides nothing
        (400, "maybe", False),
    ],
)
def test_x_should_retry_decides_first(status: int, header: str, expected: bool) -> None:
    assert is_retryable_status(status, {"X-Should-Retry": header}, None) is expected


def test_x_should_retry_overrides_insufficient_quota() -> None:
    assert is_retryable_status(429, {"x-should-retry": "true"}, "insufficient_quota")


# --- transport kinds -----------------------------------------------------------------------


def test_transport_table_covers_every_kind() -> None:
    assert set(TRANSPORT_RETRYABLE) == set(get_args(TransportKind))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("connect", True),
        ("read_timeout", True),
        ("reset", True),
        ("protocol", True),
        ("body_cut", True),
        ("stream_cut", True),  # the loop itself never retries after the first message
        ("deadline", False),
        ("too_large", False),
        ("malformed", False),
        ("redirect", False),
    ],
)
def test_transport_retryable(kind: TransportKind, expected: bool) -> None:
    assert is_retryable_transport(kind) is expected


# --- RetryPolicy.backoff -------------------------------------------------------------------


def test_default_policy_matches_design() -> None:
    assert RetryPolicy() == DEFAULT_POLICY
    assert DEFAULT_POLICY.max_attempts == 3
    assert DEFAULT_POLICY.attempts_left(2)
    assert not DEFAULT_POLICY.attempts_left(3)


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_stays_within_jittered_exponential_bounds(attempt: int) -> None:
    policy = RetryPolicy()
    base = min(policy.initial_backoff * policy.multiplier ** (attempt - 1), policy.max_backoff)
    low = base * (1 - policy.jitter)
    high = min(base * (1 + policy.jitter), policy.max_backoff)
    rng = random.Random(attempt)
    delays = [policy.backoff(attempt, None, rng=rng) for _ in range(500)]
    assert all(low <= delay <= high for delay in delays)
    assert len(set(delays)) > 1  # jitter actually spreads


def test_backoff_is_reproducible_with_a_seed() -> None:
    policy = RetryPolicy()
    first = [policy.backoff(n, None, rng=random.Random(42)) for n in range(1, 5)]
    second = [policy.backoff(n, None, rng=random.Random(42)) for n in range(1, 5)]
    assert first == second


def test_backoff_without_jitter_is_exact_exponential() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [policy.backoff(n, None) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_backoff_treats_attempt_zero_like_the_first_failure() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.backoff(0, None) == policy.backoff(1, None) == 0.5


def test_backoff_survives_huge_attempt_counts() -> None:
    assert RetryPolicy(jitter=0.0).backoff(10_000, None) == 8.0


def test_server_delay_wins_and_is_capped() -> None:
    policy = RetryPolicy()
    rng = random.Random(0)
    assert policy.backoff(1, 2.0, rng=rng) == 2.0
    assert policy.backoff(3, 0.0, rng=rng) == 0.0
    assert policy.backoff(1, 3600.0, rng=rng) == policy.max_retry_after
    assert policy.backoff(1, -1.0, rng=rng) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"initial_backoff": -1.0},
        {"multiplier": 0.5},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
