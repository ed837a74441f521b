"""What the performance work (issue 7, bench/README.md) changed, checked through a real bridge.

Speed itself is the benchmark's job (`make bench`); these tests pin the behaviour the faster
paths must keep: a finished stream leaves its upstream connection for the next call, JSON the
fast decoder refuses is still read, and the vector fast path is exact and refuses what the
typed field cannot hold.
"""

from __future__ import annotations

import math

from aigateway.v1 import chat_pb2, common_pb2, embeddings_pb2
from aigateway_json import struct_to_python

from dev.upstream.faults import Status
from dev.upstream.server import DevUpstream
from tests.conftest import Stubs


def _stream_request() -> chat_pb2.StreamChatCompletionRequest:
    return chat_pb2.StreamChatCompletionRequest(
        model="openai/gpt-4o-mini",
        messages=[chat_pb2.ChatMessage(role="user", content_text="Count to three")],
    )


def _embeddings_request(model: str) -> embeddings_pb2.CreateEmbeddingsRequest:
    return embeddings_pb2.CreateEmbeddingsRequest(
        model=model, input_strings=common_pb2.StringList(values=["a", "b"])
    )


async def test_streams_one_after_another_share_one_upstream_connection(
    stubs: Stubs, upstream: DevUpstream
) -> None:
    for _ in range(3):
        chunks = [chunk async for chunk in stubs.chat.StreamChatCompletion(_stream_request())]
        assert chunks, "each stream delivers its chunks"
    # Each stream was read to the end of its body after [DONE], so httpx kept the connection
    # (before, every stream dropped it and the next one opened a new one).
    assert len(upstream.requests) == 3
    assert upstream.connections_accepted == 1


async def test_upstream_json_with_nan_and_huge_integers_is_still_read(
    stubs: Stubs, upstream: DevUpstream
) -> None:
    """orjson refuses NaN; the standard library reads it, as the bridge always did."""
    body = (
        b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
        b'"finish_reason":"stop"}],"x_score":NaN,"x_big":123456789012345678901234567890}'
    )
    upstream.program("nan-model", Status(200, body))
    response = await stubs.chat.CreateChatCompletion(
        chat_pb2.CreateChatCompletionRequest(
            model="nan-model",
            messages=[chat_pb2.ChatMessage(role="user", content_text="hi")],
        )
    )
    assert response.choices[0].message.content == "hi"
    extra = struct_to_python(response.extra_fields)
    assert math.isnan(extra["x_score"])
    assert extra["x_big"] == float(123456789012345678901234567890)


async def test_vectors_with_integers_become_exact_doubles(
    stubs: Stubs, upstream: DevUpstream
) -> None:
    vector = [0, 1, -2, 0.1, 2**53, -1e-300, 1.7976931348623157e308]
    upstream.program(
        "int-vectors",
        Status(
            200,
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "model": "int-vectors",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            },
        ),
    )
    response = await stubs.embeddings.CreateEmbeddings(_embeddings_request("int-vectors"))
    values = list(response.data[0].embedding_float.values)
    assert values == [float(v) for v in vector]
    assert all(type(v) is float for v in values)


async def test_a_vector_holding_a_bool_is_kept_as_json_not_as_numbers(
    stubs: Stubs, upstream: DevUpstream
) -> None:
    """True is not the number 1 here: the whole vector goes to extra_fields unchanged."""
    upstream.program(
        "bool-vectors",
        Status(
            200,
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, True, 2]}],
                "model": "bool-vectors",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            },
        ),
    )
    response = await stubs.embeddings.CreateEmbeddings(_embeddings_request("bool-vectors"))
    item = response.data[0]
    assert item.WhichOneof("embedding") is None
    assert struct_to_python(item.extra_fields)["embedding"] == [0.5, True, 2]
