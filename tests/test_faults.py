"""Hostile upstreams, deadlines, cancellation and bad input, end to end.

Every test calls a real bridge through a real channel; the development upstream on loopback
misbehaves as programmed (`dev.upstream.faults`). What is asserted is what a caller sees (status,
rich details decoded as any client decodes them, messages received before the failure) and
what the upstream saw (requests, disconnects, open responses). The last tests run many calls at
once against an upstream failing a share of them in every way, and check that nothing leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aigateway.v1 import chat_pb2, common_pb2, embeddings_pb2, models_pb2, responses_pb2_grpc
from aigateway_json import from_json, stream_response_request_from_json
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.server import assembly as server
from dev.upstream.faults import Behavior
from dev.upstream.server import (
    CutStream,
    DevUpstream,
    Empty,
    Hang,
    Html,
    Huge,
    MalformedJson,
    MalformedSse,
    Redirect,
    Reset,
    SlowBody,
    SlowStream,
    Status,
    StreamError,
    WrongContentType,
)
from tests import richstatus
from tests.conftest import DEV_KEY, Stubs, bridge_config, serving, stubs_for, wait_for
from tests.richstatus import RichStatus

Code = grpc.StatusCode
MODEL = "openai/gpt-4o-mini"
UPSTREAM_HOST = "127.0.0.1"
"""ErrorInfo.domain of upstream failures: the host of the dev upstream's URL."""

streamed_or_not = pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])


def chat(model: str = MODEL, text: str = "hello faults", **fields: Any) -> Any:
    return chat_pb2.CreateChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content_text=text)], **fields
    )


def stream_chat(model: str = MODEL, text: str = "hello faults", **fields: Any) -> Any:
    return chat_pb2.StreamChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content_text=text)], **fields
    )


@dataclass
class Outcome:
    """How a call ended: its code, the messages received before, and the rich status."""

    code: grpc.StatusCode
    received: int
    rich: RichStatus | None

    @property
    def status(self) -> RichStatus:
        assert self.rich is not None, "the call succeeded"
        return self.rich


async def call(
    stubs: Stubs,
    streamed: bool,
    model: str = MODEL,
    timeout: float | None = None,  # noqa: ASYNC109 - the caller's deadline, under test
    **fields: Any,
) -> Outcome:
    """One chat call, unary or streamed, read to its end, however it ends."""
    received = 0
    try:
        if streamed:
            async for _ in stubs.chat.StreamChatCompletion(
                stream_chat(model, **fields), timeout=timeout
            ):
                received += 1
        else:
            await stubs.chat.CreateChatCompletion(chat(model, **fields), timeout=timeout)
            received = 1
    except grpc.aio.AioRpcError as error:
        # A deadline the client enforced itself comes without details; everything the
        # bridge ends must have them (of_error fails otherwise).
        trailers = dict(error.trailing_metadata() or ())
        client_side = error.code() is Code.DEADLINE_EXCEEDED and not trailers
        rich = None if client_side else richstatus.of_error(error)
        return Outcome(error.code(), received, rich)
    return Outcome(Code.OK, received, None)


def chat_requests(upstream: DevUpstream) -> int:
    return len([r for r in upstream.requests if r.path == "/v1/chat/completions"])


# ------------------------------------------------------------------------ error bodies


@streamed_or_not
@pytest.mark.parametrize(
    ("fault", "code", "excerpt", "retried"),
    [
        (Html(502), Code.UNAVAILABLE, "<html> <head><title>502 Bad Gateway", True),
        (Html(500), Code.INTERNAL, "<html> <head><title>500 Internal Server Error", True),
        (Html(403), Code.PERMISSION_DENIED, "<title>403 Forbidden</title>", False),
        (Empty(503), Code.UNAVAILABLE, "with an empty body", True),
        (Empty(401), Code.UNAUTHENTICATED, "with an empty body", False),
        (Empty(429), Code.RESOURCE_EXHAUSTED, "with an empty body", True),
    ],
)
async def test_error_pages_and_empty_bodies_map_by_status(
    upstream: DevUpstream,
    stubs: Stubs,
    streamed: bool,
    fault: Html | Empty,
    code: grpc.StatusCode,
    excerpt: str,
    retried: bool,
) -> None:
    upstream.program(MODEL, fault, fault, fault)
    outcome = await call(stubs, streamed)
    assert (outcome.code, outcome.received) == (code, 0)
    status = outcome.status
    assert status.reason == f"HTTP_{fault.status}"
    assert dict(status.info.metadata) == {"httpStatus": str(fault.status)}
    assert status.info.domain == UPSTREAM_HOST
    assert status.request_id and status.request_id.startswith("req_")
    assert status.message.startswith(f"upstream returned {fault.status} ")
    assert excerpt in status.message
    assert chat_requests(upstream) == (3 if retried else 1)


@streamed_or_not
@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (MalformedJson(), "not valid JSON"),
        (WrongContentType(), "content-type 'text/plain; charset=utf-8'"),
    ],
)
async def test_unreadable_200_is_internal_and_not_retried(
    upstream: DevUpstream, stubs: Stubs, streamed: bool, fault: Behavior, says: str
) -> None:
    upstream.program(MODEL, fault)
    outcome = await call(stubs, streamed)
    assert (outcome.code, outcome.received) == (Code.INTERNAL, 0)
    assert outcome.status.reason == "MALFORMED_RESPONSE"
    assert says in outcome.status.message
    assert outcome.status.request_id
    # The upstream answered (and may have billed) the request: the same call would get the
    # same garbage, so it is not sent again.
    assert chat_requests(upstream) == 1


@streamed_or_not
async def test_error_envelope_sent_with_200_is_still_an_error(
    upstream: DevUpstream, stubs: Stubs, streamed: bool
) -> None:
    # Some gateways answer 200 with an error envelope (even to a streaming request).
    envelope = {"error": {"message": "slow down", "type": "rate_limit_error", "code": None}}
    upstream.program(MODEL, Status(200, envelope), Status(200, envelope), Status(200, envelope))
    outcome = await call(stubs, streamed)
    assert (outcome.code, outcome.received) == (Code.RESOURCE_EXHAUSTED, 0)
    assert "slow down" in outcome.status.message
    assert outcome.status.reason == "RATE_LIMIT_ERROR"
    # The upstream answered 200 and may have billed the request: it is never sent again.
    assert chat_requests(upstream) == 1


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null"])
async def test_json_that_is_not_an_object_is_malformed(
    upstream: DevUpstream, stubs: Stubs, body: bytes
) -> None:
    upstream.program(MODEL, Status(200, body))
    outcome = await call(stubs, streamed=False)
    assert outcome.code is Code.INTERNAL
    assert outcome.status.reason == "MALFORMED_RESPONSE"
    assert "expected a JSON object" in outcome.status.message


@pytest.mark.parametrize("after", [0, 3])
async def test_malformed_sse_line_ends_the_stream(
    upstream: DevUpstream, stubs: Stubs, after: int
) -> None:
    upstream.program(MODEL, MalformedSse(after=after))
    outcome = await call(stubs, streamed=True)
    assert (outcome.code, outcome.received) == (Code.INTERNAL, after)
    assert outcome.status.reason == "MALFORMED_RESPONSE"
    assert "a stream event is not valid JSON" in outcome.status.message
    assert "{not json" in outcome.status.message
    assert chat_requests(upstream) == 1


# ------------------------------------------------------------------ errors inside a stream

STREAM_ERROR_TYPES = [
    ("rate_limit_error", "rate_limit_exceeded", Code.RESOURCE_EXHAUSTED),
    ("invalid_request_error", None, Code.INVALID_ARGUMENT),
    ("authentication_error", "invalid_api_key", Code.UNAUTHENTICATED),
    ("permission_error", None, Code.PERMISSION_DENIED),
    ("overloaded_error", None, Code.UNAVAILABLE),
    ("server_error", None, Code.INTERNAL),
]


@pytest.mark.parametrize("form", ["openai", "vercel", "event"])
@pytest.mark.parametrize(("type_", "code_", "expected"), STREAM_ERROR_TYPES)
async def test_error_object_mid_stream_ends_with_its_status(
    upstream: DevUpstream,
    stubs: Stubs,
    form: Any,
    type_: str,
    code_: str | None,
    expected: grpc.StatusCode,
) -> None:
    upstream.program(
        MODEL, StreamError(after=2, form=form, type=type_, code=code_, message="it broke")
    )
    outcome = await call(stubs, streamed=True)
    assert (outcome.code, outcome.received) == (expected, 2)
    status = outcome.status
    assert status.message == "upstream reported an error in the stream: it broke"
    assert status.reason == (code_ or type_).upper()
    assert status.info.metadata["type"] == type_
    assert "httpStatus" not in status.info.metadata
    assert status.request_id and status.request_id.startswith("req_")
    if expected is Code.RESOURCE_EXHAUSTED:
        assert status.one(error_details_pb2.QuotaFailure).violations[0].subject == code_
    # Errors are statuses, never messages, and nothing is retried after a message went out.
    assert chat_requests(upstream) == 1


@pytest.mark.parametrize("form", ["openai", "vercel", "event"])
async def test_error_event_before_the_first_message_is_final(
    upstream: DevUpstream, stubs: Stubs, form: Any
) -> None:
    # The upstream answered 200: it may have billed the request, so it is never sent again
    # (DESIGN.md "Retries"), even though an overload would be retried before a 200.
    upstream.program(MODEL, StreamError(after=0, form=form, type="overloaded_error"))
    outcome = await call(stubs, streamed=True)
    assert (outcome.code, outcome.received) == (Code.UNAVAILABLE, 0)
    assert outcome.status.reason == "OVERLOADED_ERROR"
    assert chat_requests(upstream) == 1


async def test_unretryable_error_event_before_the_first_message_is_final(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(MODEL, StreamError(after=0, form="event", type="invalid_request_error"))
    outcome = await call(stubs, streamed=True)
    assert (outcome.code, outcome.received) == (Code.INVALID_ARGUMENT, 0)
    assert chat_requests(upstream) == 1


@streamed_or_not
async def test_stream_error_fault_on_unary_maps_its_http_status(
    upstream: DevUpstream, stubs: Stubs, streamed: bool
) -> None:
    upstream.program(MODEL, StreamError(after=0, type="permission_error", message="no access"))
    outcome = await call(stubs, streamed)
    assert outcome.code is Code.PERMISSION_DENIED
    assert "no access" in outcome.status.message


# -------------------------------------------------------------------- cut, reset, redirect


@pytest.mark.parametrize("after", [1, 4])
async def test_stream_cut_before_done_is_unavailable_and_not_retried(
    upstream: DevUpstream, stubs: Stubs, after: int
) -> None:
    upstream.program(MODEL, CutStream(after=after), CutStream(after=after))
    outcome = await call(stubs, streamed=True)
    assert (outcome.code, outcome.received) == (Code.UNAVAILABLE, after)
    assert outcome.status.reason == "STREAM_INCOMPLETE"
    assert "before [DONE]" in outcome.status.message
    assert chat_requests(upstream) == 1


async def test_stream_cut_after_its_200_is_not_retried(upstream: DevUpstream, stubs: Stubs) -> None:
    # A cut after the 200 head, before any event: the upstream may have billed the request.
    upstream.program(MODEL, CutStream(after=0))
    outcome = await call(stubs, streamed=True)
    assert (outcome.code, outcome.received) == (Code.UNAVAILABLE, 0)
    assert outcome.status.reason == "STREAM_INCOMPLETE"
    assert chat_requests(upstream) == 1
    assert (await call(stubs, streamed=True)).code is Code.OK


async def test_unary_body_cut_is_unavailable_and_not_retried(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(MODEL, CutStream(after=0))
    outcome = await call(stubs, streamed=False)
    assert outcome.code is Code.UNAVAILABLE
    assert outcome.status.reason == "UPSTREAM_RESPONSE_INCOMPLETE"
    assert chat_requests(upstream) == 1


@streamed_or_not
async def test_reset_is_unavailable_after_every_attempt(
    upstream: DevUpstream, stubs: Stubs, streamed: bool
) -> None:
    upstream.program(MODEL, Reset(), Reset(), Reset())
    outcome = await call(stubs, streamed)
    assert (outcome.code, outcome.received) == (Code.UNAVAILABLE, 0)
    assert outcome.status.reason == "UPSTREAM_CONNECTION_RESET"
    assert outcome.status.info.domain == UPSTREAM_HOST
    assert chat_requests(upstream) == 3


@streamed_or_not
async def test_one_reset_is_retried_away(
    upstream: DevUpstream, stubs: Stubs, streamed: bool
) -> None:
    upstream.program(MODEL, Reset())
    outcome = await call(stubs, streamed)
    assert outcome.code is Code.OK
    assert chat_requests(upstream) == 2


async def test_connect_error_is_unavailable(upstream: DevUpstream) -> None:
    # A port that was free a moment ago: nothing listens there.
    probe = DevUpstream()
    await probe.start()
    port = probe.port
    await probe.stop()
    async with serving(upstream, upstream_url=f"http://127.0.0.1:{port}/v1") as stubs:
        outcome = await call(stubs, streamed=False)
    assert outcome.code is Code.UNAVAILABLE
    assert outcome.status.reason == "UPSTREAM_UNREACHABLE"


@pytest.fixture
async def elsewhere() -> AsyncIterator[DevUpstream]:
    """Another origin that a redirect may point at; it must never be contacted."""
    async with DevUpstream() as other:
        yield other


@streamed_or_not
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_another_origin_is_never_followed(
    upstream: DevUpstream, stubs: Stubs, elsewhere: DevUpstream, streamed: bool, status: int
) -> None:
    location = f"{elsewhere.url}/chat/completions?token=signed-secret"
    upstream.program(MODEL, Redirect(location, status))
    outcome = await call(stubs, streamed)
    assert (outcome.code, outcome.received) == (Code.INTERNAL, 0)
    status_ = outcome.status
    assert status_.reason == "UPSTREAM_REDIRECT"
    assert f"http://127.0.0.1:{elsewhere.port}" in status_.message
    for secret in ("signed-secret", "/chat/completions", DEV_KEY):
        assert secret not in status_.message
    assert elsewhere.requests == []
    assert chat_requests(upstream) == 1  # a configuration problem: no retry fixes it
    # The credential went where it was configured to go, and only there.
    assert upstream.requests[0].headers["authorization"] == f"Bearer {DEV_KEY}"


async def test_an_echoed_credential_never_reaches_the_caller(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    # DEV_KEY is too short for the key-shaped patterns; the bridge cuts out what it sent.
    echo = f"Incorrect API key provided: {DEV_KEY}. Check https://example.invalid?k={DEV_KEY}"
    upstream.program(MODEL, Status(401, {"error": {"message": echo, "type": "auth"}}))
    outcome = await call(stubs, streamed=False)
    assert outcome.code is Code.UNAUTHENTICATED
    assert DEV_KEY not in outcome.status.message
    assert "Incorrect API key provided: [redacted]." in outcome.status.message


# ----------------------------------------------------------------------------- huge


@pytest.fixture
async def small_limit(upstream: DevUpstream) -> AsyncIterator[Stubs]:
    async with serving(upstream, max_response_bytes=20_000) as stubs:
        yield stubs


async def test_huge_unary_response_is_refused_naming_the_limit(
    upstream: DevUpstream, small_limit: Stubs
) -> None:
    upstream.program(MODEL, Huge(100_000))
    outcome = await call(small_limit, streamed=False)
    assert outcome.code is Code.RESOURCE_EXHAUSTED
    assert outcome.status.reason == "RESPONSE_TOO_LARGE"
    assert "20000 bytes" in outcome.status.message
    assert "--max-response-bytes" in outcome.status.message
    assert chat_requests(upstream) == 1
    upstream.program(MODEL, Huge(10_000))  # under the limit: the same fault is fine
    assert (await call(small_limit, streamed=False)).code is Code.OK


def _completion_with_ints(count: int) -> bytes:
    """A chat completion carrying `count` small integers in a key no field models: 2 bytes
    each in JSON, 11 each as `google.protobuf.Value`s in extra_fields."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [],
        "x_ints": [1] * count,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def test_an_answer_that_expands_past_twice_the_limit_is_refused(
    upstream: DevUpstream, small_limit: Stubs
) -> None:
    # A body under --max-response-bytes (20,000) whose gRPC answer is over twice that: the
    # bridge's RESPONSE_TOO_LARGE naming both sizes, not grpc's bare error after an OK log.
    body = _completion_with_ints(9_000)
    assert len(body) < 20_000
    upstream.program(MODEL, Status(200, body))
    outcome = await call(small_limit, streamed=False)
    assert outcome.code is Code.RESOURCE_EXHAUSTED
    assert outcome.status.reason == "RESPONSE_TOO_LARGE"
    assert "its gRPC answer is" in outcome.status.message
    assert "40000 bytes" in outcome.status.message
    # A body small enough that no expansion can pass the limit is answered as it is.
    upstream.program(MODEL, Status(200, _completion_with_ints(3_000)))
    assert (await call(small_limit, streamed=False)).code is Code.OK


def _sse(*events: dict[str, Any], done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def _chunk(**fields: Any) -> dict[str, Any]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    return {**base, "choices": [], **fields}


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def _logged_codes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.__dict__["grpc_code"] for r in caplog.records if r.name == "bridge.access"]


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


async def test_a_chunk_that_expands_past_twice_the_limit_ends_the_stream(
    upstream: DevUpstream, small_limit: Stubs, access_log: pytest.LogCaptureFixture
) -> None:
    # An event under --max-response-bytes (20,000) whose gRPC message is over twice that:
    # the chunks before it arrive, then the bridge's RESPONSE_TOO_LARGE, logged as such,
    # instead of grpc's bare error to the caller and CANCELLED plus a traceback in the log.
    big = _chunk(x_ints=[1] * 9_000)
    assert len(json.dumps(big, separators=(",", ":"))) < 20_000
    hello = _chunk(choices=[{"index": 0, "delta": {"content": "hi"}}])
    events = _sse(hello, hello, big, hello)
    upstream.program(MODEL, Status(200, events, headers={"content-type": "text/event-stream"}))
    outcome = await call(small_limit, streamed=True)
    assert (outcome.code, outcome.received) == (Code.RESOURCE_EXHAUSTED, 2)
    assert outcome.status.reason == "RESPONSE_TOO_LARGE"
    assert "its gRPC answer is" in outcome.status.message
    assert "40000 bytes" in outcome.status.message
    assert outcome.status.request_id
    await wait_for(lambda: len(_logged_codes(access_log)) == 1)
    assert _logged_codes(access_log) == ["RESOURCE_EXHAUSTED"]
    _no_errors_logged(access_log)
    # Events small enough that no expansion can pass the limit are streamed as they are.
    small = _sse(hello, _chunk(x_ints=[1] * 3_000), hello)
    upstream.program(MODEL, Status(200, small, headers={"content-type": "text/event-stream"}))
    assert (await call(small_limit, streamed=True)) == Outcome(Code.OK, 3, None)


async def test_a_responses_event_that_expands_past_twice_the_limit_ends_the_stream(
    upstream: DevUpstream, small_limit: Stubs, access_log: pytest.LogCaptureFixture
) -> None:
    stub = responses_pb2_grpc.ResponsesServiceStub(small_limit.channel)
    request = stream_response_request_from_json({"model": MODEL, "input": "hi"})
    created = {"type": "response.created", "sequence_number": 0, "response": {"id": "r"}}
    delta = {
        "type": "response.output_text.delta",
        "sequence_number": 1,
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
    }
    completed = {"type": "response.completed", "sequence_number": 3, "response": {"id": "r"}}

    async def stream(*events: dict[str, Any]) -> tuple[grpc.StatusCode, int, RichStatus | None]:
        body = _sse(*events, done=False)
        upstream.program(MODEL, Status(200, body, headers={"content-type": "text/event-stream"}))
        received = 0
        try:
            async for _ in stub.StreamResponse(request, timeout=10):
                received += 1
        except grpc.aio.AioRpcError as error:
            return error.code(), received, richstatus.of_error(error)
        return Code.OK, received, None

    code, received, rich = await stream(created, delta, {**delta, "x_ints": [1] * 9_000}, completed)
    assert (code, received) == (Code.RESOURCE_EXHAUSTED, 2)
    assert rich is not None and rich.reason == "RESPONSE_TOO_LARGE"
    assert "its gRPC answer is" in rich.message
    assert "40000 bytes" in rich.message
    await wait_for(lambda: len(_logged_codes(access_log)) == 1)
    assert _logged_codes(access_log) == ["RESOURCE_EXHAUSTED"]
    _no_errors_logged(access_log)
    code, received, _ = await stream(created, {**delta, "x_ints": [1] * 3_000}, completed)
    assert (code, received) == (Code.OK, 3)


async def test_huge_unannounced_response_is_cut_off_at_the_limit(
    upstream: DevUpstream, small_limit: Stubs
) -> None:
    # No content-length: the bridge finds out by reading, stops at the limit and drops the
    # connection instead of reading (and buffering) the rest.
    upstream.program(MODEL, Huge(2_000_000, chunked=True))
    outcome = await call(small_limit, streamed=False)
    assert outcome.code is Code.RESOURCE_EXHAUSTED
    assert outcome.status.reason == "RESPONSE_TOO_LARGE"
    assert "exceeded the limit of 20000 bytes" in outcome.status.message
    await wait_for(lambda: upstream.active_responses == 0)


async def test_huge_stream_event_is_refused_naming_the_limit(
    upstream: DevUpstream, small_limit: Stubs
) -> None:
    upstream.program(MODEL, Huge(100_000))
    outcome = await call(small_limit, streamed=True)
    assert (outcome.code, outcome.received) == (Code.RESOURCE_EXHAUSTED, 1)
    assert outcome.status.reason == "RESPONSE_TOO_LARGE"
    assert "20000 bytes" in outcome.status.message
    assert "--max-response-bytes" in outcome.status.message
    await wait_for(lambda: upstream.active_responses == 0)


# ------------------------------------------------------------------------ deadlines


@streamed_or_not
async def test_caller_deadline_ends_a_hung_upstream_and_closes_it(
    upstream: DevUpstream, stubs: Stubs, streamed: bool
) -> None:
    upstream.program(MODEL, Hang())
    outcome = await call(stubs, streamed, timeout=0.5)
    assert outcome.code is Code.DEADLINE_EXCEEDED
    # The bridge dropped the upstream exchange instead of waiting on it.
    await wait_for(lambda: upstream.disconnects == 1 and upstream.active_responses == 0)
    assert chat_requests(upstream) == 1


async def test_caller_deadline_mid_stream_closes_the_upstream(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(MODEL, SlowStream(interval=0.05))
    outcome = await call(stubs, streamed=True, timeout=1.0, max_tokens=10_000)
    assert outcome.code is Code.DEADLINE_EXCEEDED
    assert outcome.received > 0
    await wait_for(lambda: upstream.disconnects == 1 and upstream.active_responses == 0)


async def test_backoff_that_cannot_fit_the_deadline_is_not_started(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    # The upstream asks for 30 s; the caller has 5 s. The bridge answers at once with the
    # upstream's status and its RetryInfo, so the caller can decide, instead of sleeping into
    # the deadline.
    busy = Status(503, headers={"retry-after": "30"})
    upstream.program(MODEL, busy, busy, busy)
    outcome = await call(stubs, streamed=False, timeout=5)
    assert outcome.code is Code.UNAVAILABLE
    assert outcome.status.retry_delay == 30.0
    assert chat_requests(upstream) == 1


async def test_retries_stop_at_the_caller_deadline(upstream: DevUpstream) -> None:
    # Every attempt times out after 0.3 s (a retryable failure) and ten attempts are allowed,
    # but the caller gives the call 2 s: the bridge stops trying when the deadline comes.
    upstream.program(MODEL, *[Hang()] * 10)
    async with serving(upstream, max_attempts=10, upstream_timeout=0.3) as stubs:
        outcome = await call(stubs, streamed=False, timeout=2.0)
        assert outcome.code is Code.DEADLINE_EXCEEDED
        await wait_for(lambda: upstream.active_responses == 0)
    assert 2 <= chat_requests(upstream) < 10
    assert upstream.disconnects == chat_requests(upstream)


@streamed_or_not
async def test_upstream_timeout_applies_without_a_caller_deadline(
    upstream: DevUpstream, streamed: bool
) -> None:
    upstream.program(MODEL, Hang(), Hang())
    async with serving(upstream, upstream_timeout=0.3, max_attempts=2) as stubs:
        outcome = await call(stubs, streamed)
        assert (outcome.code, outcome.received) == (Code.DEADLINE_EXCEEDED, 0)
        assert outcome.status.reason == "UPSTREAM_TIMEOUT"
        assert "read timeout" in outcome.status.message
        # A timeout is retried (DESIGN.md), and every timed-out exchange was closed.
        assert chat_requests(upstream) == 2
        await wait_for(lambda: upstream.disconnects == 2 and upstream.active_responses == 0)


async def test_upstream_timeout_bounds_a_whole_unary_answer(upstream: DevUpstream) -> None:
    # Every piece arrives well within the read timeout, the whole answer would take 3.2 s.
    upstream.program(MODEL, SlowBody(interval=0.02, pieces=4), SlowBody(interval=0.4, pieces=8))
    async with serving(upstream, upstream_timeout=1.0, max_attempts=1) as stubs:
        quick = await call(stubs, streamed=False)
        assert quick.code is Code.OK
        dribbled = await call(stubs, streamed=False)
    assert dribbled.code is Code.DEADLINE_EXCEEDED
    assert dribbled.status.reason == "UPSTREAM_TIMEOUT"
    assert "--upstream-timeout" in dribbled.status.message
    await wait_for(lambda: upstream.active_responses == 0)


async def test_upstream_timeout_is_the_longest_silence_in_a_stream(
    upstream: DevUpstream,
) -> None:
    # Margins wide enough for a loaded machine: 0.05 s between events against a 1 s bound.
    upstream.program(MODEL, SlowStream(interval=0.05), SlowStream(interval=3.0))
    async with serving(upstream, upstream_timeout=1.0) as stubs:
        steady = await call(stubs, streamed=True, max_tokens=8)
        assert steady.code is Code.OK  # 0.05 s between events, 0.4 s in all: fine
        silent = await call(stubs, streamed=True, max_tokens=8)
    assert silent.code is Code.DEADLINE_EXCEEDED
    assert silent.received == 1
    assert silent.status.reason == "UPSTREAM_TIMEOUT"
    await wait_for(lambda: upstream.active_responses == 0)


# ---------------------------------------------------------------------- cancellation


async def test_cancelled_stream_closes_the_upstream_response(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(MODEL, SlowStream(interval=0.05))
    stream = stubs.chat.StreamChatCompletion(stream_chat(max_tokens=10_000))
    async for _ in stream:
        break
    assert upstream.active_responses == 1
    stream.cancel()
    await wait_for(lambda: upstream.disconnects == 1 and upstream.active_responses == 0)
    assert await stream.code() is Code.CANCELLED


async def test_cancelled_unary_call_closes_the_upstream_request(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    upstream.program(MODEL, Hang())
    unary = stubs.chat.CreateChatCompletion(chat())
    await wait_for(lambda: upstream.active_responses == 1)
    unary.cancel()
    await wait_for(lambda: upstream.disconnects == 1 and upstream.active_responses == 0)


async def test_caller_disconnect_mid_stream_closes_the_upstream_response(
    upstream: DevUpstream, bridge: server.Bridge
) -> None:
    upstream.program(MODEL, SlowStream(interval=0.05))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}")
    stream = stubs_for(channel).chat.StreamChatCompletion(stream_chat(max_tokens=10_000))
    async for _ in stream:
        break
    await channel.close(grace=None)  # the caller's process goes away
    await wait_for(lambda: upstream.disconnects == 1 and upstream.active_responses == 0)


# ----------------------------------------------------------------------- caller input


def _embed(**fields: Any) -> embeddings_pb2.CreateEmbeddingsRequest:
    return embeddings_pb2.CreateEmbeddingsRequest(**fields)


BAD_MODEL_IDS = [
    "../secrets",
    "a/../../b",
    "./m",
    "m?x=1",
    "m#frag",
    "a//b",
    "/a",
    "a/",
    "ctl\x01",
    "tab\tm",
    "del\x7f",
    "a%2F..",
    "back\\slash",
]


@pytest.mark.parametrize("model", BAD_MODEL_IDS)
async def test_model_ids_that_could_escape_their_path_are_refused(
    upstream: DevUpstream, stubs: Stubs, model: str
) -> None:
    calls = [
        stubs.models.RetrieveModel(models_pb2.RetrieveModelRequest(model=model)),
        stubs.chat.CreateChatCompletion(chat(model)),
        stubs.embeddings.CreateEmbeddings(_embed(model=model, input_text="x")),
    ]
    for pending in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pending
        status = richstatus.of_error(caught.value)
        assert status.code is Code.INVALID_ARGUMENT
        assert status.reason == "INVALID_REQUEST"
        assert status.info.domain == "bridge"
        assert status.violations[0][0] == "model"
    outcome = await call(stubs, streamed=True, model=model)
    assert outcome.code is Code.INVALID_ARGUMENT
    assert upstream.requests == []


def _reasoning_both() -> Any:
    return chat(reasoning=chat_pb2.ReasoningConfig(effort="high", max_tokens=100))


INVALID_REQUESTS: list[tuple[str, Callable[[Stubs], Any], str]] = [
    ("no model", lambda s: s.chat.CreateChatCompletion(chat(model="")), "model"),
    (
        "no messages",
        lambda s: s.chat.CreateChatCompletion(chat_pb2.CreateChatCompletionRequest(model=MODEL)),
        "messages",
    ),
    (
        "message without role",
        lambda s: s.chat.CreateChatCompletion(
            chat_pb2.CreateChatCompletionRequest(
                model=MODEL, messages=[chat_pb2.ChatMessage(content_text="hi")]
            )
        ),
        "messages[0].role",
    ),
    (
        "reasoning effort and max_tokens",
        lambda s: s.chat.CreateChatCompletion(_reasoning_both()),
        "reasoning.max_tokens",
    ),
    ("temperature", lambda s: s.chat.CreateChatCompletion(chat(temperature=3.0)), "temperature"),
    ("top_logprobs", lambda s: s.chat.CreateChatCompletion(chat(top_logprobs=3)), "top_logprobs"),
    ("no input", lambda s: s.embeddings.CreateEmbeddings(_embed(model=MODEL)), "input"),
    (
        "empty input list",
        lambda s: s.embeddings.CreateEmbeddings(
            from_json_embeddings({"model": MODEL, "input": []})
        ),
        "input",
    ),
    (
        "empty token list",
        lambda s: s.embeddings.CreateEmbeddings(
            _embed(
                model=MODEL,
                input_token_lists=common_pb2.Int64ListList(
                    values=[common_pb2.Int64List(values=[1, 2]), common_pb2.Int64List()]
                ),
            )
        ),
        "input",
    ),
    (
        "encoding format",
        lambda s: s.embeddings.CreateEmbeddings(
            _embed(model=MODEL, input_text="x", encoding_format="base85")
        ),
        "encoding_format",
    ),
]


def from_json_embeddings(data: dict[str, Any]) -> embeddings_pb2.CreateEmbeddingsRequest:
    return from_json(embeddings_pb2.CreateEmbeddingsRequest, data)


@pytest.mark.parametrize(
    ("make", "field"),
    [(make, field) for _, make, field in INVALID_REQUESTS],
    ids=[name for name, _, _ in INVALID_REQUESTS],
)
async def test_invalid_input_is_refused_before_the_upstream(
    upstream: DevUpstream, stubs: Stubs, make: Callable[[Stubs], Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await make(stubs)
    status = richstatus.of_error(caught.value)
    assert status.code is Code.INVALID_ARGUMENT
    assert status.reason == "INVALID_REQUEST"
    assert [f for f, _ in status.violations] == [field]
    assert status.message.startswith(f"invalid request: {field}: ")
    assert upstream.requests == []


async def test_invalid_streamed_request_is_refused_before_the_upstream(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    request = stream_chat(reasoning=chat_pb2.ReasoningConfig(effort="low", max_tokens=10))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.chat.StreamChatCompletion(request):
            pass
    assert richstatus.of_error(caught.value).violations[0][0] == "reasoning.max_tokens"
    assert upstream.requests == []


@pytest.fixture
async def small_messages(upstream: DevUpstream) -> AsyncIterator[Stubs]:
    async with serving(upstream, max_message_bytes=4096) as stubs:
        yield stubs


@streamed_or_not
async def test_oversized_request_names_the_limit(
    upstream: DevUpstream, small_messages: Stubs, streamed: bool
) -> None:
    outcome = await call(small_messages, streamed, text="x" * 5000)
    assert outcome.code is Code.RESOURCE_EXHAUSTED
    status = outcome.status
    assert status.reason == "REQUEST_TOO_LARGE"
    assert status.info.domain == "bridge"
    assert status.info.metadata["limitName"] == "max_message_bytes"
    assert status.info.metadata["limit"] == "4096"
    assert int(status.info.metadata["actual"]) > 5000
    assert "--max-message-bytes" in status.message
    assert upstream.requests == []
    # A request under the limit goes through on the same bridge.
    assert (await call(small_messages, streamed, text="x" * 1000)).code is Code.OK


async def test_far_oversized_request_is_still_refused(
    upstream: DevUpstream, small_messages: Stubs
) -> None:
    # Beyond twice the limit grpc core refuses the message before the bridge sees it (its
    # status has no details, but it does give both sizes).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await small_messages.chat.CreateChatCompletion(chat(text="x" * 20_000))
    assert caught.value.code() is Code.RESOURCE_EXHAUSTED
    assert "8192" in (caught.value.details() or "")
    assert upstream.requests == []


# ------------------------------------------------------------------------- the fault suite


@dataclass(frozen=True)
class Case:
    """One kind of call in the suite: what the upstream does and what the caller must see."""

    name: str
    streamed: bool
    behaviors: tuple[Behavior, ...]
    expected: grpc.StatusCode
    timeout: float | None = None
    cancel_after: int | None = None
    """Cancel the stream after this many messages (the caller walks away)."""
    invalid: bool = False
    """Send a request the bridge must refuse itself."""
    embeddings: bool = False
    """Call CreateEmbeddings instead of chat."""


def _both(name: str, behaviors: tuple[Behavior, ...], code: grpc.StatusCode) -> list[Case]:
    return [
        Case(f"{name}/unary", False, behaviors, code),
        Case(f"{name}/stream", True, behaviors, code),
    ]


# The suite's bridge makes 2 attempts: one failure is retried away, two are final.
SUITE_CASES: list[Case] = [
    *_both("ok", (), Code.OK),
    *_both("503 then ok", (Status(503),), Code.OK),
    *_both("reset then ok", (Reset(),), Code.OK),
    *_both("400", (Status(400),), Code.INVALID_ARGUMENT),
    *_both("401", (Status(401),), Code.UNAUTHENTICATED),
    *_both(
        "429 twice", (Status(429, headers={"retry-after-ms": "5"}),) * 2, Code.RESOURCE_EXHAUSTED
    ),
    *_both("html 502 twice", (Html(502), Html(502)), Code.UNAVAILABLE),
    *_both("empty 500 twice", (Empty(500), Empty(500)), Code.INTERNAL),
    *_both("malformed json", (MalformedJson(),), Code.INTERNAL),
    *_both("wrong content type", (WrongContentType(),), Code.INTERNAL),
    *_both("reset twice", (Reset(), Reset()), Code.UNAVAILABLE),
    *_both("redirect", (Redirect("http://elsewhere.invalid/v1/chat/completions"),), Code.INTERNAL),
    *_both("huge", (Huge(200_000),), Code.RESOURCE_EXHAUSTED),
    Case("hang/unary", False, (Hang(),), Code.DEADLINE_EXCEEDED, timeout=2.0),
    Case("hang/stream", True, (Hang(),), Code.DEADLINE_EXCEEDED, timeout=2.0),
    Case("cut stream", True, (CutStream(after=2),), Code.UNAVAILABLE),
    Case("malformed sse", True, (MalformedSse(after=1),), Code.INTERNAL),
    Case(
        "openai error mid-stream",
        True,
        (StreamError(after=2, type="rate_limit_error"),),
        Code.RESOURCE_EXHAUSTED,
    ),
    Case(
        "vercel error mid-stream",
        True,
        (StreamError(after=2, form="vercel", type="invalid_request_error"),),
        Code.INVALID_ARGUMENT,
    ),
    Case(
        "event error mid-stream",
        True,
        (StreamError(after=2, form="event", type="overloaded_error"),),
        Code.UNAVAILABLE,
    ),
    Case(
        "slow stream past the deadline",
        True,
        (SlowStream(0.05),),
        Code.DEADLINE_EXCEEDED,
        timeout=2.0,
    ),
    Case("cancelled stream", True, (SlowStream(0.02),), Code.CANCELLED, cancel_after=2),
    Case("invalid input", False, (), Code.INVALID_ARGUMENT, invalid=True),
    Case("embeddings ok", False, (), Code.OK, embeddings=True),
    Case("embeddings 503 then ok", False, (Status(503),), Code.OK, embeddings=True),
    Case(
        "embeddings html 502 twice",
        False,
        (Html(502), Html(502)),
        Code.UNAVAILABLE,
        embeddings=True,
    ),
    Case("embeddings malformed", False, (MalformedJson(),), Code.INTERNAL, embeddings=True),
    Case("embeddings hang", False, (Hang(),), Code.DEADLINE_EXCEEDED, timeout=2.0, embeddings=True),
]
SUITE_SIZE = 200
SUITE_CALLERS = 4


async def _suite_call(stubs: Stubs, case: Case, model: str) -> grpc.StatusCode:
    if case.invalid:
        request = chat(model)
        request.ClearField("messages")
        try:
            await stubs.chat.CreateChatCompletion(request)
        except grpc.aio.AioRpcError as error:
            assert richstatus.of_error(error).violations[0][0] == "messages"
            return error.code()
        return Code.OK
    if case.embeddings:
        try:
            await stubs.embeddings.CreateEmbeddings(
                embeddings_pb2.CreateEmbeddingsRequest(model=model, input_text="suite"),
                timeout=case.timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not Code.DEADLINE_EXCEEDED:
                richstatus.of_error(error)  # the details are there and well formed
            return error.code()
        return Code.OK
    if case.cancel_after is not None:
        stream = stubs.chat.StreamChatCompletion(stream_chat(model, max_tokens=10_000))
        received = 0
        async for _ in stream:
            received += 1
            if received == case.cancel_after:
                stream.cancel()
                break
        return await stream.code()
    # A long reply where the deadline must cut it, a short one elsewhere.
    tokens = 10_000 if case.timeout is not None else 20
    outcome = await call(stubs, case.streamed, model, timeout=case.timeout, max_tokens=tokens)
    return outcome.code


def own_connection(address: str) -> grpc.aio.Channel:
    """A channel with its own connection: grpc shares one between channels to the same
    address unless told otherwise."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def test_many_concurrent_calls_against_a_failing_upstream(upstream: DevUpstream) -> None:
    config = bridge_config(
        upstream, max_attempts=2, max_response_bytes=50_000, upstream_timeout=30.0
    )
    running = await server.start(config)
    address = f"127.0.0.1:{running.port}"
    try:
        async with contextlib.AsyncExitStack() as exits:
            # Several callers, each with its own channel (connection), as several client
            # processes would be; each stays under the default --max-concurrent-streams.
            callers = [
                stubs_for(await exits.enter_async_context(own_connection(address)))
                for _ in range(SUITE_CALLERS)
            ]
            stubs = callers[0]
            health = health_pb2_grpc.HealthStub(stubs.channel)
            for caller in callers:
                assert (await call(caller, streamed=True)).code is Code.OK  # warm up
            await wait_for(lambda: upstream.active_responses == 0)
            tasks_before = len(asyncio.all_tasks())

            plan = [(SUITE_CASES[i % len(SUITE_CASES)], f"fault/{i}") for i in range(SUITE_SIZE)]
            random.Random(4).shuffle(plan)
            for case, model in plan:
                upstream.program(model, *case.behaviors)
            codes = await asyncio.gather(
                *(
                    _suite_call(callers[i % SUITE_CALLERS], case, model)
                    for i, (case, model) in enumerate(plan)
                )
            )
            wrong = [
                (case.name, model, code.name)
                for (case, model), code in zip(plan, codes, strict=True)
                if code is not case.expected
            ]
            assert wrong == []

            # Still healthy, and still serving.
            check = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            assert (await call(stubs, streamed=False)).code is Code.OK
            assert (await call(stubs, streamed=True)).code is Code.OK

            # Nothing leaks: no upstream response is still open, every connection the
            # upstream sees open is one the bridge's pool holds idle for reuse, and the
            # event loop is back to the tasks it had before.
            await wait_for(lambda: upstream.active_responses == 0)
            await wait_for(lambda: running.upstream.pool_stats()[1] == 0)
            await wait_for(lambda: upstream.open_connections <= running.upstream.pool_stats()[0])
            await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before)
            # Every call reached the upstream as planned, except that a caller's deadline may
            # run out before the bridge got to send its request (a loaded machine).
            timed = {model for case, model in plan if case.timeout is not None}
            left = {model for model, queue in upstream._programs.items() if queue}
            assert left <= timed
    finally:
        await running.stop(0)
    await wait_for(lambda: upstream.open_connections == 0)
