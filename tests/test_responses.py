"""ResponsesService end to end: a real bridge and development upstream on loopback.

Unary and streamed responses, tool calls, reasoning, an incomplete response; a failed
response, an error event and a stream without a terminal event end the call with a status;
errors map and retry as chat does; cancellation reaches the upstream; health and reflection
know the service.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aigateway.v1 import responses_pb2, responses_pb2_grpc
from aigateway_json import (
    response_request_from_json,
    stream_response_request_from_json,
    to_json,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bridge.server import assembly as server
from dev.upstream import responses as devresponses
from dev.upstream.faults import CutStream, SlowStream, Status, StreamError
from dev.upstream.server import DevUpstream
from tests import richstatus
from tests.conftest import wait_for

MODEL = "openai/gpt-4o-mini"
SSE = {"content-type": "text/event-stream"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def responses(
    bridge: server.Bridge,
) -> AsyncIterator[responses_pb2_grpc.ResponsesServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield responses_pb2_grpc.ResponsesServiceStub(channel)


Stub = responses_pb2_grpc.ResponsesServiceStub


def _request(**fields: Any) -> responses_pb2.CreateResponseRequest:
    return response_request_from_json({"model": MODEL, "input": "Hello there", **fields})


def _stream_request(**fields: Any) -> responses_pb2.StreamResponseRequest:
    return stream_response_request_from_json({"model": MODEL, "input": "Hello there", **fields})


async def _events(responses: Stub, request: responses_pb2.StreamResponseRequest) -> list[Any]:
    return [e async for e in responses.StreamResponse(request, timeout=10)]


def _sse(events: list[dict[str, Any]]) -> str:
    return "".join(f"event: {e.get('type')}\ndata: {json.dumps(e)}\n\n" for e in events)


# ----------------------------------------------------------------------------- unary


async def test_create_response_equals_the_upstream_json(
    upstream: DevUpstream, responses: Stub
) -> None:
    response = await responses.CreateResponse(_request(), timeout=10)
    assert response.status == "completed"
    message = response.output[0].message
    assert message.role == "assistant"
    assert message.content_parts.values[0].output_text.text == "Echo: Hello there"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json == {"model": MODEL, "input": "Hello there"}  # no "stream" key
    expected = devresponses.responses(sent.json, 0.0)
    assert to_json(response) == json.loads(expected.body)  # type: ignore[union-attr]


async def test_unary_function_call_and_its_output(upstream: DevUpstream, responses: Stub) -> None:
    request = _request(input="What is the weather in Paris?", tools=[WEATHER_TOOL])
    response = await responses.CreateResponse(request, timeout=10)
    call = response.output[0].function_call
    assert (call.name, call.arguments) == ("get_weather", devresponses.TOOL_ARGUMENTS)
    # The caller answers the call with its output, as input items.
    follow_up = response_request_from_json(
        {
            "model": MODEL,
            "tools": [WEATHER_TOOL],
            "input": [
                {"role": "user", "content": "What is the weather in Paris?"},
                to_json(response.output[0]),
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
        }
    )
    await responses.CreateResponse(follow_up, timeout=10)
    sent: dict[str, Any] = upstream.requests[-1].json or {}
    assert sent["input"][1]["type"] == "function_call"
    assert sent["input"][2] == {
        "type": "function_call_output",
        "call_id": call.call_id,
        "output": "sunny",
    }


async def test_unary_reasoning_item_with_encrypted_content(responses: Stub) -> None:
    request = _request(reasoning={"effort": "low"}, include=["reasoning.encrypted_content"])
    response = await responses.CreateResponse(request, timeout=10)
    reasoning = response.output[0].reasoning
    assert reasoning.summary[0].summary_text.text.startswith("Thinking")
    assert reasoning.encrypted_content
    assert response.output[1].WhichOneof("item") == "message"


async def test_unary_failed_response_is_its_error_status(responses: Stub) -> None:
    """A 200 body with an `error` object (a failed response) is an error, as for chat."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await responses.CreateResponse(_request(input="please fail"), timeout=10)
    status = richstatus.of_error(caught.value)
    assert (status.code, status.reason) == (grpc.StatusCode.INTERNAL, "SERVER_ERROR")
    assert devresponses.FAILURE_MESSAGE in status.message


# ----------------------------------------------------------------------------- streaming


async def test_stream_text_events_in_order(responses: Stub) -> None:
    events = await _events(responses, _stream_request())
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:4] == [
        "response_created",
        "response_in_progress",
        "response_output_item_added",
        "response_content_part_added",
    ]
    assert kinds[-1] == "response_completed"
    deltas = [
        e.response_output_text_delta.delta
        for e in events
        if e.HasField("response_output_text_delta")
    ]
    assert "".join(deltas) == "Echo: Hello there"
    numbers = [to_json(e)["sequence_number"] for e in events]
    assert numbers == list(range(len(events)))
    final = events[-1].response_completed.response
    assert final.output[0].message.content_parts.values[0].output_text.text == "Echo: Hello there"


async def test_stream_sends_stream_true_and_its_options(
    upstream: DevUpstream, responses: Stub
) -> None:
    request = _stream_request(stream_options={"include_obfuscation": False})
    await _events(responses, request)
    assert upstream.requests[-1].json == {
        "model": MODEL,
        "input": "Hello there",
        "stream_options": {"include_obfuscation": False},
        "stream": True,
    }


async def test_stream_function_call_arguments(responses: Stub) -> None:
    request = _stream_request(input="weather?", tools=[WEATHER_TOOL], tool_choice="required")
    events = await _events(responses, request)
    pieces = [
        e.response_function_call_arguments_delta.delta
        for e in events
        if e.HasField("response_function_call_arguments_delta")
    ]
    assert "".join(pieces) == devresponses.TOOL_ARGUMENTS
    done = next(e for e in events if e.HasField("response_function_call_arguments_done"))
    assert done.response_function_call_arguments_done.name == "get_weather"
    assert events[-1].response_completed.response.output[0].function_call.arguments == (
        devresponses.TOOL_ARGUMENTS
    )


async def test_stream_reasoning_summary_events(responses: Stub) -> None:
    events = await _events(responses, _stream_request(reasoning={"summary": "auto"}))
    kinds = [e.WhichOneof("event") for e in events]
    for kind in (
        "response_reasoning_summary_part_added",
        "response_reasoning_summary_text_delta",
        "response_reasoning_summary_text_done",
        "response_reasoning_summary_part_done",
    ):
        assert kind in kinds


async def test_stream_incomplete_response_ends_ok(responses: Stub) -> None:
    events = await _events(responses, _stream_request(max_output_tokens=2))
    last = events[-1].response_incomplete.response
    assert (last.status, last.incomplete_details.reason) == ("incomplete", "max_output_tokens")


async def test_response_failed_event_ends_the_call_with_its_status(responses: Stub) -> None:
    call = responses.StreamResponse(_stream_request(input="please fail now"), timeout=10)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event.WhichOneof("event"))
    assert received.count("response_output_text_delta") == 2
    assert "response_failed" not in received
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.reason == "SERVER_ERROR"
    assert devresponses.FAILURE_MESSAGE in status.message


async def test_error_event_ends_the_call_with_a_status(
    upstream: DevUpstream, responses: Stub
) -> None:
    """`event: error` with the flat `{"type": "error", "code", "message"}` object."""
    upstream.program(
        MODEL, StreamError(after=3, type="rate_limit_error", code="rate_limit_exceeded")
    )
    call = responses.StreamResponse(_stream_request(), timeout=10)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event)
    assert len(received) == 3
    status = richstatus.of_error(caught.value)
    assert status.code != grpc.StatusCode.OK
    assert "rate_limit_exceeded" in status.message or status.reason == "RATE_LIMIT_EXCEEDED"


async def test_error_event_maps_by_its_code(upstream: DevUpstream, responses: Stub) -> None:
    upstream.program(
        MODEL, StreamError(after=3, type="rate_limit_error", code="rate_limit_exceeded")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _events(responses, _stream_request())
    status = richstatus.of_error(caught.value)
    assert (status.code, status.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMIT_EXCEEDED",
    )


async def test_stream_without_a_terminal_event_is_unavailable(
    upstream: DevUpstream, responses: Stub
) -> None:
    events = [{"type": "response.created", "sequence_number": 0, "response": {"id": "r"}}]
    upstream.program(MODEL, Status(200, _sse(events), headers=SSE))
    call = responses.StreamResponse(_stream_request(), timeout=10)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event)
    assert len(received) == 1
    status = richstatus.of_error(caught.value)
    assert (status.code, status.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_INCOMPLETE")
    assert "response.completed" in status.message


async def test_cut_stream_is_unavailable(upstream: DevUpstream, responses: Stub) -> None:
    upstream.program(MODEL, CutStream(after=3))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _events(responses, _stream_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unknown_event_types_arrive_whole(upstream: DevUpstream, responses: Stub) -> None:
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "r", "future": 1}},
        {"type": "response.hologram.delta", "sequence_number": 1, "delta": {"x": [1, None]}},
        {"type": "response.completed", "sequence_number": 2, "response": {"id": "r"}},
    ]
    upstream.program(MODEL, Status(200, _sse(events), headers=SSE))
    received = await _events(responses, _stream_request())
    assert received[1].WhichOneof("event") == "other"
    assert received[1].other.type == "response.hologram.delta"
    assert [to_json(e) for e in received] == events


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_errors_map_and_retry_as_chat(
    upstream: DevUpstream, responses: Stub, streaming: bool
) -> None:
    upstream.program(MODEL, Status(503), Status(429))
    if streaming:
        assert (await _events(responses, _stream_request()))[-1].HasField("response_completed")
    else:
        assert (await responses.CreateResponse(_request(), timeout=10)).status == "completed"
    assert len([r for r in upstream.requests if r.path == "/v1/responses"]) == 3


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_not_found_model_is_not_retried(
    upstream: DevUpstream, responses: Stub, streaming: bool
) -> None:
    upstream.program(MODEL, Status(404), Status(404))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            await _events(responses, _stream_request())
        else:
            await responses.CreateResponse(_request(), timeout=10)
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert len(upstream.requests) == 1


async def test_invalid_requests_are_refused_before_the_upstream(
    upstream: DevUpstream, responses: Stub
) -> None:
    for request, field in (
        (responses_pb2.CreateResponseRequest(input_text="hi"), "model"),
        (_request(temperature=3.0), "temperature"),
        (_request(model="../models"), "model"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await responses.CreateResponse(request, timeout=10)
        status = richstatus.of_error(caught.value)
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT
        assert status.violations[0][0] == field
    assert upstream.requests == []


async def test_upstream_bad_request_is_invalid_argument(
    upstream: DevUpstream, responses: Stub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await responses.CreateResponse(responses_pb2.CreateResponseRequest(model=MODEL), timeout=10)
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.violations == [("input", "'input' must be a non-empty string or array")]


# ----------------------------------------------------------------------------- lifecycle


async def test_cancelled_stream_closes_the_upstream_response(
    upstream: DevUpstream, responses: Stub
) -> None:
    upstream.program(MODEL, SlowStream(interval=0.05))
    call = responses.StreamResponse(_stream_request(max_output_tokens=1000))
    async for _ in call:
        break
    call.cancel()
    await wait_for(lambda: upstream.disconnects >= 1)
    await wait_for(lambda: upstream.active_responses == 0)


async def test_health_and_reflection_know_the_service(bridge: server.Bridge) -> None:
    name = "aigateway.v1.ResponsesService"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflection.ServerReflectionInfo(iter([ask]), timeout=10):
            names = [s.name for s in reply.list_services_response.service]
            assert name in names


async def test_a_tool_or_part_without_its_type_is_sent_with_the_type_its_member_names(
    upstream: DevUpstream, responses: Stub
) -> None:
    """The oneof member names the JSON `type` the API requires (issue 11, "A oneof member
    names its JSON form"); a message item keeps OpenAI's short form, without a type."""
    request = responses_pb2.CreateResponseRequest(model=MODEL)
    item = request.input_items.values.add().message
    item.role = "user"
    item.content_parts.values.add().input_text.text = "hi"
    request.tools.add().function.name = "get_weather"
    await responses.CreateResponse(request, timeout=10)
    body = json.loads(next(r for r in upstream.requests if r.path == "/v1/responses").body)
    assert body["tools"] == [{"type": "function", "name": "get_weather"}]
    assert body["input"][0] == {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}


async def test_nan_in_a_responses_struct_is_invalid_argument(
    upstream: DevUpstream, responses: Stub
) -> None:
    request = responses_pb2.CreateResponseRequest(model=MODEL, input_text="hi")
    request.extra_fields["bad"] = float("nan")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await responses.CreateResponse(request, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in upstream.requests if r.path == "/v1/responses"]
