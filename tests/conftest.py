"""Shared fixtures: a real development upstream and a real bridge, both on loopback port 0.

Tests call the bridge the way a user does: through a grpc.aio channel and the generated
stubs. Nothing between the channel and the upstream's socket is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from aigateway.v1 import chat_pb2_grpc, embeddings_pb2_grpc, models_pb2_grpc

from bridge.config import Config
from bridge.server import assembly as server
from dev.upstream.server import DevUpstream

DEV_KEY = "sk-dev-test-key"


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    models: models_pb2_grpc.ModelsServiceStub
    chat: chat_pb2_grpc.ChatServiceStub
    embeddings: embeddings_pb2_grpc.EmbeddingsServiceStub


def stubs_for(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(
        channel,
        models_pb2_grpc.ModelsServiceStub(channel),
        chat_pb2_grpc.ChatServiceStub(channel),
        embeddings_pb2_grpc.EmbeddingsServiceStub(channel),
    )


@pytest.fixture
async def upstream() -> AsyncIterator[DevUpstream]:
    async with DevUpstream(api_key=DEV_KEY) as dev:
        yield dev


def bridge_config(upstream: DevUpstream, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "upstream_url": upstream.url,
        "api_key": DEV_KEY,
        "initial_backoff": 0.01,
        "max_backoff": 0.05,
    }
    values.update(overrides)
    return Config.load(environ={}, **values)


@contextlib.asynccontextmanager
async def serving(upstream: DevUpstream, **overrides: Any) -> AsyncIterator[Stubs]:
    """A bridge configured by `bridge_config(upstream, **overrides)`, and stubs to call it."""
    running = await server.start(bridge_config(upstream, **overrides))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield stubs_for(channel)
    finally:
        await running.stop(0)


async def wait_for(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll `condition` until it holds; fail the test after `limit` seconds (a bound on a
    hang, not a timing assertion: the condition normally holds within milliseconds)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def bridge(upstream: DevUpstream) -> AsyncIterator[server.Bridge]:
    running = await server.start(bridge_config(upstream))
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def stubs(bridge: server.Bridge) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield stubs_for(channel)


@pytest.fixture
async def rest(upstream: DevUpstream) -> AsyncIterator[httpx.AsyncClient]:
    """A direct REST client of the same upstream, to compare the bridge's answers with."""
    async with httpx.AsyncClient(
        base_url=upstream.url, headers={"authorization": f"Bearer {DEV_KEY}"}
    ) as client:
        yield client
