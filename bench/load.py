"""One load client: drives one path through one scenario and prints its numbers as JSON.

`bench/run.py` starts this in a process of its own for every measurement, so that a
client never shares an interpreter (or a GIL) with the bridge, the upstream or another
client. Every path sends the same request and does what a real caller does with the
answer: the REST clients decode the JSON, the gRPC client gets the decoded message.

    python bench/load.py --path grpc --scenario unary --target 127.0.0.1:50051 -c 32
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any, cast

PATHS = ("httpx", "openai", "grpc")
SCENARIOS = ("unary", "stream", "responses-stream", "embed", "embed64", "idle", "wire")
MODEL = "openai/gpt-4o-mini"
EMBED_MODEL = "openai/text-embedding-3-small"
EMBED_INPUTS = 256
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Count from one to fifty."},
]
CHAT_BODY: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "temperature": 0.0}
EMBED_INPUT = [f"benchmark sentence number {i}" for i in range(EMBED_INPUTS)]
# A streamed Response (POST /responses): the same prompt; its "chunks" are the
# `response.output_text.delta` events (100 from bench/upstream, among 108 events).
INSTRUCTIONS = MESSAGES[0]["content"]
INPUT = MESSAGES[1]["content"]
RESPONSES_BODY: dict[str, Any] = {
    "model": MODEL,
    "instructions": INSTRUCTIONS,
    "input": INPUT,
    "temperature": 0.0,
    "stream": True,
}
TEXT_DELTA = "response.output_text.delta"

Result = dict[str, Any]
Call = Callable[[], Awaitable[int]]
"""One request; returns how many stream chunks it received (1 for unary calls)."""


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def drive(call: Call, concurrency: int, warmup: float, seconds: float) -> Result:
    """`concurrency` workers call in a loop; only calls started after warm-up are counted."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    cpu_start = time.process_time()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    latencies: list[float] = []
    first_chunks: list[float] = []
    chunks = 0
    total = 0

    async def worker() -> None:
        nonlocal chunks, total
        while True:
            began = loop.time()
            if began >= stop_at:
                return
            received = await call()
            ended = loop.time()
            total += 1
            if began >= measure_from:
                latencies.append(ended - began)
                chunks += received

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - measure_from
    # The client's own CPU (all its threads) per call, warm-up included like the calls.
    client_cpu = time.process_time() - cpu_start
    latencies.sort()
    return {
        "requests": len(latencies),
        "total_requests": total,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "chunks": chunks,
        "chunks_per_s": chunks / elapsed,
        "first_chunks": first_chunks,
        "client_cpu_ms_per_request": 1000 * client_cpu / max(total, 1),
    }


# --------------------------------------------------------------------------- direct REST


async def run_httpx(args: argparse.Namespace) -> Result:
    import httpx

    base = f"http://{args.target}/v1"
    limits = httpx.Limits(
        max_connections=args.concurrency + 8, max_keepalive_connections=args.concurrency + 8
    )
    first: list[float] = []
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        headers = {"authorization": "Bearer bench"}

        async def unary() -> int:
            response = await client.post("/chat/completions", json=CHAT_BODY, headers=headers)
            response.raise_for_status()
            response.json()
            return 1

        async def stream() -> int:
            began = time.perf_counter()
            chunks = 0
            body = {**CHAT_BODY, "stream": True}
            async with client.stream(
                "POST", "/chat/completions", json=body, headers=headers
            ) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    json.loads(payload)
                    if chunks == 0:
                        first.append(time.perf_counter() - began)
                    chunks += 1
            return chunks

        async def responses_stream() -> int:
            # Named events, no [DONE]: every data line is decoded, the deltas counted.
            began = time.perf_counter()
            chunks = 0
            async with client.stream(
                "POST", "/responses", json=RESPONSES_BODY, headers=headers
            ) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    if json.loads(line[5:])["type"] == TEXT_DELTA:
                        if chunks == 0:
                            first.append(time.perf_counter() - began)
                        chunks += 1
            return chunks

        async def embed() -> int:
            body = {"model": EMBED_MODEL, "input": EMBED_INPUT, "encoding_format": "float"}
            response = await client.post("/embeddings", json=body, headers=headers)
            response.raise_for_status()
            response.json()
            return 1

        async def embed64() -> int:
            body = {"model": EMBED_MODEL, "input": EMBED_INPUT, "encoding_format": "base64"}
            response = await client.post("/embeddings", json=body, headers=headers)
            response.raise_for_status()
            for item in response.json()["data"]:
                floats(base64.b64decode(item["embedding"]))
            return 1

        if args.scenario == "wire":
            sizes = {}
            for fmt in ("float", "base64"):
                body = {"model": EMBED_MODEL, "input": EMBED_INPUT, "encoding_format": fmt}
                response = await client.post("/embeddings", json=body, headers=headers)
                sizes[fmt] = len(response.content)
            return {"json_float_bytes": sizes["float"], "json_base64_bytes": sizes["base64"]}
        calls = {
            "unary": unary,
            "stream": stream,
            "responses-stream": responses_stream,
            "embed": embed,
            "embed64": embed64,
        }
        result = await drive(calls[args.scenario], args.concurrency, args.warmup, args.seconds)
    result["first_chunks"] = first
    return result


def floats(raw: bytes) -> list[float]:
    """Little-endian float32 bytes as Python floats, what the openai SDK hands its caller."""
    return array("f", raw).tolist()


# --------------------------------------------------------------------------- openai SDK


async def run_openai(args: argparse.Namespace) -> Result:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    SDK_MESSAGES = cast(list[ChatCompletionMessageParam], MESSAGES)
    first: list[float] = []
    client = openai.AsyncOpenAI(
        base_url=f"http://{args.target}/v1", api_key="bench", max_retries=0, timeout=60
    )
    async with client:

        async def unary() -> int:
            await client.chat.completions.create(
                model=MODEL, messages=SDK_MESSAGES, temperature=0.0
            )
            return 1

        async def stream() -> int:
            began = time.perf_counter()
            chunks = 0
            response = await client.chat.completions.create(
                model=MODEL, messages=SDK_MESSAGES, temperature=0.0, stream=True
            )
            async for _chunk in response:
                if chunks == 0:
                    first.append(time.perf_counter() - began)
                chunks += 1
            return chunks

        async def responses_stream() -> int:
            # The SDK's helper: typed events plus the accumulated Response snapshot.
            began = time.perf_counter()
            chunks = 0
            async with client.responses.stream(
                model=MODEL, instructions=INSTRUCTIONS, input=INPUT, temperature=0.0
            ) as events:
                async for event in events:
                    if event.type == TEXT_DELTA:
                        if chunks == 0:
                            first.append(time.perf_counter() - began)
                        chunks += 1
            return chunks

        async def embed() -> int:
            await client.embeddings.create(
                model=EMBED_MODEL, input=EMBED_INPUT, encoding_format="float"
            )
            return 1

        async def embed64() -> int:
            # The SDK's own default: it asks for base64 and decodes it into floats itself.
            await client.embeddings.create(model=EMBED_MODEL, input=EMBED_INPUT)
            return 1

        calls = {
            "unary": unary,
            "stream": stream,
            "responses-stream": responses_stream,
            "embed": embed,
            "embed64": embed64,
        }
        result = await drive(calls[args.scenario], args.concurrency, args.warmup, args.seconds)
    result["first_chunks"] = first
    return result


# --------------------------------------------------------------------------- the bridge


async def run_grpc(args: argparse.Namespace) -> Result:
    import grpc
    from aigateway.v1 import (
        chat_pb2,
        chat_pb2_grpc,
        common_pb2,
        embeddings_pb2,
        embeddings_pb2_grpc,
        responses_pb2,
        responses_pb2_grpc,
    )

    messages = [chat_pb2.ChatMessage(role=m["role"], content_text=m["content"]) for m in MESSAGES]
    unary_request = chat_pb2.CreateChatCompletionRequest(
        model=MODEL, messages=messages, temperature=0.0
    )
    stream_request = chat_pb2.StreamChatCompletionRequest(
        model=MODEL, messages=messages, temperature=0.0
    )
    responses_request = responses_pb2.StreamResponseRequest(
        model=MODEL, instructions=INSTRUCTIONS, input_text=INPUT, temperature=0.0
    )
    embed_request = embeddings_pb2.CreateEmbeddingsRequest(
        model=EMBED_MODEL,
        input_strings=common_pb2.StringList(values=EMBED_INPUT),
        encoding_format="float",
    )
    metadata = (("authorization", "Bearer bench"),)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    first: list[float] = []

    if args.scenario == "idle":
        return await idle_streams(args, stream_request, metadata, options)

    async with grpc.aio.insecure_channel(args.target, options=options) as channel:
        chat = chat_pb2_grpc.ChatServiceStub(channel)
        embeddings = embeddings_pb2_grpc.EmbeddingsServiceStub(channel)
        responses = responses_pb2_grpc.ResponsesServiceStub(channel)

        async def unary() -> int:
            await chat.CreateChatCompletion(unary_request, metadata=metadata)
            return 1

        async def stream() -> int:
            began = time.perf_counter()
            chunks = 0
            async for _chunk in chat.StreamChatCompletion(stream_request, metadata=metadata):
                if chunks == 0:
                    first.append(time.perf_counter() - began)
                chunks += 1
            return chunks

        async def responses_stream() -> int:
            began = time.perf_counter()
            chunks = 0
            async for event in responses.StreamResponse(responses_request, metadata=metadata):
                if event.WhichOneof("event") == "response_output_text_delta":
                    if chunks == 0:
                        first.append(time.perf_counter() - began)
                    chunks += 1
            return chunks

        async def embed() -> int:
            await embeddings.CreateEmbeddings(embed_request, metadata=metadata)
            return 1

        embed64_request = embeddings_pb2.CreateEmbeddingsRequest()
        embed64_request.CopyFrom(embed_request)
        embed64_request.encoding_format = "base64"

        async def embed64() -> int:
            response = await embeddings.CreateEmbeddings(embed64_request, metadata=metadata)
            for item in response.data:
                floats(item.embedding_base64)
            return 1

        if args.scenario == "wire":
            sizes = {}
            for fmt in ("float", "base64"):
                request = embeddings_pb2.CreateEmbeddingsRequest()
                request.CopyFrom(embed_request)
                request.encoding_format = fmt
                response = await embeddings.CreateEmbeddings(request, metadata=metadata)
                # The gRPC message as framed on the wire: 5-byte prefix + protobuf bytes.
                sizes[fmt] = response.ByteSize() + 5
            return {"proto_float_bytes": sizes["float"], "proto_base64_bytes": sizes["base64"]}
        calls = {
            "unary": unary,
            "stream": stream,
            "responses-stream": responses_stream,
            "embed": embed,
            "embed64": embed64,
        }
        result = await drive(calls[args.scenario], args.concurrency, args.warmup, args.seconds)
    result["first_chunks"] = first
    return result


async def idle_streams(
    args: argparse.Namespace, request: Any, metadata: Any, options: Any
) -> Result:
    """Open `concurrency` streams that stay open, say so, and hold them until told to stop."""
    import grpc
    from aigateway.v1 import chat_pb2_grpc

    idle = type(request)()
    idle.CopyFrom(request)
    idle.model = "bench-idle"
    # HTTP/2 lets a server cap the streams of one connection (gRPC's default is 100), so
    # the streams are spread over connections of their own, as many callers would be.
    options = [*options, ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(args.target, options=options)
        for _ in range(-(-args.concurrency // 50))
    ]
    stubs = [chat_pb2_grpc.ChatServiceStub(channel) for channel in channels]
    calls = [
        stubs[i % len(stubs)].StreamChatCompletion(idle, metadata=metadata)
        for i in range(args.concurrency)
    ]
    began = time.perf_counter()
    opened = 0
    for batch in range(0, len(calls), 100):
        firsts = await asyncio.gather(*(c.read() for c in calls[batch : batch + 100]))
        opened += sum(1 for f in firsts if f is not grpc.aio.EOF)
    print(json.dumps({"ready": opened, "open_seconds": time.perf_counter() - began}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()
    return {"streams": opened}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", choices=PATHS, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT of the upstream or bridge")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    runner = {"httpx": run_httpx, "openai": run_openai, "grpc": run_grpc}[args.path]
    result = asyncio.run(runner(args))
    first = sorted(result.pop("first_chunks", []))
    if first:
        result["ttfc_p50_ms"] = percentile(first, 0.5) * 1000
        result["ttfc_p99_ms"] = percentile(first, 0.99) * 1000
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
