"""Metrics, access logs and traces, observed the way an operator does.

Every test starts the real bridge and the development upstream on loopback, calls the bridge
through a real gRPC channel, then reads what an operator would read: the Prometheus text
scraped over HTTP from --metrics-listen, the log lines, the spans an OpenTelemetry SDK
exporter receives, the headers the upstream received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from aigateway.v1 import chat_pb2, models_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import ConfigError
from bridge.server import assembly as server
from bridge.telemetry import logs, observability, tracing
from bridge.telemetry.metrics import BoundedLabel
from dev.upstream.faults import Hang, Status
from dev.upstream.server import DevUpstream
from tests.conftest import DEV_KEY, Stubs, bridge_config, stubs_for, wait_for

MODEL = "openai/gpt-4o-mini"
SECRET_PROMPT = "the launch code is swordfish-4411"
CALLER_KEY = "sk-caller-own-key-7f3a9c"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
TRACESTATE = "vendor=opaque-value"


def chat_request(text: str = "hello", model: str = MODEL) -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content_text=text)]
    )


def stream_request(text: str = "hello") -> chat_pb2.StreamChatCompletionRequest:
    return chat_pb2.StreamChatCompletionRequest(
        model=MODEL,
        messages=[chat_pb2.ChatMessage(role="user", content_text=text)],
        stream_options=chat_pb2.StreamOptions(include_usage=True),
    )


class Scrape:
    """One scrape of /metrics, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples.append((sample.name, dict(sample.labels), sample.value))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            v
            for n, sample_labels, v in self.samples
            if n == name and all(sample_labels.get(k) == w for k, w in labels.items())
        )

    def label_values(self) -> set[str]:
        return {v for _, labels, _ in self.samples for v in labels.values()}


async def scrape(port: int) -> Scrape:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def scrape_until(port: int, condition: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until `condition` holds (bounded: a hang fails the test, no timing is asserted).

    grpc sends an aborted call's status before the servicer's task resumes, so the caller
    can see it a moment before the bridge has counted the call.
    """
    for _ in range(500):
        scraped = await scrape(port)
        if condition(scraped):
            return scraped
        await asyncio.sleep(0.01)
    return scraped


@pytest.fixture
async def observed(upstream: DevUpstream) -> AsyncIterator[tuple[server.Bridge, Stubs]]:
    running = await server.start(bridge_config(upstream, metrics_listen="127.0.0.1:0"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, stubs_for(channel)
    finally:
        await running.stop(0)


def metrics_port(bridge: server.Bridge) -> int:
    assert bridge.observability is not None
    assert bridge.observability.metrics_server is not None
    return bridge.observability.metrics_server.port


# ------------------------------------------------------------------------------ metrics


async def test_metrics_count_calls_upstream_retries_tokens_and_streams(
    observed: tuple[server.Bridge, Stubs], upstream: DevUpstream
) -> None:
    bridge, stubs = observed
    port = metrics_port(bridge)
    before = await scrape(port)
    assert before.value("bridge_grpc_server_handled_total") == 0

    # A unary chat that succeeds at once, and one that succeeds after a 503 (one retry).
    first = await stubs.chat.CreateChatCompletion(chat_request("one"))
    upstream.program(MODEL, Status(503))
    second = await stubs.chat.CreateChatCompletion(chat_request("two two"))
    # A failure that is not retried: 404 for an unknown model.
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stubs.models.RetrieveModel(models_pb2.RetrieveModelRequest(model="no/such-model"))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    # A stream with a final usage chunk.
    chunks = [c async for c in stubs.chat.StreamChatCompletion(stream_request("three"))]
    stream_usage = [c.usage for c in chunks if c.HasField("usage")]
    assert len(stream_usage) == 1
    # A call the bridge refuses itself, before any upstream request.
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stubs.chat.CreateChatCompletion(chat_pb2.CreateChatCompletionRequest(model=MODEL))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # An aborted call's status reaches the caller before the server has finished with it.
    after = await scrape_until(port, lambda s: s.value("bridge_grpc_server_handled_total") == 5)
    handled = "bridge_grpc_server_handled_total"
    chat = {"grpc_service": "aigateway.v1.ChatService"}
    assert after.value(handled, grpc_method="CreateChatCompletion", grpc_code="OK", **chat) == 2
    assert (
        after.value(handled, grpc_method="CreateChatCompletion", grpc_code="INVALID_ARGUMENT") == 1
    )
    assert after.value(handled, grpc_method="RetrieveModel", grpc_code="NOT_FOUND") == 1
    assert (
        after.value(
            handled, grpc_method="StreamChatCompletion", grpc_type="server_stream", grpc_code="OK"
        )
        == 1
    )
    seconds = "bridge_grpc_server_handling_seconds_count"
    assert after.value(seconds, grpc_method="CreateChatCompletion", grpc_type="unary") == 3
    assert after.value("bridge_grpc_server_in_flight") == 0
    assert after.value("bridge_grpc_server_first_message_seconds_count") == 1

    # Upstream: every attempt, by route template and HTTP status; one retry.
    requests = "bridge_upstream_requests_total"
    route = {"method": "POST", "route": "/chat/completions"}
    assert after.value(requests, status="503", **route) == 1
    assert after.value(requests, status="200", **route) == 3  # two unary, one stream
    assert after.value(requests, route="/models/{model}", status="404") == 1
    assert after.value("bridge_upstream_retries_total", **route) == 1
    assert after.value("bridge_upstream_request_seconds_count", **route) == 4
    assert after.value("bridge_upstream_request_seconds_count") == sum(
        1 for r in upstream.requests if r.path.startswith("/v1/")
    )

    # Tokens: exactly what the responses' usage said, by the model the upstream named.
    usages = [first.usage, second.usage, *stream_usage]
    for kind in ("prompt", "completion", "total"):
        expected = sum(getattr(u, f"{kind}_tokens") for u in usages)
        assert expected > 0
        assert after.value("bridge_tokens_total", model=first.model, kind=kind) == expected

    # Labels are bounded and carry no secret, id or content.
    values = after.label_values()
    assert "no/such-model" not in values
    assert not any(DEV_KEY in v or "three" in v or v.startswith("req_") for v in values)
    assert DEV_KEY not in after.text


async def test_running_usage_totals_in_every_chunk_are_counted_once(
    observed: tuple[server.Bridge, Stubs], upstream: DevUpstream
) -> None:
    """vLLM's continuous_usage_stats: each chunk carries the total so far; the last counts."""
    events = []
    for completion, piece in enumerate(["a", "b", "c"], 1):
        events.append(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "vllm/served-model",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": completion,
                    "total_tokens": 5 + completion,
                },
            }
        )
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    upstream.program(MODEL, Status(200, body, headers={"content-type": "text/event-stream"}))
    bridge, stubs = observed
    chunks = [c async for c in stubs.chat.StreamChatCompletion(stream_request())]
    assert [c.usage.total_tokens for c in chunks] == [6, 7, 8]
    scraped = await scrape(metrics_port(bridge))
    tokens = "bridge_tokens_total"
    assert scraped.value(tokens, model="vllm/served-model", kind="prompt") == 5
    assert scraped.value(tokens, model="vllm/served-model", kind="completion") == 3
    assert scraped.value(tokens, model="vllm/served-model", kind="total") == 8


async def test_in_flight_stream_and_cancellation_are_counted(
    observed: tuple[server.Bridge, Stubs], upstream: DevUpstream
) -> None:
    bridge, stubs = observed
    port = metrics_port(bridge)
    upstream.program(MODEL, Hang())
    call = stubs.chat.StreamChatCompletion(stream_request())
    await wait_for(lambda: upstream.active_responses == 1)
    during = await scrape(port)
    gauge = "bridge_grpc_server_in_flight"
    assert during.value(gauge, grpc_method="StreamChatCompletion", grpc_type="server_stream") == 1

    call.cancel()
    await wait_for(lambda: upstream.disconnects == 1)
    handled = "bridge_grpc_server_handled_total"
    for _ in range(200):
        after = await scrape(port)
        if after.value(handled, grpc_code="CANCELLED") == 1:
            break
        await asyncio.sleep(0.02)
    assert after.value(handled, grpc_method="StreamChatCompletion", grpc_code="CANCELLED") == 1
    assert after.value(gauge) == 0
    # The upstream request that never got its headers is counted, not as a status code.
    assert after.value("bridge_upstream_requests_total", status="cancelled") == 1


async def test_calls_refused_by_the_access_rules_are_counted_and_logged_without_tokens(
    upstream: DevUpstream, json_log: tuple[io.StringIO, list[str]]
) -> None:
    buffer, _ = json_log
    token = "bridge-access-token-5d1e"
    config = bridge_config(
        upstream,
        metrics_listen="127.0.0.1:0",
        access_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
    )
    running = await server.start(config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs.chat.CreateChatCompletion(
                    chat_request(), metadata=(("x-bridge-token", "not-" + token),)
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stubs.chat.CreateChatCompletion(
                chat_request(), metadata=(("x-bridge-token", token),)
            )
        scraped = await scrape_until(
            metrics_port(running), lambda s: s.value("bridge_grpc_server_handled_total") == 2
        )
    finally:
        await running.stop(0)
    handled = "bridge_grpc_server_handled_total"
    assert scraped.value(handled, grpc_code="UNAUTHENTICATED") == 1
    assert scraped.value(handled, grpc_code="OK", grpc_method="CreateChatCompletion") == 1
    assert scraped.value("bridge_upstream_requests_total") == len(upstream.requests) == 1
    codes = [line["grpc_code"] for line in access_lines(buffer.getvalue())]
    assert sorted(codes) == ["OK", "UNAUTHENTICATED"]
    assert token not in buffer.getvalue() and token not in scraped.text


async def test_metrics_endpoint_answers_only_metrics(
    observed: tuple[server.Bridge, Stubs],
) -> None:
    bridge, _ = observed
    async with httpx.AsyncClient() as client:
        missing = await client.get(f"http://127.0.0.1:{metrics_port(bridge)}/other")
        posted = await client.post(f"http://127.0.0.1:{metrics_port(bridge)}/metrics")
    assert missing.status_code == 404
    assert posted.status_code == 405


async def test_metrics_are_off_unless_asked_for(bridge: server.Bridge) -> None:
    assert bridge.observability is not None
    assert bridge.observability.metrics is None
    assert bridge.observability.metrics_server is None


async def test_a_taken_metrics_port_is_named_in_the_error(upstream: DevUpstream) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError, match=f"could not bind --metrics-listen {address}"):
            await server.start(bridge_config(upstream, metrics_listen=address))


def test_model_label_admits_a_bounded_number_of_models() -> None:
    label = BoundedLabel(limit=2)
    assert [label("a/one"), label("b/two"), label("c/three"), label("a/one")] == [
        "a/one",
        "b/two",
        "other",
        "a/one",
    ]
    assert label("x" * 500) == "other"
    assert label("bad\nname") == "other"
    assert label(None) == "unknown"


def test_routes_are_templates() -> None:
    assert observability.route_of("/v1/models/openai/gpt-4o", "/v1") == "/models/{model}"
    assert observability.route_of("/v1/chat/completions", "/v1") == "/chat/completions"
    assert observability.route_of("/v1/anything/else", "/v1") == "other"


# ------------------------------------------------------------------------------ logs


@pytest.fixture
def json_log() -> Iterator[tuple[io.StringIO, list[str]]]:
    """The bridge's JSON log setup writing to a buffer, with the test's secrets masked."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    secrets = [DEV_KEY]
    handler = logs.configure("DEBUG", "json", secrets=secrets, stream=buffer)
    try:
        yield buffer, secrets
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def access_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [line for line in lines if line["logger"] == "bridge.access"]


async def test_json_access_log_names_the_call_and_never_secrets_or_content(
    upstream: DevUpstream, json_log: tuple[io.StringIO, list[str]]
) -> None:
    buffer, _ = json_log
    config = bridge_config(upstream)
    # The secrets the real command would mask come from the configuration itself.
    assert DEV_KEY in logs.secrets_of(config)
    running = await server.start(config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            call = stubs.chat.CreateChatCompletion(
                chat_request(SECRET_PROMPT), metadata=(("x-request-id", "caller-req-42"),)
            )
            await call
            upstream_id = dict(await call.initial_metadata())["x-request-id"]
            with pytest.raises(grpc.aio.AioRpcError):
                await stubs.chat.CreateChatCompletion(
                    chat_request(SECRET_PROMPT, model="no/such-model"),
                    metadata=(("authorization", f"Bearer {CALLER_KEY}"),),
                )
            await wait_for(lambda: len(access_lines(buffer.getvalue())) == 2)
    finally:
        await running.stop(0)

    text = buffer.getvalue()
    ok, failed = access_lines(text)
    assert ok["grpc_method"] == "aigateway.v1.ChatService/CreateChatCompletion"
    assert ok["grpc_code"] == "OK"
    assert ok["duration_ms"] >= 0
    assert ok["model"] == MODEL
    assert ok["request_id"] == "caller-req-42"
    assert ok["upstream_request_id"] == upstream_id
    assert ok["upstream_status"] == 200
    assert ok["upstream_attempts"] == 1
    assert ok["total_tokens"] > 0
    # The caller's own key is not one the upstream knows.
    assert failed["grpc_code"] == "UNAUTHENTICATED"
    assert failed["upstream_status"] == 401
    assert failed["model"] == "no/such-model"
    # The upstream did receive the secrets; the log has none of them, nor the prompt.
    assert any(r.headers.get("authorization") == f"Bearer {CALLER_KEY}" for r in upstream.requests)
    for secret in (DEV_KEY, CALLER_KEY, "swordfish"):
        assert secret not in text


def test_formatters_mask_configured_secrets_and_bearer_tokens() -> None:
    buffer = io.StringIO()
    handler = logs.configure("INFO", "text", secrets=["sk-configured-123"], stream=buffer)
    try:
        logging.getLogger("test").warning(
            "leak %s", "sk-configured-123", extra={"header": "Bearer abc.def-ghi"}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    line = buffer.getvalue()
    assert "sk-configured-123" not in line and "abc.def-ghi" not in line
    assert "leak ***" in line and "header=" in line


ACCESS_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO bridge\.access: grpc call ")
FORGED = (
    "2026-01-01T00:00:00.000Z INFO bridge.access: grpc call "
    "grpc_method=aigateway.v1.ChatService/CreateChatCompletion grpc_code=OK"
)
# Each of these ends a line in some log reader, terminal or collector.
BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1b[2K\r"]


@pytest.fixture(params=["text", "json"])
def any_log(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    """The bridge's log setup in each format, writing to a buffer."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("INFO", request.param, secrets=[DEV_KEY], stream=buffer)
    try:
        yield request.param, buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def logged_access(fmt: str, text: str) -> list[str]:
    """The access records in `text`: each must be exactly one line of its format."""
    lines = [line for line in text.split("\n") if line]
    if fmt == "json":
        return [line for line in lines if json.loads(line)["logger"] == "bridge.access"]
    return [line for line in lines if ACCESS_LINE.match(line)]


async def test_caller_chosen_text_cannot_forge_a_log_line(
    upstream: DevUpstream, any_log: tuple[str, io.StringIO]
) -> None:
    fmt, buffer = any_log
    token = "bridge-access-token-0c9a"
    running = await server.start(
        bridge_config(upstream, access_token_sha256=hashlib.sha256(token.encode()).hexdigest())
    )
    calls = 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            for brk in BREAKS:
                # Admitted: the model id is logged (whether validation refuses it or not).
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stubs.chat.CreateChatCompletion(
                        chat_request(model=f"x{brk}{FORGED}"), metadata=(("x-bridge-token", token),)
                    )
                # Refused by the access rules: logged, without the model (never parsed).
                with pytest.raises(grpc.aio.AioRpcError):
                    await stubs.chat.CreateChatCompletion(chat_request(model=f"x{brk}{FORGED}"))
                calls += 2
            await wait_for(lambda: len(logged_access(fmt, buffer.getvalue())) >= calls)
    finally:
        await running.stop(0)
    text = buffer.getvalue()
    assert len(logged_access(fmt, text)) == calls, text
    assert text.count("UNAUTHENTICATED") == len(BREAKS)
    # Every line is a record of its own: none starts with the forged text.
    assert not [line for line in text.split("\n") if line.startswith(FORGED)]
    for brk in ("\r", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1b"):
        assert brk not in text
    if fmt == "json":
        models = [json.loads(line).get("model") for line in logged_access(fmt, text)]
        assert f"x\u2028{FORGED}" in models  # JSON keeps the value exact, escaped
    else:
        assert f'model="x\\u2028{FORGED}"' in text and f'model="x\\n{FORGED}"' in text


async def test_long_fields_are_bounded_in_logs_and_spans(
    observed: tuple[server.Bridge, Stubs],
    any_log: tuple[str, io.StringIO],
    spans: InMemorySpanExporter,
) -> None:
    fmt, buffer = any_log
    _, stubs = observed
    spans.clear()
    model = "m" * (1 << 20)
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.chat.CreateChatCompletion(
            chat_request(model=model), metadata=(("x-request-id", "q" * 4000),)
        )
    # (the request id is cut to 128 characters where it is read:
    # bridge.interceptors.observation.clean_id)
    await wait_for(lambda: bool(logged_access(fmt, buffer.getvalue())))
    (line,) = logged_access(fmt, buffer.getvalue())
    assert len(line) < 2000
    cut = f"...({len(model) - logs.FIELD_LIMIT} more)"
    assert "m" * logs.FIELD_LIMIT + cut in line
    await wait_for(lambda: any(s.kind == trace.SpanKind.SERVER for s in spans.get_finished_spans()))
    span = next(s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER)
    assert span.attributes is not None
    assert span.attributes["aigateway.model"] == "m" * logs.FIELD_LIMIT + cut


def test_formatters_escape_and_bound_every_field_and_traceback() -> None:
    for fmt in ("text", "json"):
        buffer = io.StringIO()
        handler = logs.configure("INFO", fmt, stream=buffer)
        try:
            try:
                raise ValueError(f"bad\n{FORGED}")
            except ValueError:
                logging.getLogger("test").exception(
                    "message\u2028%s", FORGED, extra={"field\n": "v\x85" * 1000}
                )
        finally:
            logging.getLogger().removeHandler(handler)
        text = buffer.getvalue()
        assert not [line for line in text.split("\n") if line.startswith(FORGED)], text
        assert "\u2028" not in text and "\x85" not in text
        if fmt == "json":
            (record,) = [json.loads(line) for line in text.splitlines()]
            assert record["field\n"] == "v\x85" * 128 + "...(1744 more)"
            assert record["exception"].endswith(f"ValueError: bad\n{FORGED}")
        else:
            first, *rest = text.rstrip("\n").split("\n")
            assert 'field\\n="v\\u0085v' in first and "...(1744 more)" in first
            assert rest and all(line.startswith("  | ") for line in rest)


# ------------------------------------------------------------------------------ traces


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter behind the process's global tracer provider.

    The global provider can be set once per process; the bridge's default (`--trace-exporter
    none`) uses it, exactly as under opentelemetry-instrument. Shut down afterwards, so the
    tests of other modules do not fill it.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set a global provider"
    yield exporter
    provider.shutdown()


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


async def test_spans_continue_the_callers_trace_and_reach_the_upstream(
    observed: tuple[server.Bridge, Stubs], upstream: DevUpstream, spans: InMemorySpanExporter
) -> None:
    _, stubs = observed
    spans.clear()
    upstream.program(MODEL, Status(503))
    metadata = (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))
    await stubs.chat.CreateChatCompletion(chat_request(), metadata=metadata)
    chunks = [c async for c in stubs.chat.StreamChatCompletion(stream_request(), metadata=metadata)]
    assert chunks

    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    clients = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    assert [s.name for s in servers] == [
        "aigateway.v1.ChatService/CreateChatCompletion",
        "aigateway.v1.ChatService/StreamChatCompletion",
    ]
    for span in servers:
        assert _hex(span.context.trace_id, 32) == TRACE_ID
        assert span.parent is not None and _hex(span.parent.span_id, 16) == CALLER_SPAN
        assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 0
    # One client span per attempt: 503, then 200, then the stream's 200.
    assert [s.attributes["http.response.status_code"] for s in clients] == [503, 200, 200]  # type: ignore[index]
    assert [s.parent.span_id for s in clients] == [  # type: ignore[union-attr]
        servers[0].context.span_id,
        servers[0].context.span_id,
        servers[1].context.span_id,
    ]
    assert clients[1].attributes["http.request.resend_count"] == 1  # type: ignore[index]
    # The upstream saw each attempt's own span as its parent, in the caller's trace.
    received = [r.headers.get("traceparent") for r in upstream.requests if r.method == "POST"]
    assert received == [f"00-{TRACE_ID}-{_hex(s.context.span_id, 16)}-01" for s in clients]
    assert all(r.headers.get("tracestate") == TRACESTATE for r in upstream.requests)


async def test_failed_call_marks_server_span(
    observed: tuple[server.Bridge, Stubs], upstream: DevUpstream, spans: InMemorySpanExporter
) -> None:
    _, stubs = observed
    spans.clear()
    upstream.program(MODEL, Status(500), Status(500), Status(500))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stubs.chat.CreateChatCompletion(chat_request())
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    await wait_for(lambda: any(s.kind == trace.SpanKind.SERVER for s in spans.get_finished_spans()))
    finished = spans.get_finished_spans()
    server_span = next(s for s in finished if s.kind == trace.SpanKind.SERVER)
    assert server_span.status.status_code == trace.StatusCode.ERROR
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    # A new trace started here (the caller sent none) still reaches the upstream.
    assert all(r.headers.get("traceparent", "").startswith("00-") for r in upstream.requests)


async def test_without_opentelemetry_the_callers_trace_context_is_forwarded_as_is(
    upstream: DevUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "AVAILABLE", False)
    running = await server.start(bridge_config(upstream))
    try:
        assert running.observability is not None and running.observability.tracer is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            metadata = (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))
            await stubs_for(channel).chat.CreateChatCompletion(chat_request(), metadata=metadata)
    finally:
        await running.stop(0)
    (request,) = upstream.requests
    assert request.headers["traceparent"] == TRACEPARENT
    assert request.headers["tracestate"] == TRACESTATE


async def test_without_a_tracer_provider_no_spans_are_made_and_the_context_passes_as_is(
    observed: tuple[server.Bridge, Stubs],
    upstream: DevUpstream,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenTelemetry installed but nothing set up (the image's default): no span work."""
    _, stubs = observed
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    spans.clear()
    metadata = (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))
    await stubs.chat.CreateChatCompletion(chat_request(), metadata=metadata)
    assert spans.get_finished_spans() == ()
    (request,) = upstream.requests
    assert request.headers["traceparent"] == TRACEPARENT
    assert request.headers["tracestate"] == TRACESTATE


async def test_console_exporter_prints_the_bridges_own_spans(
    upstream: DevUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trace-exporter console: the bridge's own SDK provider, flushed when it stops."""
    running = await server.start(bridge_config(upstream, trace_exporter="console"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            metadata = (("traceparent", TRACEPARENT),)
            await stubs_for(channel).chat.CreateChatCompletion(chat_request(), metadata=metadata)
    finally:
        await running.stop(0)
    printed = capsys.readouterr().out
    decoder = json.JSONDecoder()
    exported: list[dict[str, Any]] = []
    index = 0
    while (start := printed.find("{", index)) != -1:
        span, index = decoder.raw_decode(printed, start)
        exported.append(span)
    names = {span["name"]: span for span in exported}
    server_span = names["aigateway.v1.ChatService/CreateChatCompletion"]
    client_span = names["POST /chat/completions"]
    assert server_span["context"]["trace_id"] == "0x" + TRACE_ID
    assert server_span["parent_id"] == "0x" + CALLER_SPAN
    assert client_span["parent_id"] == server_span["context"]["span_id"]
    assert server_span["resource"]["attributes"]["service.name"] == "aigateway-bridge"


async def test_otlp_exporter_without_its_package_is_a_clear_configuration_error(
    upstream: DevUpstream,
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    try:
        importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed here")
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
        await server.start(bridge_config(upstream, trace_exporter="otlp"))


def test_unknown_trace_exporter_and_log_format_are_refused(upstream: DevUpstream) -> None:
    with pytest.raises(ConfigError, match="--trace-exporter"):
        bridge_config(upstream, trace_exporter="jaeger")
    with pytest.raises(ConfigError, match="--log-format"):
        bridge_config(upstream, log_format="xml")
    with pytest.raises(ConfigError, match="--metrics-listen"):
        bridge_config(upstream, metrics_listen="9464")


# ------------------------------------------------------------------------------ the command


@pytest.mark.slow
async def test_serve_command_logs_json_and_serves_metrics(upstream: DevUpstream) -> None:
    """`python -m bridge serve` as a container runs it: JSON logs on stderr, /metrics."""
    env = {
        **os.environ,
        "AI_GATEWAY_API_KEY": DEV_KEY,
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_METRICS_LISTEN": "127.0.0.1:0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--listen", "127.0.0.1:0",
        "--upstream", upstream.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        found = _find(process.stdout, rb"listening on 127\.0\.0\.1:(\d+)")
        listen = int(await asyncio.wait_for(found, 30))
        metrics_line = await asyncio.wait_for(_find(process.stderr, rb'"metrics_url"'), 30)
        metrics_url = json.loads(metrics_line)["metrics_url"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{listen}") as channel:
            await stubs_for(channel).chat.CreateChatCompletion(
                chat_request(SECRET_PROMPT), metadata=(("x-request-id", "from-the-caller"),)
            )
        async with httpx.AsyncClient() as client:
            scraped = Scrape((await client.get(metrics_url)).text)
        assert (
            scraped.value(
                "bridge_grpc_server_handled_total",
                grpc_method="CreateChatCompletion",
                grpc_code="OK",
            )
            == 1
        )
        access = json.loads(await asyncio.wait_for(_find(process.stderr, rb'"bridge.access"'), 30))
        assert access["request_id"] == "from-the-caller" and access["grpc_code"] == "OK"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.communicate(), 30)
    output = b"".join(rest)
    assert DEV_KEY.encode() not in output and b"swordfish" not in output
    assert process.returncode == 0


async def _find(stream: asyncio.StreamReader, pattern: bytes) -> bytes:
    """Read lines until one matches; returns the first group, or the line without one."""
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"the process ended before printing {pattern!r}")
        match = re.search(pattern, line)
        if match:
            return match.group(1) if match.groups() else line


@pytest.mark.slow
async def test_workers_share_one_metrics_port_and_sum_their_counts(upstream: DevUpstream) -> None:
    """With --workers 2, a scrape answered by either worker counts the calls of both."""
    env = {**os.environ, "AI_GATEWAY_API_KEY": DEV_KEY, "BRIDGE_LOG_FORMAT": "json"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--workers", "2",
        "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        "--upstream", upstream.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        # The supervisor names the shared port; each worker says when it is serving.
        lines = await asyncio.wait_for(
            _lines(
                process.stdout,
                [rb"workers on 127\.0\.0\.1:(\d+)", rb"listening on", rb"listening on"],
            ),
            60,
        )
        listen = int(lines[0])
        urls = set()
        for _ in range(2):  # both workers report the one shared URL
            line = await asyncio.wait_for(_find(process.stderr, rb'"metrics_url"'), 60)
            urls.add(json.loads(line)["metrics_url"])
        (metrics_url,) = urls
        # A new channel is a new connection, which the kernel hands to either worker.
        served_by: dict[str, int] = {}
        calls = 0
        while len(served_by) < 2 and calls < 60:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{listen}") as channel:
                call = stubs_for(channel).models.ListModels(models_pb2.ListModelsRequest())
                await call
                worker = dict(await call.trailing_metadata()).get("x-bridge-worker", "?")
            served_by[str(worker)] = served_by.get(str(worker), 0) + 1
            calls += 1
        assert len(served_by) == 2, f"one worker served all {calls} calls: {served_by}"
        async with httpx.AsyncClient() as client:
            for _ in range(4):  # each scrape is a new connection, to either worker
                scraped = Scrape(
                    (await client.get(metrics_url, headers={"connection": "close"})).text
                )
                assert (
                    scraped.value("bridge_grpc_server_handled_total", grpc_method="ListModels")
                    == calls
                )
                assert scraped.value("bridge_grpc_server_in_flight") == 0
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0


async def _lines(stream: asyncio.StreamReader, patterns: list[bytes]) -> list[bytes]:
    """Read lines until each pattern matched a line of its own, in any order; returns the
    first group (or the line) for each pattern."""
    found: list[bytes | None] = [None] * len(patterns)
    while None in found:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"the process ended before printing {patterns!r}")
        for i, pattern in enumerate(patterns):
            match = re.search(pattern, line)
            if found[i] is None and match:
                found[i] = match.group(1) if match.groups() else line
                break
    return [f for f in found if f is not None]
