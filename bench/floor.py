"""The floor: a bare grpc.aio server with the bridge's services and no upstream at all.

It answers every call with a prebuilt message (a stream with 100 prebuilt chunks), so
measuring it with the same load client as the bridge shows what gRPC in Python costs on
this machine by itself, and by difference what the bridge adds on top. Prints its port.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aigateway.v1 import chat_pb2, chat_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent / "micro"))
from aigateway_json import from_json
from conftest import chunk

CHUNKS = [from_json(chat_pb2.StreamChatCompletionResponse, chunk(i, i == 99)) for i in range(100)]
ANSWER = from_json(
    chat_pb2.CreateChatCompletionResponse,
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1732000000,
        "model": "openai/gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " token" * 50},
                "finish_reason": "stop",
            }
        ],
    },
)


class Chat(chat_pb2_grpc.ChatServiceServicer):
    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateChatCompletionResponse:
        return ANSWER

    async def StreamChatCompletion(
        self, request: chat_pb2.StreamChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.StreamChatCompletionResponse]:
        if request.model.startswith("bench-paced-"):
            # As bench/upstream's paced model: RATExCOUNT chunks on a fixed schedule, each
            # stamped with the wall-clock time it was made (bench/capacity.py reads it).
            rate, count = map(int, request.model[len("bench-paced-") :].split("x"))
            loop = asyncio.get_running_loop()
            begin = loop.time()
            for i in range(count):
                delay = begin + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                message = chat_pb2.StreamChatCompletionResponse()
                message.CopyFrom(CHUNKS[1])
                message.id = f"chatcmpl-t{time.time_ns()}"
                yield message
            return
        for message in CHUNKS:
            yield message


async def serve() -> None:
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(Chat(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"floor listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve())
