"""A real bridge and development upstream on their own event loop thread, for hypothesis.

Hypothesis drives a test function many times, synchronously, and cannot share the per-test
asyncio fixtures of conftest.py. So the property tests run the same real pieces (DevUpstream
on loopback port 0, `bridge.server.assembly.start`) on a background loop and call the bridge through
ordinary synchronous gRPC stubs, exactly as a Python user would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
from aigateway.v1 import chat_pb2_grpc, embeddings_pb2_grpc, models_pb2_grpc

from bridge.server import assembly as server
from dev.upstream.faults import Behavior
from dev.upstream.server import DevUpstream, RecordedRequest
from tests.conftest import DEV_KEY, bridge_config

T = TypeVar("T")


class ThreadedBridge:
    """Context manager: `upstream`, the bridge's `port`, and synchronous stubs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.upstream = DevUpstream(api_key=DEV_KEY)
        self.bridge: server.Bridge | None = None
        self.channel: grpc.Channel | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def __enter__(self) -> ThreadedBridge:
        self.thread.start()
        self.run(self.upstream.start())
        self.bridge = self.run(server.start(bridge_config(self.upstream)))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.bridge.port}")
        self.models = models_pb2_grpc.ModelsServiceStub(self.channel)
        self.chat = chat_pb2_grpc.ChatServiceStub(self.channel)
        self.embeddings = embeddings_pb2_grpc.EmbeddingsServiceStub(self.channel)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.bridge is not None:
            self.run(self.bridge.stop(0))
        self.run(self.upstream.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def program(self, model: str, *behaviors: Behavior) -> None:
        """`DevUpstream.program`, on the upstream's own loop."""
        done = threading.Event()

        def program() -> None:
            self.upstream.program(model, *behaviors)
            done.set()

        self.loop.call_soon_threadsafe(program)
        done.wait(timeout=30)

    def requests_since(self, count: int) -> list[RecordedRequest]:
        """What the upstream received after the first `count` requests."""
        return list(self.upstream.requests[count:])
