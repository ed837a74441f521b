"""`make demo`: the whole path offline, in one process.

Starts the local development upstream and the bridge on free loopback ports, then acts as
a client: lists models, streams a chat token by token, and prints what a caller sees.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc
from aigateway.v1 import chat_pb2, chat_pb2_grpc, models_pb2, models_pb2_grpc

from bridge.config import Config
from bridge.server import assembly
from dev.upstream.server import DevUpstream


async def run_demo(prompt: str) -> int:
    async with DevUpstream(stream_interval=0.03) as upstream:
        config = Config.load(
            environ={}, listen="127.0.0.1:0", upstream_url=upstream.url, api_key="sk-demo"
        )
        bridge = await assembly.start(config)
        print(f"dev upstream: {upstream.url}")
        print(f"bridge:       127.0.0.1:{bridge.port} (gRPC)\n")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
                models = await models_pb2_grpc.ModelsServiceStub(channel).ListModels(
                    models_pb2.ListModelsRequest(), timeout=5
                )
                print("models:", ", ".join(m.id for m in models.data))
                request = chat_pb2.StreamChatCompletionRequest(
                    model="openai/gpt-4o-mini",
                    messages=[chat_pb2.ChatMessage(role="user", content_text=prompt)],
                    stream_options=chat_pb2.StreamOptions(include_usage=True),
                )
                print(f"\nuser: {prompt}\nassistant: ", end="", flush=True)
                chat = chat_pb2_grpc.ChatServiceStub(channel)
                async for chunk in chat.StreamChatCompletion(request, timeout=30):
                    for choice in chunk.choices:
                        sys.stdout.write(choice.delta.content)
                        sys.stdout.flush()
                    if chunk.HasField("usage"):
                        print(
                            f"\n\nusage: {chunk.usage.prompt_tokens} prompt + "
                            f"{chunk.usage.completion_tokens} completion tokens"
                        )
        finally:
            await bridge.stop(1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.demo", description=__doc__)
    parser.add_argument("--prompt", default="Tell me about gRPC bridges")
    args = parser.parse_args(argv)
    return asyncio.run(run_demo(args.prompt))


if __name__ == "__main__":
    sys.exit(main())
