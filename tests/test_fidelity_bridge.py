"""Fidelity end to end: generated requests and responses through a real bridge and upstream.

* Every request the bridge sends validates against the spec's request schema (with the
  documented Vercel extensions) and equals the JSON the caller's message was built from.
* Every response the upstream returns (unknown keys at every level, nulls, unknown
  vocabulary, integers in free-form JSON) comes back from the bridge, converted to JSON,
  exactly as the upstream sent it; streamed chunks one by one.
* A field the protos do not know yet survives both ways; unset stays absent; null stays
  distinguishable from absent; 3 stays 3.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aigateway.v1 import chat_pb2, common_pb2, embeddings_pb2, models_pb2
from aigateway_json import (
    chat_request_from_json,
    embeddings_request_from_json,
    from_json,
    stream_chat_request_from_json,
    to_json,
)
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dev.upstream import api as devapi
from dev.upstream.faults import Status
from dev.upstream.server import DevUpstream
from tests.conftest import Stubs
from tests.fidelity import spec
from tests.fidelity.harness import ThreadedBridge
from tests.fidelity.spec import extra_paths

MODEL = "openai/gpt-4o-mini"
MODEL_IDS = st.sampled_from([MODEL, "anthropic/claude-sonnet-4.5", "openai/text-embedding-3-small"])
SSE = {"content-type": "text/event-stream"}
E2E = settings(
    max_examples=spec.examples(60),
    deadline=None,
    suppress_health_check=[*spec.TOLERATED, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def live() -> Iterator[ThreadedBridge]:
    with ThreadedBridge() as running:
        yield running


def _bridge_sendable(data: dict[str, Any]) -> dict[str, Any]:
    """What the spec states only in prose, and the bridge therefore checks itself:
    `top_logprobs` needs `logprobs: true`; `reasoning_effort` excludes `reasoning.max_tokens`."""
    if "top_logprobs" in data and data["top_logprobs"] is not None:
        data = {**data, "logprobs": True}
    reasoning = data.get("reasoning")
    if data.get("reasoning_effort") is not None and isinstance(reasoning, dict):
        data = {**data, "reasoning": {k: v for k, v in reasoning.items() if k != "max_tokens"}}
    return data


def _sent(live: ThreadedBridge, before: int) -> Any:
    requests = live.requests_since(before)
    assert len(requests) == 1, f"expected one upstream request, got {len(requests)}"
    return requests[0].json


# ----------------------------------------------------------------------------- requests


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
def test_generated_chat_requests_are_sent_exactly_and_validate(
    live: ThreadedBridge, streaming: bool
) -> None:
    # The development upstream answers with as many tokens as asked for: keep replies short.
    short = st.integers(1, 16)
    overrides = {"model": MODEL_IDS, "max_tokens": short, "max_completion_tokens": short}
    generator = spec.Generator(overrides=overrides)
    requests = generator.named("CreateChatCompletionRequest").map(_bridge_sendable)

    @E2E
    @given(requests)
    def check(data: dict[str, Any]) -> None:
        data = {k: v for k, v in data.items() if k not in ("stream", "stream_options")}
        before = len(live.upstream.requests)
        try:
            if streaming:
                request = stream_chat_request_from_json(data)
                list(live.chat.StreamChatCompletion(request, timeout=30))
            else:
                live.chat.CreateChatCompletion(chat_request_from_json(data), timeout=30)
        except grpc.RpcError as err:
            # The development upstream refuses some odd but valid requests (400); the
            # bridge itself must have sent them on, not failed.
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        body = _sent(live, before)
        expected = {**data, "stream": True} if streaming else data
        assert spec.exact_diff(expected, body) == []
        assert spec.validation_errors("CreateChatCompletionRequest", body) == []

    check()


def test_generated_requests_with_future_keys_are_sent_exactly(live: ThreadedBridge) -> None:
    """Unknown keys at every level, nulls, unknown vocabulary: the body still equals the JSON
    the caller's message was built from (not schema-valid by design, so not validated)."""
    short = st.integers(1, 16)
    overrides = {"model": MODEL_IDS, "max_tokens": short, "max_completion_tokens": short}
    generator = spec.Generator(future=True, open_vocabulary=True, overrides=overrides)
    requests = generator.named("CreateChatCompletionRequest").map(_bridge_sendable)

    @E2E
    @given(requests)
    def check(data: dict[str, Any]) -> None:
        data = {k: v for k, v in data.items() if k not in ("stream", "stream_options")}
        before = len(live.upstream.requests)
        try:
            live.chat.CreateChatCompletion(chat_request_from_json(data), timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            if len(live.upstream.requests) == before:
                return  # refused by the bridge's own checks (e.g. a null role): fine
        assert spec.exact_diff(data, _sent(live, before)) == []

    check()


def test_generated_embeddings_requests_are_sent_exactly_and_validate(live: ThreadedBridge) -> None:
    generator = spec.Generator(overrides={"model": MODEL_IDS})

    @E2E
    @given(generator.named("CreateEmbeddingRequest"))
    def check(data: dict[str, Any]) -> None:
        before = len(live.upstream.requests)
        try:
            live.embeddings.CreateEmbeddings(embeddings_request_from_json(data), timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            if len(live.upstream.requests) == before:
                # Refused by the bridge's own checks: only inputs the API rejects anyway.
                assert "input" in (err.details() or ""), err
                return
        body = _sent(live, before)
        assert spec.exact_diff(data, body) == []
        assert spec.validation_errors("CreateEmbeddingRequest", body) == []

    check()


# ----------------------------------------------------------------------------- responses

RESPONSES = spec.Generator(future=True, open_vocabulary=True)


def test_generated_chat_completions_come_back_exactly(live: ThreadedBridge) -> None:
    model = "fidelity/chat"

    @E2E
    @given(RESPONSES.named("CreateChatCompletionResponse"))
    def check(data: dict[str, Any]) -> None:
        live.program(model, Status(200, json.dumps(data)))
        request = chat_pb2.CreateChatCompletionRequest(
            model=model, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
        )
        response = live.chat.CreateChatCompletion(request, timeout=30)
        assert spec.exact_diff(data, to_json(response)) == []

    check()


def test_generated_stream_chunks_come_back_exactly(live: ThreadedBridge) -> None:
    model = "fidelity/stream"
    chunks = st.lists(RESPONSES.named("CreateChatCompletionStreamResponse"), min_size=1, max_size=3)

    @E2E
    @given(chunks)
    def check(events: list[dict[str, Any]]) -> None:
        live.program(model, Status(200, spec.sse_body(events), headers=SSE))
        request = chat_pb2.StreamChatCompletionRequest(
            model=model, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
        )
        received = [to_json(c) for c in live.chat.StreamChatCompletion(request, timeout=30)]
        assert len(received) == len(events)
        for sent, got in zip(events, received, strict=True):
            assert spec.exact_diff(sent, got) == []

    check()


def test_generated_embeddings_come_back_exactly(live: ThreadedBridge) -> None:
    model = "fidelity/embeddings"

    @E2E
    @given(RESPONSES.named("CreateEmbeddingResponse"))
    def check(data: dict[str, Any]) -> None:
        live.program(model, Status(200, json.dumps(data)))
        request = embeddings_pb2.CreateEmbeddingsRequest(model=model, input_text="hi")
        response = live.embeddings.CreateEmbeddings(request, timeout=30)
        assert spec.exact_diff(data, to_json(response)) == []

    check()


def test_generated_models_come_back_exactly(live: ThreadedBridge) -> None:
    model = "fidelity/model"

    @E2E
    @given(RESPONSES.named("Model"))
    def check(data: dict[str, Any]) -> None:
        live.program(model, Status(200, json.dumps(data)))
        request = models_pb2.RetrieveModelRequest(model=model)
        response = live.models.RetrieveModel(request, timeout=30)
        assert spec.exact_diff(data, to_json(response.model)) == []

    check()


def test_generated_model_lists_come_back_exactly(
    live: ThreadedBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /models` names no model to program, so the catalogue itself is replaced."""

    @E2E
    @given(st.lists(RESPONSES.named("Model"), max_size=3))
    def check(models: list[dict[str, Any]]) -> None:
        monkeypatch.setattr(devapi, "MODELS", tuple(models))
        response = live.models.ListModels(models_pb2.ListModelsRequest(), timeout=30)
        assert spec.exact_diff({"object": "list", "data": models}, to_json(response)) == []

    check()


# ----------------------------------------------------------------------------- future fields


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


async def test_unknown_request_fields_are_merged_into_the_body(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    """A caller sends what the protos do not know yet through extra_fields, at any level."""
    request = chat_pb2.CreateChatCompletionRequest(
        model=MODEL,
        messages=[
            chat_pb2.ChatMessage(
                role="user",
                content_parts=chat_pb2.ContentPartList(
                    values=[
                        chat_pb2.ContentPart(
                            type="text", text="hi", extra_fields=_struct({"future_part": 1})
                        )
                    ]
                ),
                extra_fields=_struct({"future_message": {"a": [1, 2.5, None]}}),
            )
        ],
        temperature=0.5,
        provider_options=common_pb2.ProviderOptions(
            gateway=common_pb2.GatewayProviderOptions(
                order=["anthropic"], extra_fields=_struct({"future_gateway": True})
            )
        ),
        # A typed field wins over an extra key of the same name.
        extra_fields=_struct({"future_top": "x", "temperature": 1.5, "stop": None}),
    )
    await stubs.chat.CreateChatCompletion(request, timeout=10)
    body = upstream.requests[-1].json
    expected = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "future_part": 1}],
                "future_message": {"a": [1, 2.5, None]},
            }
        ],
        "temperature": 0.5,
        "providerOptions": {"gateway": {"order": ["anthropic"], "future_gateway": True}},
        "future_top": "x",
        "stop": None,
    }
    assert spec.exact_diff(expected, body) == []
    raw = upstream.requests[-1].body
    assert re.search(rb'"future_part":1[,}]', raw), raw  # 1, not 1.0, on the wire


async def test_unknown_response_fields_reach_the_caller_and_convert_back(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "future_top": {"n": 3, "f": 3.5, "big": 2**53, "list": [1, "a", None, True]},
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "future_message": [3]},
                "finish_reason": "stop",
                "logprobs": None,
                "future_choice": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": 3},
    }
    upstream.program(MODEL, Status(200, json.dumps(data)))
    request = chat_pb2.CreateChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
    )
    response = await stubs.chat.CreateChatCompletion(request, timeout=10)
    assert spec.exact_diff(data, to_json(response)) == []
    # The caller reads them from extra_fields, at the level where they were.
    assert response.extra_fields["future_top"]["n"] == 3
    assert response.choices[0].message.extra_fields["future_message"][0] == 3
    assert set(response.choices[0].extra_fields.keys()) == {"logprobs", "future_choice"}
    assert response.usage.extra_fields["cost"] == 3


async def test_unset_stays_absent(upstream: DevUpstream, stubs: Stubs) -> None:
    request = chat_pb2.CreateChatCompletionRequest(
        model=MODEL,
        messages=[chat_pb2.ChatMessage(role="user", content_text="")],
        temperature=0.0,
        n=1,
        logprobs=False,
    )
    await stubs.chat.CreateChatCompletion(request, timeout=10)
    body = upstream.requests[-1].json
    # Zero values that were set are sent; nothing else is.
    expected = {
        "model": MODEL,
        "messages": [{"role": "user", "content": ""}],
        "temperature": 0.0,
        "n": 1,
        "logprobs": False,
    }
    assert spec.exact_diff(expected, body) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("content", None), ("refusal", None), ("content", ""), ("annotations", [])],
    ids=["content-null", "refusal-null", "content-empty", "annotations-empty"],
)
async def test_null_stays_distinct_from_absent(
    upstream: DevUpstream, stubs: Stubs, key: str, value: Any
) -> None:
    """`"content": null`, `"content": ""` and no `content` are three different answers."""
    message: dict[str, Any] = {"role": "assistant", key: value}
    data = {"id": "c", "object": "chat.completion", "created": 1, "model": MODEL}
    for present in (True, False):
        choice = {"index": 0, "message": message if present else {"role": "assistant"}}
        sent = {**data, "choices": [choice]}
        upstream.program(MODEL, Status(200, json.dumps(sent)))
        request = chat_pb2.CreateChatCompletionRequest(
            model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
        )
        response = await stubs.chat.CreateChatCompletion(request, timeout=10)
        got = to_json(response)["choices"][0]["message"]
        assert (key in got) is present
        if present:
            assert spec.exact_diff(value, got[key]) == []


async def test_integers_stay_integers_in_free_form_json(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    parameters = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}
    request = from_json(
        chat_pb2.CreateChatCompletionRequest,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
        },
    )
    await stubs.chat.CreateChatCompletion(request, timeout=10)
    raw = upstream.requests[-1].body
    assert re.search(rb'"maximum":3[,}]', raw), raw
    assert b"3.0" not in raw
    body: dict[str, Any] = upstream.requests[-1].json or {}
    sent = body["tools"][0]["function"]["parameters"]
    assert spec.exact_diff(parameters, sent) == []


# ----------------------------------------------------------------------------- spec examples


def _examples() -> list[tuple[str, str, dict[str, Any]]]:
    return list(spec.response_examples())


@pytest.mark.parametrize(
    ("name", "kind", "data"), _examples(), ids=lambda v: v if isinstance(v, str) else ""
)
async def test_spec_examples_come_back_exactly_through_the_bridge(
    upstream: DevUpstream,
    stubs: Stubs,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    kind: str,
    data: dict[str, Any],
) -> None:
    hi = [chat_pb2.ChatMessage(role="user", content_text="hi")]
    returned: Any
    if kind == "chat":
        upstream.program(MODEL, Status(200, json.dumps(data)))
        request = chat_pb2.CreateChatCompletionRequest(model=MODEL, messages=hi)
        returned = to_json(await stubs.chat.CreateChatCompletion(request, timeout=10))
    elif kind == "chunk":
        upstream.program(MODEL, Status(200, spec.sse_body([data]), headers=SSE))
        streaming = chat_pb2.StreamChatCompletionRequest(model=MODEL, messages=hi)
        chunks = [c async for c in stubs.chat.StreamChatCompletion(streaming, timeout=10)]
        assert len(chunks) == 1
        returned = to_json(chunks[0])
    elif kind == "embeddings":
        upstream.program(MODEL, Status(200, json.dumps(data)))
        embed = embeddings_pb2.CreateEmbeddingsRequest(model=MODEL, input_text="hi")
        returned = to_json(await stubs.embeddings.CreateEmbeddings(embed, timeout=10))
    elif kind == "model":
        upstream.program(MODEL, Status(200, json.dumps(data)))
        retrieve = models_pb2.RetrieveModelRequest(model=MODEL)
        returned = to_json((await stubs.models.RetrieveModel(retrieve, timeout=10)).model)
    else:
        monkeypatch.setattr(devapi, "MODELS", tuple(data["data"]))
        returned = to_json(await stubs.models.ListModels(models_pb2.ListModelsRequest()))
        data = {"object": "list", "data": data["data"]}
    assert spec.exact_diff(data, returned) == []


def _request_examples() -> list[tuple[str, str, dict[str, Any]]]:
    return list(spec.request_examples())


@pytest.mark.parametrize(
    ("name", "kind", "data"), _request_examples(), ids=lambda v: v if isinstance(v, str) else ""
)
async def test_spec_request_examples_are_sent_exactly(
    upstream: DevUpstream, stubs: Stubs, name: str, kind: str, data: dict[str, Any]
) -> None:
    """The spec's own request bodies, built into messages, typed throughout, sent unchanged."""
    message: Any
    if kind == "embeddings":
        message = embeddings_request_from_json(data)
        await stubs.embeddings.CreateEmbeddings(message, timeout=10)
        schema = "CreateEmbeddingRequest"
    elif data.get("stream") is True:
        message = stream_chat_request_from_json(data)
        async for _ in stubs.chat.StreamChatCompletion(message, timeout=10):
            pass
        schema = "CreateChatCompletionRequest"
    else:
        message = chat_request_from_json(data)
        await stubs.chat.CreateChatCompletion(message, timeout=10)
        schema = "CreateChatCompletionRequest"
    assert extra_paths(message) == []
    sent = upstream.requests[-1].json
    assert spec.exact_diff(data, sent) == []
    assert spec.validation_errors(schema, sent) == []


# ----------------------------------------------------------------------------- vocabularies


async def test_unknown_vocabulary_passes_both_ways(upstream: DevUpstream, stubs: Stubs) -> None:
    """Values a newer API may add (roles, part types, tiers, finish reasons) are not enums."""
    body = {
        "model": MODEL,
        "messages": [
            {"role": "critic", "content": "hmm"},
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "v"}}]},
        ],
        "service_tier": "flex-2",
        "modalities": ["text", "video"],
        "tools": [{"type": "mcp", "mcp": {"server": "s"}}],
        "tool_choice": "sometimes",
    }
    await stubs.chat.CreateChatCompletion(chat_request_from_json(body), timeout=10)
    assert spec.exact_diff(body, upstream.requests[-1].json) == []
    answer = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "service_tier": "flex-2",
        "choices": [
            {
                "index": 0,
                "finish_reason": "pause_turn",
                "message": {
                    "role": "narrator",
                    "content": "x",
                    "annotations": [{"type": "file_citation", "file_citation": {"id": "f"}}],
                },
            }
        ],
    }
    upstream.program(MODEL, Status(200, json.dumps(answer)))
    reply = await stubs.chat.CreateChatCompletion(chat_request_from_json(body), timeout=10)
    assert reply.choices[0].finish_reason == "pause_turn"
    assert reply.choices[0].message.role == "narrator"
    assert reply.service_tier == "flex-2"
    assert spec.exact_diff(answer, to_json(reply)) == []


async def test_an_answer_no_message_can_hold_is_a_clear_status(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    huge = "1" + "0" * 400
    body = f'{{"id": "c", "object": "chat.completion", "created": {huge}, "choices": []}}'
    upstream.program(MODEL, Status(200, body))
    request = chat_pb2.CreateChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(request, timeout=10)
    assert caught.value.code() != grpc.StatusCode.UNKNOWN
    assert "beyond the range of a double" in (caught.value.details() or "")
