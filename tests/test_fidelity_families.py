"""One table per field family, each case end to end through a real bridge and upstream.

A request case builds the caller's message from OpenAI JSON, sends it through gRPC, and
checks three things: the body the upstream received equals that JSON exactly; it validates
against the spec's request schema (Vercel extensions allowed); and every key landed in a
typed field (nothing in `extra_fields`), with a probe reading one typed value the way a
caller would. A response case programs the upstream with JSON and checks the same from the
other side: the gRPC response converts back to that JSON exactly, typed where the protos
model it.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2
from aigateway_json import (
    chat_request_from_json,
    embeddings_request_from_json,
    stream_chat_request_from_json,
    to_json,
)
from google.protobuf.message import Message

from dev.upstream import api as devapi
from dev.upstream.faults import Status
from dev.upstream.server import DevUpstream
from tests.conftest import Stubs
from tests.fidelity import spec
from tests.fidelity.spec import extra_paths

MODEL = "openai/gpt-4o-mini"
USER = {"role": "user", "content": "hi"}
Probe = Callable[[Any], Any]


@dataclass(frozen=True)
class Request:
    """A chat (or embeddings) request body; `probe(msg)` reads a typed value, `expect` it."""

    family: str
    name: str
    body: dict[str, Any]
    probe: Probe
    expect: Any
    stream: bool = False
    untyped: tuple[str, ...] = ()
    """Paths expected in extra_fields: nulls, and provider keys passed through as they are."""


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [USER], **fields}


def parts(*values: dict[str, Any]) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": list(values)}])


PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = base64.b64encode(b"%PDF-1.4").decode()

REQUESTS = [
    # messages and content parts -------------------------------------------------------------
    Request(
        "messages",
        "every-role",
        chat(
            messages=[
                {"role": "developer", "content": "be brief", "name": "ops"},
                {"role": "system", "content": [{"type": "text", "text": "sys"}]},
                {"role": "user", "content": "weather?", "name": "ann"},
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "custom",
                            "custom": {"name": "sql", "input": "select 1"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "1"}],
                },
                {"role": "assistant", "audio": {"id": "audio_1"}, "content": "ok"},
                {"role": "function", "name": "legacy", "content": "42"},
            ]
        ),
        lambda m: m.messages[3].tool_calls[1].custom.input,
        "select 1",
        untyped=("$.messages[3].content", "$.messages[3].refusal"),
    ),
    Request(
        "messages",
        "image-audio-parts",
        parts(
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ),
        lambda m: m.messages[0].content_parts.values[1].image_url.detail,
        "high",
    ),
    Request(
        "messages",
        "file-openai-form",
        parts(
            {
                "type": "file",
                "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
            },
            {"type": "file", "file": {"file_id": "file-abc"}},
        ),
        lambda m: m.messages[0].content_parts.values[1].file.file_id,
        "file-abc",
    ),
    Request(
        "messages",
        "file-vercel-form",
        parts(
            {
                "type": "file",
                "file": {"data": PDF, "media_type": "application/pdf", "filename": "a.pdf"},
            }
        ),
        lambda m: m.messages[0].content_parts.values[0].file.media_type,
        "application/pdf",
    ),
    Request(
        "messages",
        "cache-control-and-breakpoints",
        chat(
            messages=[
                {
                    "role": "system",
                    "content": "long prompt",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "doc",
                            "cache_control": {"type": "ephemeral"},
                            "prompt_cache_breakpoint": {"mode": "explicit"},
                        }
                    ],
                },
            ],
            prompt_cache_key="k1",
            prompt_cache_retention="24h",
            prompt_cache_options={"ttl": "30m", "mode": "explicit"},
        ),
        lambda m: (m.messages[0].cache_control.ttl, m.prompt_cache_options.mode),
        ("1h", "explicit"),
    ),
    Request(
        "messages",
        "assistant-refusal-parts",
        chat(
            messages=[
                USER,
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                {"role": "assistant", "refusal": "still no", "content": "x"},
            ]
        ),
        lambda m: m.messages[1].content_parts.values[0].refusal,
        "no",
    ),
    # tools and tool_choice ------------------------------------------------------------------
    Request(
        "tools",
        "function-tool-named-choice",
        chat(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "description": "Weather by city",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string", "maxLength": 64}},
                            "required": ["city"],
                            "additionalProperties": False,
                        },
                        "strict": True,
                    },
                }
            ],
            tool_choice={"type": "function", "function": {"name": "weather"}},
            parallel_tool_calls=False,
        ),
        lambda m: (m.tool_choice_named.function.name, m.tools[0].function.strict),
        ("weather", True),
    ),
    Request(
        "tools",
        "custom-tools-allowed-tools",
        chat(
            tools=[
                {"type": "custom", "custom": {"name": "free", "format": {"type": "text"}}},
                {
                    "type": "custom",
                    "custom": {
                        "name": "sql",
                        "description": "SQL only",
                        "format": {
                            "type": "grammar",
                            "grammar": {"definition": "start: 'select'", "syntax": "lark"},
                        },
                    },
                },
            ],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "custom", "custom": {"name": "sql"}}],
                },
            },
        ),
        lambda m: (m.tools[1].custom.format.grammar.syntax, m.tool_choice_named.allowed_tools.mode),
        ("lark", "required"),
    ),
    Request(
        "tools",
        "choice-modes-and-custom",
        chat(
            tools=[{"type": "custom", "custom": {"name": "sql"}}],
            tool_choice={"type": "custom", "custom": {"name": "sql"}},
        ),
        lambda m: m.tool_choice_named.custom.name,
        "sql",
    ),
    Request(
        "tools",
        "choice-string",
        chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="required"),
        lambda m: m.tool_choice_mode,
        "required",
    ),
    Request(
        "tools",
        "legacy-functions",
        chat(
            functions=[{"name": "f", "description": "d", "parameters": {"type": "object"}}],
            function_call={"name": "f"},
        ),
        lambda m: m.function_call_named.name,
        "f",
    ),
    # response_format -------------------------------------------------------------------------
    Request(
        "response_format",
        "text",
        chat(response_format={"type": "text"}),
        lambda m: m.WhichOneof("response_format"),
        "response_format_text",
    ),
    Request(
        "response_format",
        "json_object",
        chat(response_format={"type": "json_object"}),
        lambda m: m.WhichOneof("response_format"),
        "response_format_json_object",
    ),
    Request(
        "response_format",
        "json_schema",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "description": "The answer",
                    "schema": {
                        "type": "object",
                        "properties": {"n": {"type": "integer", "minimum": 3}},
                        "required": ["n"],
                    },
                    "strict": True,
                },
            }
        ),
        lambda m: m.response_format_json_schema.json_schema.name,
        "answer",
    ),
    # reasoning and providerOptions --------------------------------------------------------
    Request(
        "reasoning",
        "reasoning-effort-and-config",
        chat(
            reasoning_effort="high", reasoning={"enabled": True, "effort": "high", "exclude": False}
        ),
        lambda m: (m.reasoning_effort, m.reasoning.effort, m.reasoning.HasField("exclude")),
        ("high", "high", True),
    ),
    Request(
        "reasoning",
        "reasoning-budget",
        chat(reasoning={"max_tokens": 2048}, verbosity="low"),
        lambda m: m.reasoning.max_tokens,
        2048,
    ),
    Request(
        "reasoning",
        "provider-options-gateway",
        chat(
            providerOptions={
                "gateway": {
                    "order": ["bedrock", "anthropic"],
                    "only": ["bedrock", "anthropic", "vertex"],
                    "sort": "ttft",
                    "models": ["openai/gpt-5", "google/gemini-2.5-pro"],
                    "byok": {"anthropic": [{"apiKey": "sk-ant-x"}]},
                    "caching": "auto",
                    "user": "user-1",
                    "tags": ["team:search", "env:prod"],
                },
                "anthropic": {"thinking": {"type": "enabled", "budgetTokens": 1024}},
            },
            models=["anthropic/claude-sonnet-4.5"],
            provider={"sort": "cost"},
        ),
        lambda m: (
            list(m.provider_options.gateway.only),
            m.provider_options.gateway.byok["anthropic"][0]["apiKey"],
            m.provider_options.extra_fields["anthropic"]["thinking"]["type"],
            m.provider.sort,
        ),
        (["bedrock", "anthropic", "vertex"], "sk-ant-x", "enabled", "cost"),
        untyped=("$.provider_options.anthropic",),
    ),
    # audio, modalities, prediction, web search ----------------------------------------------
    Request(
        "audio",
        "audio-output",
        chat(modalities=["text", "audio"], audio={"voice": "alloy", "format": "mp3"}),
        lambda m: (list(m.modalities), m.audio.voice),
        (["text", "audio"], "alloy"),
    ),
    Request(
        "audio",
        "image-output",
        chat(modalities=["text", "image"]),
        lambda m: list(m.modalities),
        ["text", "image"],
    ),
    Request(
        "audio",
        "prediction",
        chat(prediction={"type": "content", "content": [{"type": "text", "text": "draft"}]}),
        lambda m: m.prediction.content_parts.values[0].text,
        "draft",
    ),
    Request(
        "audio",
        "web-search-and-misc",
        chat(
            web_search_options={
                "search_context_size": "high",
                "user_location": {
                    "type": "approximate",
                    "approximate": {"country": "FR", "city": "Paris", "timezone": "Europe/Paris"},
                },
            },
            service_tier="flex",
            store=True,
            metadata={"k": "v"},
            seed=-(2**40),
            stop=["\n\n", "END"],
            logit_bias={"50256": -100},
            moderation={"model": "omni-moderation-latest"},
            safety_identifier="h-1",
        ),
        lambda m: (m.web_search_options.user_location.approximate.city, m.seed),
        ("Paris", -(2**40)),
    ),
    # logprobs ---------------------------------------------------------------------------------
    Request(
        "logprobs",
        "logprobs-stream",
        chat(logprobs=True, top_logprobs=5, stream_options={"include_usage": True}),
        lambda m: (m.top_logprobs, m.stream_options.include_usage),
        (5, True),
        stream=True,
    ),
]


@pytest.mark.parametrize("case", REQUESTS, ids=lambda c: f"{c.family}-{c.name}")
async def test_request_family(upstream: DevUpstream, stubs: Stubs, case: Request) -> None:
    if case.stream:
        message: Message = stream_chat_request_from_json(case.body)
        async for _ in stubs.chat.StreamChatCompletion(message, timeout=10):
            pass
        expected = {**case.body, "stream": True}
    else:
        message = chat_request_from_json(case.body)
        await stubs.chat.CreateChatCompletion(message, timeout=10)
        expected = case.body
    assert sorted(extra_paths(message)) == sorted(case.untyped), "keys left untyped"
    assert case.probe(message) == case.expect
    sent = upstream.requests[-1].json
    assert spec.exact_diff(expected, sent) == []
    assert spec.validation_errors("CreateChatCompletionRequest", sent) == []


# embeddings: inputs and encodings ----------------------------------------------------------

EMBEDDING_REQUESTS = [
    ("text", {"input": "hello"}, lambda m: m.input_text, "hello"),
    ("strings", {"input": ["a", "b"]}, lambda m: list(m.input_strings.values), ["a", "b"]),
    ("tokens", {"input": [1, 2, 3]}, lambda m: list(m.input_tokens.values), [1, 2, 3]),
    (
        "token-lists",
        {"input": [[1], [2, 3]]},
        lambda m: [list(t.values) for t in m.input_token_lists.values],
        [[1], [2, 3]],
    ),
    (
        "options",
        {
            "input": "x",
            "encoding_format": "base64",
            "dimensions": 8,
            "user": "u",
            "providerOptions": {"gateway": {"order": ["openai"]}},
        },
        lambda m: (m.encoding_format, m.dimensions, list(m.provider_options.gateway.order)),
        ("base64", 8, ["openai"]),
    ),
]


@pytest.mark.parametrize(
    ("name", "fields", "probe", "expect"),
    EMBEDDING_REQUESTS,
    ids=[c[0] for c in EMBEDDING_REQUESTS],
)
async def test_embeddings_request_family(
    upstream: DevUpstream,
    stubs: Stubs,
    name: str,
    fields: dict[str, Any],
    probe: Probe,
    expect: Any,
) -> None:
    body = {"model": "openai/text-embedding-3-small", **fields}
    message = embeddings_request_from_json(body)
    await stubs.embeddings.CreateEmbeddings(message, timeout=10)
    assert extra_paths(message) == []
    assert probe(message) == expect
    sent = upstream.requests[-1].json
    assert spec.exact_diff(body, sent) == []
    assert spec.validation_errors("CreateEmbeddingRequest", sent) == []


# responses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """An upstream answer to `rpc` (`chat`, `stream`, `embeddings`, `model` or `models`)."""

    family: str
    name: str
    rpc: str
    data: Any
    probe: Probe
    expect: Any
    untyped: tuple[str, ...] = ()
    """Paths expected in extra_fields: the nulls and empty arrays of the data."""


def completion(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_741_569_952,
        "model": MODEL,
        "choices": [choice],
        **fields,
    }


def chunk(delta: dict[str, Any], finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_741_569_952,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **fields,
    }


USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
        "cached_tokens": 3,
        "audio_tokens": 0,
        "text_tokens": 16,
        "image_tokens": 0,
        "cache_write_tokens": 2,
    },
    "completion_tokens_details": {
        "reasoning_tokens": 4,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 1,
        "rejected_prediction_tokens": 2,
        "text_tokens": 6,
        "image_tokens": 0,
    },
}
LOGPROB = {
    "token": "Hi",
    "logprob": -0.31725305,
    "bytes": [72, 105],
    "top_logprobs": [
        {"token": "Hi", "logprob": -0.31725305, "bytes": [72, 105]},
        {"token": "Hello", "logprob": -1.3190403, "bytes": None},
    ],
}
VECTOR = [0.0023064255, -0.009327292, 0.5]
VECTOR_B64 = base64.b64encode(struct.pack("<3f", *VECTOR)).decode()
PRICED_MODEL = {
    "id": "anthropic/claude-sonnet-4.5",
    "object": "model",
    "created": 1_759_000_000,
    "owned_by": "anthropic",
    "name": "Claude Sonnet 4.5",
    "description": "Anthropic's model",
    "released": 1_759_000_000,
    "context_window": 200_000,
    "max_tokens": 64_000,
    "type": "language",
    "tags": ["tool-use", "reasoning", "vision", "file-input"],
    "pricing": {
        "input": "0.000003",
        "output": "0.000015",
        "input_cache_read": "0.0000003",
        "input_cache_write": "0.00000375",
        "web_search": "0.01",
        "input_tiers": [
            {"cost": "0.000003", "min": 0, "max": 200_000},
            {"cost": "0.000006", "min": 200_001},
        ],
        "output_tiers": [{"cost": "0.000015", "min": 0}],
    },
}

RESPONSES = [
    Response(
        "messages",
        "refusal-annotations-audio",
        "chat",
        completion(
            {
                "role": "assistant",
                "content": None,
                "refusal": "I can't.",
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "start_index": 0,
                            "end_index": 5,
                            "url": "https://example.com",
                            "title": "Example",
                        },
                    }
                ],
                "audio": {
                    "id": "a1",
                    "expires_at": 1_741_570_000,
                    "data": "UklGRg==",
                    "transcript": "hi",
                },
            },
            service_tier="priority",
            system_fingerprint="fp_1",
            metadata={"k": "v"},
        ),
        lambda r: (r.choices[0].message.annotations[0].url_citation.end_index, r.service_tier),
        (5, "priority"),
        ("$.choices[0].logprobs", "$.choices[0].message.content"),
    ),
    Response(
        "messages",
        "vercel-reasoning-images-metadata",
        "chat",
        completion(
            {
                "role": "assistant",
                "content": "done",
                "reasoning": "thinking...",
                "reasoning_details": [
                    {
                        "type": "reasoning.text",
                        "text": "t",
                        "signature": "sig",
                        "format": "anthropic-claude-v1",
                        "index": 0,
                    },
                    {"type": "reasoning.encrypted", "data": "enc", "id": "r1"},
                    {"type": "reasoning.summary", "summary": "s"},
                ],
                "images": [{"type": "image_url", "image_url": {"url": PNG}}],
            },
            providerMetadata={
                "gateway": {"cost": "0.0001", "routing": {"attempts": 2, "provider": "bedrock"}}
            },
        ),
        lambda r: (
            r.choices[0].message.reasoning_details[0].signature,
            r.provider_metadata["gateway"]["routing"]["attempts"],
        ),
        ("sig", 2),
        ("$.choices[0].logprobs",),
    ),
    Response(
        "tools",
        "tool-calls",
        "chat",
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "c2", "type": "custom", "custom": {"name": "sql", "input": "select 1"}},
                ],
                "function_call": {"name": "f", "arguments": "{}"},
            }
        ),
        lambda r: r.choices[0].message.tool_calls[1].custom.name,
        "sql",
        ("$.choices[0].logprobs", "$.choices[0].message.content"),
    ),
    Response(
        "logprobs",
        "content-and-refusal",
        "chat",
        {
            **completion({"role": "assistant", "content": "Hi"}),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi"},
                    "finish_reason": "stop",
                    "logprobs": {"content": [LOGPROB], "refusal": None},
                }
            ],
        },
        lambda r: list(r.choices[0].logprobs.content[0].bytes),
        [72, 105],
        (
            "$.choices[0].logprobs.refusal",
            "$.choices[0].logprobs.content[0].top_logprobs[1].bytes",
        ),
    ),
    Response(
        "usage",
        "every-detail",
        "chat",
        completion({"role": "assistant", "content": "x"}, usage=USAGE),
        lambda r: (
            r.usage.prompt_tokens_details.cache_write_tokens,
            r.usage.completion_tokens_details.rejected_prediction_tokens,
        ),
        (2, 2),
        ("$.choices[0].logprobs",),
    ),
    Response(
        "usage",
        "stream-deltas-and-final-usage",
        "stream",
        [
            chunk({"role": "assistant", "content": "", "refusal": None}, obfuscation="pad"),
            chunk(
                {"reasoning": "th", "reasoning_details": [{"type": "reasoning.text", "text": "th"}]}
            ),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({"images": [{"type": "image_url", "image_url": {"url": PNG}}]}),
            chunk({"annotations": [{"type": "url_citation", "url_citation": {"url": "u"}}]}),
            chunk({}, "tool_calls", system_fingerprint="fp", service_tier="default"),
            {
                **chunk({}),
                "choices": [],
                "usage": USAGE,
                "providerMetadata": {"gateway": {"cost": "0.1"}},
            },
        ],
        lambda chunks: (
            chunks[3].choices[0].delta.tool_calls[0].function.arguments,
            chunks[7].usage.total_tokens,
        ),
        ("{}", 29),
        # Until the last chunk finish_reason is null, the usage chunk's choices empty.
        ("$.choices[0].finish_reason",) * 6 + ("$.choices[0].delta.refusal", "$.choices"),
    ),
    Response(
        "embeddings",
        "floats",
        "embeddings",
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": VECTOR}],
            "model": "openai/text-embedding-3-small",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
            "providerMetadata": {"gateway": {"cost": "0.00000002"}},
        },
        lambda r: list(r.data[0].embedding_float.values),
        VECTOR,
    ),
    Response(
        "embeddings",
        "base64",
        "embeddings",
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": VECTOR_B64}],
            "model": "openai/text-embedding-3-small",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        },
        lambda r: [round(v, 6) for v in struct.unpack("<3f", r.data[0].embedding_base64)],
        [round(v, 6) for v in VECTOR],
    ),
    Response(
        "models",
        "pricing-tiers",
        "model",
        PRICED_MODEL,
        lambda m: (
            m.pricing.input_tiers[1].min,
            m.pricing.input_tiers[1].HasField("max"),
            m.context_window,
        ),
        (200_001, False, 200_000),
    ),
    Response(
        "models",
        "openai-shutdown-date",
        "models",
        {
            "object": "list",
            "data": [
                {
                    "id": "gpt-4o",
                    "object": "model",
                    "created": 1,
                    "owned_by": "openai",
                    "shutdown_date": None,
                },
                {
                    "id": "gpt-3",
                    "object": "model",
                    "created": 1,
                    "owned_by": "openai",
                    "shutdown_date": "2026-10-23",
                },
                PRICED_MODEL,
            ],
        },
        lambda r: (r.data[0].HasField("shutdown_date"), r.data[1].shutdown_date),
        (False, "2026-10-23"),
        ("$.data[0].shutdown_date",),
    ),
]


async def _call(
    upstream: DevUpstream, stubs: Stubs, case: Response, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, list[Message]]:
    """Program the upstream with the case's JSON; return the bridge's messages and JSON."""
    question = chat_pb2.ChatMessage(role="user", content_text="hi")
    if case.rpc == "chat":
        upstream.program(MODEL, Status(200, json.dumps(case.data)))
        reply = await stubs.chat.CreateChatCompletion(
            chat_pb2.CreateChatCompletionRequest(model=MODEL, messages=[question]), timeout=10
        )
        return to_json(reply), [reply]
    if case.rpc == "stream":
        upstream.program(
            MODEL,
            Status(200, spec.sse_body(case.data), headers={"content-type": "text/event-stream"}),
        )
        streaming = chat_pb2.StreamChatCompletionRequest(model=MODEL, messages=[question])
        chunks = [c async for c in stubs.chat.StreamChatCompletion(streaming, timeout=10)]
        return [to_json(c) for c in chunks], list(chunks)
    if case.rpc == "embeddings":
        model = "openai/text-embedding-3-small"
        upstream.program(model, Status(200, json.dumps(case.data)))
        embed = embeddings_pb2.CreateEmbeddingsRequest(model=model, input_text="hi")
        reply = await stubs.embeddings.CreateEmbeddings(embed, timeout=10)
        return to_json(reply), [reply]
    if case.rpc == "model":
        upstream.program(case.data["id"], Status(200, json.dumps(case.data)))
        retrieve = models_pb2.RetrieveModelRequest(model=case.data["id"])
        reply = await stubs.models.RetrieveModel(retrieve, timeout=10)
        return to_json(reply.model), [reply.model]
    monkeypatch.setattr(devapi, "MODELS", tuple(case.data["data"]))
    reply = await stubs.models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    return to_json(reply), [reply]


@pytest.mark.parametrize("case", RESPONSES, ids=lambda c: f"{c.family}-{c.name}")
async def test_response_family(
    upstream: DevUpstream, stubs: Stubs, case: Response, monkeypatch: pytest.MonkeyPatch
) -> None:
    returned, messages = await _call(upstream, stubs, case, monkeypatch)
    assert spec.exact_diff(case.data, returned) == []
    untyped = [p for m in messages for p in extra_paths(m)]
    assert sorted(untyped) == sorted(case.untyped)
    assert case.probe(messages if case.rpc == "stream" else messages[0]) == case.expect
