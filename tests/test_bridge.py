"""End to end: a real channel, the real bridge, a real HTTP upstream on loopback."""

from __future__ import annotations

import base64
import struct
from typing import Any

import grpc
import httpx
import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2
from aigateway_json import from_json, to_json
from google.rpc import error_details_pb2

from bridge.server import assembly as server
from dev.upstream import server as devserver
from dev.upstream.server import DevUpstream
from tests import richstatus
from tests.conftest import DEV_KEY, Stubs, bridge_config, stubs_for

CHAT_JSON: dict[str, Any] = {
    "model": "openai/gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello bridge"},
    ],
    "temperature": 0.2,
}


def without_ids(data: dict[str, Any]) -> dict[str, Any]:
    """Completion ids and timestamps may differ between two calls; everything else may not."""
    return {k: v for k, v in data.items() if k not in ("id", "created")}


# ----------------------------------------------------------------------------- models


async def test_list_models_equals_rest(stubs: Stubs, rest: httpx.AsyncClient) -> None:
    response = await stubs.models.ListModels(models_pb2.ListModelsRequest())
    direct = (await rest.get("/models")).json()
    assert to_json(response) == direct
    assert len(response.data) >= 3
    assert any("/" in m.id for m in response.data)


async def test_retrieve_model_with_slash(
    stubs: Stubs, rest: httpx.AsyncClient, upstream: DevUpstream
) -> None:
    model_id = "anthropic/claude-sonnet-4.5"
    response = await stubs.models.RetrieveModel(models_pb2.RetrieveModelRequest(model=model_id))
    assert response.model.id == model_id
    assert upstream.requests[-1].path == "/v1/models/anthropic/claude-sonnet-4.5"
    direct = (await rest.get(f"/models/{model_id}")).json()
    assert to_json(response.model) == direct


async def test_unknown_model_is_not_found_with_resource_info(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.models.RetrieveModel(models_pb2.RetrieveModelRequest(model="acme/nope-1"))
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    seen = richstatus.of_error(error)
    assert seen.one(error_details_pb2.ResourceInfo).resource_name == "acme/nope-1"
    assert seen.info.domain == "127.0.0.1"
    assert seen.info.metadata["httpStatus"] == "404"
    assert seen.request_id


# ----------------------------------------------------------------------------- chat


async def test_unary_chat_equals_rest(stubs: Stubs, rest: httpx.AsyncClient) -> None:
    request = from_json(chat_pb2.CreateChatCompletionRequest, CHAT_JSON)
    response = await stubs.chat.CreateChatCompletion(request)
    direct = (await rest.post("/chat/completions", json=CHAT_JSON)).json()
    assert without_ids(to_json(response)) == without_ids(direct)
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


async def test_unset_fields_stay_absent_upstream(stubs: Stubs, upstream: DevUpstream) -> None:
    request = chat_pb2.CreateChatCompletionRequest(
        model="openai/gpt-4o-mini",
        messages=[chat_pb2.ChatMessage(role="user", content_text="hi")],
        temperature=0.0,
    )
    await stubs.chat.CreateChatCompletion(request)
    sent = upstream.requests[-1].json
    assert sent == {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
    }


async def test_stream_chat_in_order_until_done(stubs: Stubs, rest: httpx.AsyncClient) -> None:
    request = from_json(chat_pb2.StreamChatCompletionRequest, CHAT_JSON)
    chunks = [chunk async for chunk in stubs.chat.StreamChatCompletion(request)]
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    unary = (await rest.post("/chat/completions", json=CHAT_JSON)).json()
    assert text == unary["choices"][0]["message"]["content"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(not c.choices[0].HasField("finish_reason") for c in chunks[:-1])
    # A JSON null finish_reason is kept, so each chunk converts back to what was sent.
    assert to_json(chunks[1])["choices"][0]["finish_reason"] is None
    direct = []
    async with rest.stream("POST", "/chat/completions", json={**CHAT_JSON, "stream": True}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                direct.append(httpx.Response(200, content=line[6:]).json())
    assert [without_ids(to_json(c)) for c in chunks] == [without_ids(d) for d in direct]


async def test_stream_usage_chunk(stubs: Stubs) -> None:
    request = from_json(
        chat_pb2.StreamChatCompletionRequest,
        {**CHAT_JSON, "stream_options": {"include_usage": True}},
    )
    chunks = [chunk async for chunk in stubs.chat.StreamChatCompletion(request)]
    last = chunks[-1]
    assert len(last.choices) == 0
    assert last.usage.total_tokens > 0
    assert to_json(last)["choices"] == []
    assert all(not c.HasField("usage") for c in chunks[:-1])


async def test_streamed_tool_call_fragments_join(stubs: Stubs) -> None:
    request = from_json(
        chat_pb2.StreamChatCompletionRequest,
        {
            "model": "openai/gpt-4o-mini",
            "messages": [{"role": "user", "content": "what is the weather in Paris?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    },
                }
            ],
        },
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stubs.chat.StreamChatCompletion(request):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls:
                assert call.HasField("index")
                entry = calls.setdefault(call.index, {"name": "", "arguments": "", "id": ""})
                entry["id"] += call.id
                entry["name"] += call.function.name
                entry["arguments"] += call.function.arguments
            if choice.HasField("finish_reason"):
                finish = choice.finish_reason
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["id"]
    assert httpx.Response(200, content=calls[0]["arguments"]).json() == {"city": "Paris"}


async def test_tool_definitions_reach_upstream_exactly(stubs: Stubs, upstream: DevUpstream) -> None:
    body = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "weather?"}]}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"days": {"maximum": 7}}},
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
        "stop": ["\n\n"],
        "logit_bias": {"50256": -100},
        "seed": 7,
    }
    response = await stubs.chat.CreateChatCompletion(
        from_json(chat_pb2.CreateChatCompletionRequest, body)
    )
    assert upstream.requests[-1].json == body  # 7 stays 7, not 7.0
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"


# ----------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_equal_rest(stubs: Stubs, rest: httpx.AsyncClient, encoding: str) -> None:
    body = {
        "model": "openai/text-embedding-3-small",
        "input": ["first text", "second text"],
        "encoding_format": encoding,
        "dimensions": 16,
    }
    response = await stubs.embeddings.CreateEmbeddings(
        from_json(embeddings_pb2.CreateEmbeddingsRequest, body)
    )
    direct = (await rest.post("/embeddings", json=body)).json()
    assert to_json(response) == direct
    assert [e.index for e in response.data] == [0, 1]
    expected = "embedding_float" if encoding == "float" else "embedding_base64"
    assert all(e.WhichOneof("embedding") == expected for e in response.data)


async def test_embedding_encodings_describe_the_same_vector(stubs: Stubs) -> None:
    def request(encoding: str) -> embeddings_pb2.CreateEmbeddingsRequest:
        return embeddings_pb2.CreateEmbeddingsRequest(
            model="openai/text-embedding-3-small", input_text="same", encoding_format=encoding
        )

    floats = (await stubs.embeddings.CreateEmbeddings(request("float"))).data[0]
    packed = (await stubs.embeddings.CreateEmbeddings(request("base64"))).data[0]
    raw = packed.embedding_base64
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert list(decoded) == pytest.approx(list(floats.embedding_float.values), rel=1e-6)
    assert to_json(packed)["embedding"] == base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [("input_tokens", [1, 2, 3]), ("input_token_lists", [[1, 2], [3]])],
)
async def test_embeddings_token_inputs(
    stubs: Stubs, upstream: DevUpstream, field: str, value: list[Any]
) -> None:
    request = from_json(
        embeddings_pb2.CreateEmbeddingsRequest,
        {"model": "openai/text-embedding-3-small", "input": value},
    )
    assert request.WhichOneof("input") == field
    response = await stubs.embeddings.CreateEmbeddings(request)
    sent = upstream.requests[-1].json
    assert isinstance(sent, dict)
    assert sent["input"] == value
    assert len(response.data) == (1 if field == "input_tokens" else 2)


# ----------------------------------------------------------------------------- credentials


async def test_callers_own_authorization_is_forwarded(
    upstream: DevUpstream, bridge: server.Bridge
) -> None:
    request = from_json(chat_pb2.CreateChatCompletionRequest, CHAT_JSON)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stubs = stubs_for(channel)
        await stubs.chat.CreateChatCompletion(request)
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {DEV_KEY}"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.chat.CreateChatCompletion(
                request, metadata=[("authorization", "Bearer sk-callers-own")]
            )
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-callers-own"
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "sk-callers-own" not in (caught.value.details() or "")
    assert richstatus.of_error(caught.value).info.metadata["httpStatus"] == "401"


async def test_bridge_without_credential_starts_and_caller_key_works(
    upstream: DevUpstream,
) -> None:
    running = await server.start(bridge_config(upstream, api_key=None))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            request = from_json(chat_pb2.CreateChatCompletionRequest, CHAT_JSON)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.chat.CreateChatCompletion(request)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization" not in upstream.requests[-1].headers
            ok = await stubs.chat.CreateChatCompletion(
                request, metadata=[("authorization", f"Bearer {DEV_KEY}")]
            )
            assert ok.choices
    finally:
        await running.stop(0)


# ----------------------------------------------------------------------------- errors
# The happy path of errors only; hostile upstreams, deadlines, cancellation, cuts, in-stream
# errors and refused input are tests/test_faults.py's, in one place.


async def test_rate_limit_maps_with_retry_and_quota_details(
    upstream: DevUpstream, bridge: server.Bridge, stubs: Stubs
) -> None:
    limited = devserver.Status(429, headers={"retry-after-ms": "20"})
    upstream.program("openai/gpt-4o-mini", limited, limited, limited)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(
            from_json(chat_pb2.CreateChatCompletionRequest, CHAT_JSON)
        )
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    seen = richstatus.of_error(error)
    assert seen.retry_delay == 0.02
    assert seen.one(error_details_pb2.QuotaFailure).violations
    assert seen.reason == "RATE_LIMIT_EXCEEDED"
    assert len([r for r in upstream.requests if r.path.endswith("/chat/completions")]) == 3


async def test_retry_then_success(upstream: DevUpstream, stubs: Stubs) -> None:
    upstream.program("openai/gpt-4o-mini", devserver.Status(503))
    response = await stubs.chat.CreateChatCompletion(
        from_json(chat_pb2.CreateChatCompletionRequest, CHAT_JSON)
    )
    assert response.choices
    assert len(upstream.requests) == 2


async def test_bad_request_maps_param_to_bad_request(upstream: DevUpstream, stubs: Stubs) -> None:
    upstream.program(
        "openai/gpt-4o-mini",
        devserver.Status(
            400,
            body={
                "error": {
                    "message": "temperature too hot",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": None,
                }
            },
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(
            from_json(chat_pb2.CreateChatCompletionRequest, CHAT_JSON)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature too hot" in (caught.value.details() or "")
    seen = richstatus.of_error(caught.value)
    assert seen.violations == [("temperature", "temperature too hot")]
    assert seen.reason == "INVALID_REQUEST_ERROR"
    assert len(upstream.requests) == 1  # 400 is never retried
