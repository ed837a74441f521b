"""The development upstream, tested over real loopback sockets with httpx, as the bridge uses it."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx
import pytest

from dev.upstream import server as devserver
from dev.upstream.server import (
    CutStream,
    Delay,
    DevUpstream,
    Empty,
    Hang,
    Html,
    Huge,
    MalformedJson,
    MalformedSse,
    Redirect,
    Reset,
    SlowStream,
    Status,
    StreamError,
    WrongContentType,
    serve_forever,
)

KEY = "sk-devserver-test"
AUTH = {"authorization": f"Bearer {KEY}"}
MODEL = "openai/gpt-4o-mini"


@pytest.fixture
async def dev() -> AsyncIterator[DevUpstream]:
    async with DevUpstream(api_key=KEY) as upstream:
        yield upstream


@pytest.fixture
async def client(dev: DevUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dev.url, headers=AUTH, timeout=10) as http:
        yield http


async def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll `condition` until it holds; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def chat(text: str = "hello brave new world", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


async def stream_lines(client: httpx.AsyncClient, body: dict[str, Any]) -> list[str]:
    """The non-empty lines of a streamed response, read to its end."""
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return [line async for line in response.aiter_lines() if line]


def chunks_of(lines: list[str]) -> list[dict[str, Any]]:
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


async def read_until_error(response: httpx.Response, lines: list[str]) -> Exception:
    try:
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
    except httpx.HTTPError as exc:
        return exc
    raise AssertionError("the stream ended normally")


# ---------------------------------------------------------------------------------- models


async def test_models_list_needs_no_auth(dev: DevUpstream) -> None:
    async with httpx.AsyncClient(base_url=dev.url) as anonymous:
        response = await anonymous.get("/models")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert {"openai/gpt-4o-mini", "anthropic/claude-sonnet-4.5"} <= by_id.keys()
    assert by_id["openai/text-embedding-3-small"]["type"] == "embedding"
    sonnet = by_id["anthropic/claude-sonnet-4.5"]
    assert sonnet["pricing"]["input"] == "0.000003"
    assert sonnet["pricing"]["input_tiers"][0] == {"cost": "0.000003", "min": 0, "max": 200000}
    assert "tool-use" in sonnet["tags"]
    assert any("shutdown_date" in m and m["shutdown_date"] is None for m in body["data"])


async def test_retrieve_model_takes_the_slash_literally(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    response = await client.get("/models/anthropic/claude-sonnet-4.5")
    assert response.status_code == 200
    assert response.json()["id"] == "anthropic/claude-sonnet-4.5"
    assert dev.requests[-1].path == "/v1/models/anthropic/claude-sonnet-4.5"
    assert dev.requests[-1].method == "GET"


async def test_unknown_model_is_404_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/models/acme/nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "acme/nope" in error["message"]


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/completions", json={"model": MODEL})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "x-request-id" in response.headers


# ---------------------------------------------------------------------------------- auth


async def test_auth_required_for_chat(dev: DevUpstream) -> None:
    async with httpx.AsyncClient(base_url=dev.url) as anonymous:
        missing = await anonymous.post("/chat/completions", json=chat())
        wrong = await anonymous.post(
            "/embeddings",
            json={"model": MODEL, "input": "x"},
            headers={"authorization": "Bearer no"},
        )
        right = await anonymous.post("/chat/completions", json=chat(), headers=AUTH)
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json() == {
            "error": {
                "message": response.json()["error"]["message"],
                "type": "authentication_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        assert "x-request-id" in response.headers
    assert "Bearer no" not in wrong.text
    assert right.status_code == 200
    assert dev.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_failed_auth_does_not_consume_program(dev: DevUpstream) -> None:
    dev.program(MODEL, Status(500))
    async with httpx.AsyncClient(base_url=dev.url) as http:
        assert (await http.post("/chat/completions", json=chat())).status_code == 401
        response = await http.post("/chat/completions", json=chat(), headers=AUTH)
    assert response.status_code == 500


async def test_no_api_key_means_no_auth() -> None:
    async with DevUpstream() as open_dev, httpx.AsyncClient(base_url=open_dev.url) as http:
        assert (await http.post("/chat/completions", json=chat())).status_code == 200


# ---------------------------------------------------------------------------------- chat


async def test_chat_unary(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat("hello brave new world"))
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["created"] == 1700000000
    assert body["model"] == MODEL
    assert body["system_fingerprint"] == "fp_dev"
    assert body["service_tier"] == "default"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Echo: hello brave new world",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["rejected_prediction_tokens"] == 0
    again = await client.post("/chat/completions", json=chat("hello brave new world"))
    assert again.json() == body, "replies are deterministic"
    recorded = dev.requests[-1]
    assert recorded.json == chat("hello brave new world")
    assert json.loads(recorded.body) == recorded.json
    assert recorded.headers["content-type"] == "application/json"


async def test_chat_text_parts_and_last_user_message(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "part one "},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "text", "text": "two"},
            ],
        },
    ]
    response = await client.post("/chat/completions", json={"model": MODEL, "messages": messages})
    assert response.json()["choices"][0]["message"]["content"] == "Echo: part one two"


async def test_chat_n_choices(client: httpx.AsyncClient) -> None:
    body = (await client.post("/chat/completions", json=chat(n=3))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]


async def test_chat_any_model_is_accepted(client: httpx.AsyncClient) -> None:
    body = chat()
    body["model"] = "someone/unlisted-model"
    response = await client.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["model"] == "someone/unlisted-model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        (chat(n=0), "n"),
        (chat(max_tokens="many"), "max_tokens"),
    ],
)
async def test_chat_validation(client: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    response = await client.post("/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_invalid_json_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_too_large_body_is_413(
    dev: DevUpstream, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devserver, "MAX_BODY", 100)
    response = await client.post("/chat/completions", json=chat("x" * 200))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert dev.requests[-1].body == b""
    assert (await client.post("/chat/completions", json=chat("x"))).status_code == 200


async def test_max_tokens_sets_reply_length(client: httpx.AsyncClient) -> None:
    unary = await client.post("/chat/completions", json=chat("a b", max_tokens=7))
    content = unary.json()["choices"][0]["message"]["content"]
    assert content == "Echo: a b Echo: a b Echo:"
    assert unary.json()["usage"]["completion_tokens"] == 7
    lines = await stream_lines(client, chat("a b", max_completion_tokens=1000, stream=True))
    deltas = [c["choices"][0]["delta"] for c in chunks_of(lines)]
    contents = [d["content"] for d in deltas[1:-1]]
    assert len(contents) == 1000
    assert all(contents)


async def test_stream_order_and_done(client: httpx.AsyncClient) -> None:
    unary = (await client.post("/chat/completions", json=chat())).json()
    chunks = chunks_of(await stream_lines(client, chat(stream=True)))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["id"] == unary["id"] and c["model"] == MODEL for c in chunks)
    assert all("usage" not in c for c in chunks)
    choices = [c["choices"][0] for c in chunks]
    assert choices[0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert (
        "".join(c["delta"]["content"] for c in choices[1:-1])
        == (unary["choices"][0]["message"]["content"])
    )
    assert len(choices) - 2 == len(unary["choices"][0]["message"]["content"].split())
    assert [c["finish_reason"] for c in choices[:-1]] == [None] * (len(choices) - 1)
    assert choices[-1] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_stream_usage_chunk(client: httpx.AsyncClient) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    chunks = chunks_of(await stream_lines(client, body))
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    unary = (await client.post("/chat/completions", json=chat())).json()
    assert chunks[-1]["usage"] == unary["usage"]


async def test_stream_n_choices(client: httpx.AsyncClient) -> None:
    chunks = chunks_of(await stream_lines(client, chat(stream=True, n=2)))
    finishes = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finishes) == [0, 1]


async def test_tool_call_unary(client: httpx.AsyncClient) -> None:
    body = chat("what is the weather in Paris?", tools=[WEATHER_TOOL])
    choice = (await client.post("/chat/completions", json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "lookup"}}],
)
async def test_tool_choice_forces_a_call(client: httpx.AsyncClient, tool_choice: Any) -> None:
    lookup = {"type": "function", "function": {"name": "lookup"}}
    body = chat("hi", tools=[lookup, WEATHER_TOOL], tool_choice=tool_choice)
    message = (await client.post("/chat/completions", json=body)).json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "lookup"


async def test_no_tool_call_without_trigger(client: httpx.AsyncClient) -> None:
    body = chat("hi", tools=[WEATHER_TOOL])
    message = (await client.post("/chat/completions", json=body)).json()["choices"][0]["message"]
    assert "tool_calls" not in message


async def test_tool_call_stream_fragments(client: httpx.AsyncClient) -> None:
    body = chat("weather?", tools=[WEATHER_TOOL], stream=True)
    choices = [c["choices"][0] for c in chunks_of(await stream_lines(client, body))]
    head = choices[0]["delta"]["tool_calls"][0]
    assert head["index"] == 0
    assert head["id"].startswith("call_")
    assert head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["delta"]["tool_calls"][0]["function"]["arguments"] for c in choices[1:-1]]
    assert len(fragments) > 1
    assert "".join(fragments) == '{"city":"Paris"}'
    assert all(c["delta"]["tool_calls"][0]["index"] == 0 for c in choices[1:-1])
    assert choices[-1]["finish_reason"] == "tool_calls"


# ---------------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize(
    ("value", "count"),
    [("hello", 1), (["a", "b", "c"], 3), ([1, 2, 3], 1), ([[1, 2], [3]], 2)],
)
async def test_embeddings_inputs(client: httpx.AsyncClient, value: Any, count: int) -> None:
    response = await client.post("/embeddings", json={"model": MODEL, "input": value})
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == list(range(count))
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 8 for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


async def test_embeddings_float_and_base64_agree(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "input": ["alpha", "beta"], "dimensions": 16}
    floats = (await client.post("/embeddings", json=request)).json()
    packed = (
        await client.post("/embeddings", json={**request, "encoding_format": "base64"})
    ).json()
    for as_float, as_base64 in zip(floats["data"], packed["data"], strict=True):
        decoded = list(struct.unpack("<16f", base64.b64decode(as_base64["embedding"])))
        assert decoded == as_float["embedding"]
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    again = (await client.post("/embeddings", json=request)).json()
    assert again == floats


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ],
)
async def test_embeddings_validation(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    response = await client.post("/embeddings", json={"model": MODEL, **extra})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# ---------------------------------------------------------------------------------- faults


async def test_program_is_per_model_and_in_order(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program(MODEL, Status(500), Status(502))
    other = chat()
    other["model"] = "other/model"
    assert (await client.post("/chat/completions", json=other)).status_code == 200
    statuses = [(await client.post("/chat/completions", json=chat())).status_code for _ in "abc"]
    assert statuses == [500, 502, 200]


async def test_program_applies_to_retrieve_model(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program("anthropic/claude-sonnet-4.5", Status(503))
    assert (await client.get("/models/anthropic/claude-sonnet-4.5")).status_code == 503
    assert (await client.get("/models/anthropic/claude-sonnet-4.5")).status_code == 200


async def test_status_default_envelope_and_headers(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program(MODEL, Status(429, headers={"retry-after-ms": "250", "x-should-retry": "true"}))
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 429
    assert response.headers["retry-after-ms"] == "250"
    assert response.headers["x-should-retry"] == "true"
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


async def test_status_with_custom_bodies(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    quota = {"error": {"message": "quota", "type": "insufficient_quota", "param": None, "code": 1}}
    dev.program(MODEL, Status(429, quota), Status(400, b'{"weird": true}'), Status(422))
    first = await client.post("/chat/completions", json=chat())
    assert first.json() == quota
    second = await client.post("/chat/completions", json=chat())
    assert (second.status_code, second.json()) == (400, {"weird": True})
    third = await client.post("/chat/completions", json=chat())
    assert third.status_code == 422
    assert third.json()["detail"][0]["loc"] == ["body", "messages"]


async def test_html_empty_malformed_and_wrong_type(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program(MODEL, Html(502), Empty(503), MalformedJson(), WrongContentType())
    html = await client.post("/chat/completions", json=chat())
    assert html.status_code == 502
    assert html.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in html.text
    empty = await client.post("/chat/completions", json=chat())
    assert (empty.status_code, empty.content) == (503, b"")
    malformed = await client.post("/chat/completions", json=chat())
    assert malformed.status_code == 200
    assert malformed.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        malformed.json()
    wrong = await client.post("/chat/completions", json=chat(stream=True))
    assert wrong.status_code == 200
    assert wrong.headers["content-type"].startswith("text/plain")


async def test_hang_until_client_gives_up(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, Hang())
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/chat/completions", json=chat(), timeout=0.2)
    await wait_for(lambda: dev.disconnects == 1 and dev.active_responses == 0)
    assert (await client.post("/chat/completions", json=chat())).status_code == 200


async def test_delay_then_normal(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, Delay(0.05))
    started = time.monotonic()
    response = await client.post("/chat/completions", json=chat())
    assert time.monotonic() - started >= 0.05
    assert response.json()["choices"][0]["message"]["content"].startswith("Echo:")


async def test_reset(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, Reset())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post("/chat/completions", json=chat())
    await wait_for(lambda: dev.open_connections == 0)
    assert dev.disconnects == 0
    assert (await client.post("/chat/completions", json=chat())).status_code == 200


async def test_cut_stream(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, CutStream(2))
    lines: list[str] = []
    async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as response:
        error = await read_until_error(response, lines)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert len(lines) == 2
    assert all(json.loads(line.removeprefix("data: ")) for line in lines)
    await wait_for(lambda: dev.active_responses == 0)
    assert dev.disconnects == 0


async def test_cut_non_stream_body(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, CutStream(0))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/chat/completions", json=chat())


@pytest.mark.parametrize("form", ["openai", "vercel", "event"])
async def test_stream_error_forms(
    dev: DevUpstream, client: httpx.AsyncClient, form: Literal["openai", "vercel", "event"]
) -> None:
    dev.program(
        MODEL,
        StreamError(1, form=form, type="rate_limit_error", code="rate_limited", message="slow"),
    )
    lines = await stream_lines(client, chat(stream=True))
    assert "data: [DONE]" not in lines
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["choices"][0]["delta"]["role"] == "assistant"
    if form == "event":
        assert lines[1] == "event: error"
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error["error"]["code"] == "rate_limited"
    assert error["error"]["message"] == "slow"
    assert error["error"]["type"] == "rate_limit_error"
    if form == "vercel":
        assert error["id"] == first["id"]
        assert error["model"] == MODEL
        assert error["object"] == "chat.completion.chunk"
    else:
        assert error["error"]["param"] is None
        assert set(error) == {"error"}


async def test_stream_error_on_unary_maps_to_status(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program(MODEL, StreamError(0, type="overloaded_error"))
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"


async def test_malformed_sse(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, MalformedSse(2))
    lines = await stream_lines(client, chat(stream=True))
    assert lines[2] == "data: {not json"
    assert lines[-1] == "data: [DONE]"
    chunks = chunks_of(lines[:2] + lines[3:])
    normal = chunks_of(await stream_lines(client, chat(stream=True)))
    assert chunks == normal, "nothing but the malformed event differs"


async def test_redirect(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, Redirect("http://elsewhere.invalid/v1/chat/completions"))
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 307
    assert response.headers["location"] == "http://elsewhere.invalid/v1/chat/completions"


async def test_huge(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, Huge(2_000_000), Huge(100_000))
    response = await client.post("/chat/completions", json=chat())
    assert 1_990_000 <= len(response.content) <= 2_010_000
    assert response.json()["object"] == "chat.completion"
    chunks = chunks_of(await stream_lines(client, chat(stream=True)))
    assert len(chunks[1]["choices"][0]["delta"]["content"]) == 100_000


async def test_huge_chunked_has_no_content_length(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program(MODEL, Huge(300_000, chunked=True))
    response = await client.post("/chat/completions", json=chat())
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert 290_000 <= len(response.content) <= 310_000
    assert response.json()["object"] == "chat.completion"


async def test_slow_stream(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    dev.program(MODEL, SlowStream(0.01))
    started = time.monotonic()
    lines = await stream_lines(client, chat("a b c", stream=True))
    assert time.monotonic() - started >= 0.01 * (len(lines) - 1)
    assert lines[-1] == "data: [DONE]"


# ---------------------------------------------------------------------------------- connections


async def test_keep_alive_reuses_one_connection(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    await client.post("/chat/completions", json=chat())
    await stream_lines(client, chat(stream=True))
    await client.post("/embeddings", json={"model": MODEL, "input": "x"})
    assert dev.open_connections == 1
    assert len(dev.requests) == 3


async def test_pipelined_requests_on_raw_socket(dev: DevUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
    request = b"GET /v1/models/gpt-4o-mini HTTP/1.1\r\nhost: x\r\n\r\n"
    writer.write(request * 2)
    await writer.drain()
    answers = []
    for _ in range(2):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.startswith(b"content-length")
        )
        answers.append(json.loads(await reader.readexactly(length)))
    assert [a["id"] for a in answers] == ["gpt-4o-mini", "gpt-4o-mini"]
    writer.close()
    await writer.wait_closed()


async def test_bad_http_gets_400(dev: DevUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
    writer.write(b"this is not http\r\n\r\n")
    response = await reader.read()
    assert response.startswith(b"HTTP/1.1 400 ")
    writer.close()
    await writer.wait_closed()


async def test_client_disconnect_mid_stream_is_counted(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    dev.program(MODEL, SlowStream(30))
    async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break
        assert dev.active_responses == 1
    await wait_for(lambda: dev.disconnects == 1 and dev.active_responses == 0)
    await wait_for(lambda: dev.open_connections == 0)


async def test_completed_responses_are_not_disconnects(
    dev: DevUpstream, client: httpx.AsyncClient
) -> None:
    await stream_lines(client, chat(stream=True))
    await client.aclose()
    await wait_for(lambda: dev.open_connections == 0)
    assert dev.disconnects == 0


async def test_stop_closes_everything() -> None:
    dev = DevUpstream()
    await dev.start()
    dev.program(MODEL, Hang())
    async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
        pending = asyncio.create_task(http.post("/chat/completions", json=chat()))
        await wait_for(lambda: dev.active_responses == 1)
        await dev.stop()
        assert dev.active_responses == 0
        assert dev.open_connections == 0
        assert dev.disconnects == 0
        with pytest.raises(httpx.HTTPError):
            await pending
        with pytest.raises(httpx.ConnectError):
            await http.get("/models")
    await dev.stop()  # idempotent


async def test_many_idle_connections(dev: DevUpstream, client: httpx.AsyncClient) -> None:
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    count = min(1000, (soft_limit - 200) // 2)
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", dev.port) for _ in range(count))
    )
    try:
        await wait_for(lambda: dev.open_connections == count, limit=10)
        assert (await client.get("/models")).status_code == 200
    finally:
        for _, writer in connections:
            writer.close()
    await wait_for(lambda: dev.open_connections <= 1, limit=10)


async def test_serve_forever_prints_url(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(serve_forever("127.0.0.1", 0, api_key=KEY))
    printed = ""

    def line_printed() -> bool:
        nonlocal printed
        printed += capsys.readouterr().out
        return "\n" in printed

    try:
        await wait_for(line_printed)
        prefix = "dev upstream listening on http://127.0.0.1:"
        assert printed.startswith(prefix)
        url = printed.strip().removeprefix("dev upstream listening on ")
        assert url.endswith("/v1")
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/models")).status_code == 200
            assert (await http.post("/embeddings", json={})).status_code == 401
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
