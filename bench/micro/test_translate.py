"""Microbenchmarks of the bridge's hot-path functions (`make bench-micro`, not `make test`).

Each benchmark also checks its result, so a faster function that stopped being right fails
here instead of looking good.
"""

from __future__ import annotations

import json
from typing import Any

from aigateway.v1 import chat_pb2, embeddings_pb2, responses_pb2
from aigateway_json import from_json, to_json
from aigateway_json.translate import generic_from_json
from pytest_benchmark.fixture import BenchmarkFixture

from bridge.config import Config
from bridge.upstream.body import loads
from bridge.upstream.client import Upstream
from bridge.upstream.sse import SSEDecoder


def test_chunk_from_json(benchmark: BenchmarkFixture, chat_chunk: dict[str, Any]) -> None:
    msg = benchmark(from_json, chat_pb2.StreamChatCompletionResponse, chat_chunk)
    assert msg.choices[0].delta.content == " token5"
    assert to_json(msg) == chat_chunk


def test_chunk_from_json_generic(benchmark: BenchmarkFixture, chat_chunk: dict[str, Any]) -> None:
    """The same by the generic walk alone (what from_json falls back to)."""
    msg = benchmark(generic_from_json, chat_pb2.StreamChatCompletionResponse, chat_chunk)
    assert msg == from_json(chat_pb2.StreamChatCompletionResponse, chat_chunk)


def test_chunk_without_nulls_from_json(
    benchmark: BenchmarkFixture, chat_chunk: dict[str, Any]
) -> None:
    """A chunk whose choice has no `logprobs: null` / `finish_reason: null` (no extra_fields)."""
    choice = {k: v for k, v in chat_chunk["choices"][0].items() if v is not None}
    chunk = {**chat_chunk, "choices": [choice]}
    msg = benchmark(from_json, chat_pb2.StreamChatCompletionResponse, chunk)
    assert to_json(msg) == chunk


def test_response_text_delta_from_json(benchmark: BenchmarkFixture) -> None:
    """One Responses API `response.output_text.delta` event (a tagged message)."""
    event = {
        "type": "response.output_text.delta",
        "sequence_number": 7,
        "item_id": "msg_123",
        "output_index": 0,
        "content_index": 0,
        "delta": " token5",
        "logprobs": [],
    }
    msg = benchmark(from_json, responses_pb2.StreamResponseResponse, event)
    assert msg.WhichOneof("event") == "response_output_text_delta"
    assert to_json(msg) == event


def test_chunk_from_sse_text(benchmark: BenchmarkFixture, chat_chunk: dict[str, Any]) -> None:
    """What the bridge does per streamed chunk: JSON text to message to wire bytes."""
    text = json.dumps(chat_chunk)

    def per_chunk() -> bytes:
        msg = from_json(chat_pb2.StreamChatCompletionResponse, json.loads(text))
        return bytes(msg.SerializeToString())

    wire = benchmark(per_chunk)
    assert chat_pb2.StreamChatCompletionResponse.FromString(wire).choices[0].index == 0


def test_sse_decode_stream(benchmark: BenchmarkFixture, sse_stream: bytes) -> None:
    """100 events arriving in 1 KiB reads, as an HTTP client hands them over."""
    parts = [sse_stream[i : i + 1024] for i in range(0, len(sse_stream), 1024)]

    def decode() -> int:
        decoder = SSEDecoder()
        return sum(len(decoder.feed(part)) for part in parts)

    assert benchmark(decode) == 101


def test_chat_response_from_json(
    benchmark: BenchmarkFixture, chat_response: dict[str, Any]
) -> None:
    msg = benchmark(from_json, chat_pb2.CreateChatCompletionResponse, chat_response)
    assert to_json(msg) == chat_response


def test_chat_response_from_json_generic(
    benchmark: BenchmarkFixture, chat_response: dict[str, Any]
) -> None:
    msg = benchmark(generic_from_json, chat_pb2.CreateChatCompletionResponse, chat_response)
    assert msg == from_json(chat_pb2.CreateChatCompletionResponse, chat_response)


def test_chat_request_to_json(benchmark: BenchmarkFixture, chat_request: dict[str, Any]) -> None:
    msg = from_json(chat_pb2.StreamChatCompletionRequest, chat_request)
    assert benchmark(to_json, msg) == chat_request


def test_embeddings_parse_json(benchmark: BenchmarkFixture, embeddings_json: bytes) -> None:
    """The bridge's JSON decoding of a 4.9 MB answer (orjson, json as the fallback)."""
    data = benchmark.pedantic(  # type: ignore[no-untyped-call]
        loads, args=(embeddings_json,), rounds=5, iterations=1
    )
    assert data == json.loads(embeddings_json)


def test_embeddings_parse_json_stdlib(benchmark: BenchmarkFixture, embeddings_json: bytes) -> None:
    """The same with the standard library, for comparison."""
    data = benchmark.pedantic(  # type: ignore[no-untyped-call]
        json.loads, args=(embeddings_json,), rounds=5, iterations=1
    )
    assert len(data["data"]) == 256


def test_embeddings_from_json(benchmark: BenchmarkFixture, embeddings_json: bytes) -> None:
    """256 x 1536 floats from decoded JSON to a message."""
    data = json.loads(embeddings_json)
    msg = benchmark.pedantic(  # type: ignore[no-untyped-call]
        from_json, args=(embeddings_pb2.CreateEmbeddingsResponse, data), rounds=5, iterations=1
    )
    assert len(msg.data) == 256
    assert list(msg.data[3].embedding_float.values) == data["data"][3]["embedding"]


def test_embeddings_serialize(benchmark: BenchmarkFixture, embeddings_json: bytes) -> None:
    msg = from_json(embeddings_pb2.CreateEmbeddingsResponse, json.loads(embeddings_json))
    wire = benchmark.pedantic(  # type: ignore[no-untyped-call]
        msg.SerializeToString, rounds=5, iterations=1
    )
    assert len(wire) < len(embeddings_json)


def test_headers_for(benchmark: BenchmarkFixture) -> None:
    upstream = Upstream(Config.load(None, {}, upstream_url="http://127.0.0.1:9/v1"))
    metadata = (
        ("authorization", "Bearer sk-caller"),
        ("x-request-id", "r1"),
        ("user-agent", "grpc-python/1.85"),
        ("x-trace-bin", b"\x00"),
    )
    headers = benchmark(upstream.headers_for, metadata)
    assert headers["authorization"] == "Bearer sk-caller"
