"""The retry rules of DESIGN.md ("Retries"), checked one by one, then end to end."""

from __future__ import annotations

import dataclasses
import email.utils
import itertools
import random
import time
from typing import get_args

import grpc
import httpx
import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2

from bridge.server import assembly as server
from bridge.upstream.failures import is_retryable_status
from bridge.upstream.retry import DEFAULT_POLICY, RetryPolicy, get_header, parse_retry_after
from bridge.upstream.transport_failures import TransportKind, is_retryable_transport
from dev.upstream.api import RecordedRequest
from dev.upstream.server import DevUpstream, StreamError
from dev.upstream.server import Status as DevStatus
from tests.conftest import Stubs, bridge_config, serving, stubs_for

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
    for kind in get_args(TransportKind):
        assert isinstance(is_retryable_transport(kind), bool)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("connect", True),
        ("read_timeout", True),
        ("reset", True),
        ("protocol", True),
        # The upstream answered 200 (and may have billed the request): never sent again.
        ("body_cut", False),
        ("stream_cut", False),
        ("certificate", False),  # cannot fix itself
        ("pool_exhausted", False),
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


# --- end to end: the bridge's retry loop against a real upstream ---------------------------
#
# Delays are checked from below only, by when the upstream received each attempt
# (`RecordedRequest.at`): a sleep never ends early, so these bounds cannot flake; how much
# longer a loaded machine takes is not asserted.

E2E_MODEL = "openai/gpt-4o-mini"


def _chat() -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model=E2E_MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="retry me")]
    )


def _attempts(upstream: DevUpstream) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.path == "/v1/chat/completions"]


def _gaps(upstream: DevUpstream) -> list[float]:
    times = [r.at for r in _attempts(upstream)]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def _fails(stubs: Stubs) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(_chat())
    return caught.value.code()


async def test_x_should_retry_false_stops_a_retryable_status(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(E2E_MODEL, DevStatus(503, headers={"x-should-retry": "false"}))
    assert await _fails(stubs) is grpc.StatusCode.UNAVAILABLE
    assert len(_attempts(upstream)) == 1


async def test_x_should_retry_true_retries_a_final_status(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(E2E_MODEL, DevStatus(400, headers={"x-should-retry": "true"}))
    assert (await stubs.chat.CreateChatCompletion(_chat())).choices
    assert len(_attempts(upstream)) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_never_retried_statuses_end_to_end(
    upstream: DevUpstream, stubs: Stubs, status: int
) -> None:
    upstream.program(E2E_MODEL, DevStatus(status), DevStatus(status))
    await _fails(stubs)
    assert len(_attempts(upstream)) == 1


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
async def test_retried_statuses_end_to_end(
    upstream: DevUpstream, stubs: Stubs, status: int
) -> None:
    upstream.program(E2E_MODEL, DevStatus(status))
    assert (await stubs.chat.CreateChatCompletion(_chat())).choices
    assert len(_attempts(upstream)) == 2


async def test_insufficient_quota_is_not_retried_end_to_end(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    body = {"error": {"message": "pay", "type": "insufficient_quota", "code": "insufficient_quota"}}
    upstream.program(E2E_MODEL, DevStatus(429, body), DevStatus(429, body))
    assert await _fails(stubs) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(_attempts(upstream)) == 1


@pytest.mark.parametrize(
    ("headers", "at_least"),
    [
        ({"retry-after-ms": "300", "retry-after": "30"}, 0.3),  # ms first
        ({"retry-after": "1"}, 1.0),
        ({"retry-after": "date"}, 0.5),
    ],
    ids=["retry-after-ms", "retry-after seconds", "retry-after date"],
)
async def test_upstream_delay_is_waited_for(
    upstream: DevUpstream, stubs: Stubs, headers: dict[str, str], at_least: float
) -> None:
    if headers.get("retry-after") == "date":
        # Whole seconds on the wire: 2 s from now is at least 1 s once truncated.
        headers = {"retry-after": email.utils.formatdate(time.time() + 2, usegmt=True)}
    upstream.program(E2E_MODEL, DevStatus(429, headers=headers))
    assert (await stubs.chat.CreateChatCompletion(_chat())).choices
    assert len(_attempts(upstream)) == 2
    # The test bridge's own backoff is at most 0.05 s: only the header explains the wait.
    assert _gaps(upstream)[0] >= at_least


async def test_upstream_delay_is_capped(upstream: DevUpstream) -> None:
    running = await server.start(bridge_config(upstream))
    # max_retry_after is a RetryPolicy constant (60 s); a small one keeps the test short.
    running.upstream.policy = dataclasses.replace(running.upstream.policy, max_retry_after=0.2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            upstream.program(E2E_MODEL, DevStatus(503, headers={"retry-after": "3600"}))
            # Uncapped, this call would wait an hour (and the test time out).
            assert (await stubs_for(channel).chat.CreateChatCompletion(_chat())).choices
    finally:
        await running.stop(0)
    assert _gaps(upstream)[0] >= 0.2


async def test_backoff_without_upstream_delay_grows(upstream: DevUpstream) -> None:
    failure = DevStatus(500)
    upstream.program(E2E_MODEL, failure, failure, failure)
    async with serving(upstream, max_attempts=4, initial_backoff=0.2, max_backoff=1.0) as stubs:
        assert (await stubs.chat.CreateChatCompletion(_chat())).choices
    gaps = _gaps(upstream)
    assert len(gaps) == 3
    # 0.2, 0.4, 0.8 s, each spread by ±25 %: the lower bounds of the jittered exponential.
    lows = (0.15, 0.3, 0.6)
    assert all(gap >= low for gap, low in zip(gaps, lows, strict=True)), (gaps, lows)


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_attempts_are_configurable(upstream: DevUpstream, attempts: int) -> None:
    upstream.program(E2E_MODEL, *[DevStatus(503)] * 6)
    async with serving(upstream, max_attempts=attempts) as stubs:
        assert await _fails(stubs) is grpc.StatusCode.UNAVAILABLE
    assert len(_attempts(upstream)) == attempts


async def test_other_rpcs_retry_too(upstream: DevUpstream, stubs: Stubs) -> None:
    upstream.program("anthropic/claude-sonnet-4.5", DevStatus(502))
    upstream.program("openai/text-embedding-3-small", DevStatus(503))
    model = await stubs.models.RetrieveModel(
        models_pb2.RetrieveModelRequest(model="anthropic/claude-sonnet-4.5")
    )
    assert model.model.id == "anthropic/claude-sonnet-4.5"
    embedded = await stubs.embeddings.CreateEmbeddings(
        embeddings_pb2.CreateEmbeddingsRequest(
            model="openai/text-embedding-3-small", input_text="again"
        )
    )
    assert embedded.data
    assert [r.method for r in upstream.requests] == ["GET", "GET", "POST", "POST"]


async def test_never_retried_after_the_first_message(upstream: DevUpstream, stubs: Stubs) -> None:
    # A retryable failure (overloaded) after one chunk went out: the caller gets the status,
    # not a second copy of the chunk from a new attempt.
    upstream.program(E2E_MODEL, StreamError(after=1, type="overloaded_error"))
    request = chat_pb2.StreamChatCompletionRequest(
        model=E2E_MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="once")]
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in stubs.chat.StreamChatCompletion(request):
            received.append(chunk)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert len(received) == 1
    assert len(_attempts(upstream)) == 1
