"""Shared inputs for the microbenchmarks: the same shapes bench/upstream serves."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import pytest


def chunk(i: int, last: bool = False) -> dict[str, Any]:
    delta: dict[str, Any] = (
        {"role": "assistant", "content": ""} if i == 0 else {"content": f" token{i}"}
    )
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1732000000,
        "model": "openai/gpt-4o-mini",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": "stop" if last else None,
            }
        ],
    }


@pytest.fixture(scope="session")
def chat_chunk() -> dict[str, Any]:
    return chunk(5)


@pytest.fixture(scope="session")
def sse_stream() -> bytes:
    events = [b"data: " + json.dumps(chunk(i, i == 99)).encode() + b"\n\n" for i in range(100)]
    return b"".join(events) + b"data: [DONE]\n\n"


@pytest.fixture(scope="session")
def chat_response() -> dict[str, Any]:
    text = "".join(f" token{i}" for i in range(50))
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1732000000,
        "model": "openai/gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 50,
            "total_tokens": 62,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }


@pytest.fixture(scope="session")
def chat_request() -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Count from one to fifty."},
        ],
        "temperature": 0.0,
        "max_tokens": 256,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _vectors(count: int, dims: int) -> list[list[float]]:
    rng = random.Random(7)
    # float32 values, as the upstream's JSON carries them.
    return [
        [struct.unpack("f", struct.pack("f", rng.gauss(0, 0.03)))[0] for _ in range(dims)]
        for _ in range(count)
    ]


@pytest.fixture(scope="session")
def embeddings_json() -> bytes:
    data = [
        {"object": "embedding", "index": i, "embedding": v}
        for i, v in enumerate(_vectors(256, 1536))
    ]
    return json.dumps(
        {
            "object": "list",
            "data": data,
            "model": "openai/text-embedding-3-small",
            "usage": {"prompt_tokens": 2048, "total_tokens": 2048},
        }
    ).encode()
