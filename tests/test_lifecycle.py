"""Health, reflection, the health probe command, graceful shutdown, limits, workers.

Shutdown and workers run the real `python -m bridge serve` in a subprocess against the dev
upstream of the test, and signal it like an orchestrator would.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
from aigateway.v1 import chat_pb2, models_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from bridge.config import Config
from bridge.interceptors.access import TOKEN_KEY, WORKER_KEY, token_digest
from bridge.server import assembly as server
from dev.upstream.faults import SlowStream
from dev.upstream.server import DevUpstream
from tests.conftest import DEV_KEY, bridge_config, stubs_for

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openai/gpt-4o-mini"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _stream_request() -> chat_pb2.StreamChatCompletionRequest:
    return chat_pb2.StreamChatCompletionRequest(
        model=MODEL,
        messages=[chat_pb2.ChatMessage(role="user", content_text="tell me a long story")],
    )


async def _rest_of(stream: grpc.aio.UnaryStreamCall) -> list[chat_pb2.StreamChatCompletionResponse]:
    """The remaining messages of a stream read with read() (iteration cannot be mixed in)."""
    messages = []
    while (message := await stream.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


# ------------------------------------------------------------------------------- health


async def test_health_check_overall_and_per_service(bridge: server.Bridge) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *server.SERVICE_NAMES):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_sees_not_serving_when_shutdown_begins(upstream: DevUpstream) -> None:
    running = await server.start(bridge_config(upstream))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=server.SERVICE_NAMES[1])
        )
        first = await watch.read()
        assert first.status == SERVING
        stopping = asyncio.create_task(running.stop(5))
        second = await watch.read()
        assert second.status == NOT_SERVING
        assert await stopping  # no API call was in flight: a clean drain


# ------------------------------------------------------------------------------- reflection


def _reflected_services(port: int) -> list[str]:
    """What a real reflection client (grpcio-reflection's descriptor database) lists."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        return list(database.get_services())


async def test_reflection_lists_the_services_and_resolves_them(bridge: server.Bridge) -> None:
    services = await asyncio.to_thread(_reflected_services, bridge.port)
    for name in (*server.SERVICE_NAMES, "grpc.health.v1.Health"):
        assert name in services

    def describe() -> list[str]:
        with grpc.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            file = database.FindFileContainingSymbol("aigateway.v1.ChatService")
            return [m.name for s in file.service for m in s.method]

    methods = await asyncio.to_thread(describe)
    assert "StreamChatCompletion" in methods


async def test_no_reflection_turns_it_off(upstream: DevUpstream) -> None:
    running = await server.start(bridge_config(upstream, reflection=False))
    try:
        with pytest.raises(grpc.RpcError) as caught:
            await asyncio.to_thread(_reflected_services, running.port)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await running.stop(0)


# ------------------------------------------------------------------------------- probe command


async def _bridge_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.slow
async def test_health_command_exit_codes(upstream: DevUpstream) -> None:
    running = await server.start(bridge_config(upstream))
    address = f"127.0.0.1:{running.port}"
    try:
        code, out = await _bridge_cli("health", "--address", address)
        assert (code, out.strip()) == (0, f"{address}: SERVING")
        code, out = await _bridge_cli(
            "health", "--address", address, "--service", "aigateway.v1.ChatService"
        )
        assert code == 0 and "SERVING" in out
        code, out = await _bridge_cli("health", "--address", address, "--service", "nope.X")
        assert code == 1 and "unknown service" in out
        await running.health.set("", NOT_SERVING)
        code, out = await _bridge_cli("health", "--address", address)
        assert code == 1 and "NOT_SERVING" in out
    finally:
        await running.stop(0)
    code, out = await _bridge_cli("health", "--address", address, "--timeout", "2")
    assert code == 2 and "UNAVAILABLE" in out


@pytest.mark.slow
async def test_health_command_over_mutual_tls(upstream: DevUpstream, tmp_path: Path) -> None:
    ca = trustme.CA()
    files = {}
    for name, cert in (("server", ca.issue_cert("localhost")), ("client", ca.issue_cert("probe"))):
        files[name] = (tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
        cert.private_key_and_cert_chain_pem.write_to_path(str(files[name][0]))
        cert.private_key_pem.write_to_path(str(files[name][1]))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    running = await server.start(
        bridge_config(
            upstream,
            tls_cert=str(files["server"][0]),
            tls_key=str(files["server"][1]),
            tls_client_ca=str(tmp_path / "ca.pem"),
        )
    )
    address = f"127.0.0.1:{running.port}"
    tls = ["--tls-ca", str(tmp_path / "ca.pem"), "--tls-server-name", "localhost"]
    client = ["--tls-cert", str(files["client"][0]), "--tls-key", str(files["client"][1])]
    try:
        code, out = await _bridge_cli("health", "--address", address, *tls, *client)
        assert code == 0 and "SERVING" in out, out
        code, out = await _bridge_cli("health", "--address", address, *tls, "--timeout", "3")
        assert code == 2, out
    finally:
        await running.stop(0)


# ------------------------------------------------------------------------------- shutdown


class Served:
    """A `python -m bridge serve` subprocess and the lines it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def line_matching(self, pattern: str, within: float = 30) -> re.Match[str]:
        async def scan() -> re.Match[str]:
            for line in self.lines:
                if match := re.search(pattern, line):
                    return match
            assert self.process.stdout is not None
            while raw := await self.process.stdout.readline():
                self.lines.append(raw.decode())
                if match := re.search(pattern, self.lines[-1]):
                    return match
            raise AssertionError(f"no line matching {pattern!r}: {''.join(self.lines)}")

        return await asyncio.wait_for(scan(), within)

    async def wait(self) -> tuple[int, str]:
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), 60)
        self.lines.append(rest.decode())
        return await self.process.wait(), "".join(self.lines)


@pytest.fixture
async def spawn() -> AsyncIterator[list[Served]]:
    started: list[Served] = []

    yield started
    for served in started:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()


async def _serve(
    started: list[Served], upstream: DevUpstream, *args: str, env: dict[str, str] | None = None
) -> Served:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream.url,
        *args,
        cwd=ROOT,
        env={**os.environ, "AI_GATEWAY_API_KEY": DEV_KEY, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    served = Served(process)
    started.append(served)
    return served


@pytest.mark.slow
async def test_sigterm_drains_a_stream_in_flight_then_exits_0(
    upstream: DevUpstream, spawn: list[Served]
) -> None:
    upstream.program(MODEL, SlowStream(0.3))
    token, digest = "tok-shutdown-test-5521", token_digest("tok-shutdown-test-5521")
    served = await _serve(
        spawn,
        upstream,
        "--shutdown-grace",
        "60",
        "--log-level",
        "DEBUG",
        env={"BRIDGE_ACCESS_TOKEN_SHA256": digest},
    )
    port = (await served.line_matching(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs_for(channel).models.ListModels(
                models_pb2.ListModelsRequest(), metadata=((TOKEN_KEY, "tok-wrong-guess-77"),)
            )
        stream = stubs_for(channel).chat.StreamChatCompletion(
            _stream_request(), metadata=((TOKEN_KEY, token),)
        )
        first = await stream.read()
        assert first.choices[0].delta.role == "assistant"

        served.process.send_signal(signal.SIGTERM)
        await served.line_matching(r"shutting down: .* 1 call\(s\) in flight")
        assert (await watch.read()).status == NOT_SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs_for(fresh).models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
            # Refused: the listener is closed (UNAVAILABLE), or a connection accepted just
            # before has its call cancelled by the stopping server (CANCELLED).
            assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert len(upstream.requests) == 1

        rest = await _rest_of(stream)
        assert await stream.code() == grpc.StatusCode.OK
        assert rest and rest[-1].choices[0].finish_reason == "stop"
    code, output = await served.wait()
    assert code == 0, output
    assert "all calls finished" in output
    assert upstream.disconnects == 0
    # Secrets stay out of the logs, even at DEBUG.
    for secret in (DEV_KEY, token, digest, "tok-wrong-guess-77"):
        assert secret not in output


@pytest.mark.slow
async def test_sigterm_cancels_what_outlives_the_grace_and_says_so(
    upstream: DevUpstream, spawn: list[Served]
) -> None:
    upstream.program(MODEL, SlowStream(30))
    served = await _serve(spawn, upstream, "--shutdown-grace", "0.5")
    port = (await served.line_matching(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = stubs_for(channel).chat.StreamChatCompletion(_stream_request())
        await stream.read()
        assert upstream.active_responses == 1
        served.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _rest_of(stream)
        assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    code, output = await served.wait()
    assert code == server.EXIT_CANCELLED, output
    assert "cancelled" in output
    # The upstream saw its request closed by the bridge, not left running.
    for _ in range(100):
        if upstream.disconnects:
            break
        await asyncio.sleep(0.05)
    assert upstream.disconnects == 1
    assert upstream.active_responses == 0


@pytest.mark.slow
async def test_a_second_signal_cancels_at_once(upstream: DevUpstream, spawn: list[Served]) -> None:
    upstream.program(MODEL, SlowStream(30))
    served = await _serve(spawn, upstream, "--shutdown-grace", "600")
    port = (await served.line_matching(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = stubs_for(channel).chat.StreamChatCompletion(_stream_request())
        await stream.read()
        served.process.send_signal(signal.SIGINT)
        await served.line_matching(r"shutting down: .* 1 call\(s\) in flight")
        served.process.send_signal(signal.SIGINT)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _rest_of(stream)
        assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    code, output = await served.wait()  # well before the 600 s grace
    assert code == server.EXIT_CANCELLED, output
    assert "on the second signal were cancelled" in output


# ------------------------------------------------------------------------------- limits


def test_server_options_carry_limits_and_keepalive() -> None:
    config = Config.load(
        environ={},
        max_concurrent_streams=7,
        keepalive_time=30,
        keepalive_timeout=5,
        min_client_ping_interval=2.5,
        client_pings_without_calls=False,
        max_connection_age=120,
        max_connection_age_grace=15,
        max_message_bytes=1000,
        max_response_bytes=5000,
    )
    options = dict(server.server_options(config))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2_500
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.max_connection_age_ms"] == 120_000
    assert options["grpc.max_connection_age_grace_ms"] == 15_000
    # Answers are bounded by the upstream body they translate, not the request limit.
    assert options["grpc.max_send_message_length"] == 10_000
    assert options["grpc.max_receive_message_length"] >= 1000
    assert options["grpc.so_reuseport"] == 0
    # A burst of calls waiting for the aio server is not dropped past core's default 1,000.
    assert options["grpc.server.max_pending_requests"] >= 10_000
    assert options["grpc.server.max_pending_requests_hard_limit"] >= 10_000
    unlimited = dict(
        server.server_options(
            Config.load(environ={}, max_concurrent_streams=0, max_connection_age=0)
        )
    )
    assert "grpc.max_concurrent_streams" not in unlimited
    assert "grpc.max_connection_age_ms" not in unlimited


async def test_max_concurrent_streams_holds_back_a_second_call(upstream: DevUpstream) -> None:
    upstream.program(MODEL, SlowStream(30))
    running = await server.start(bridge_config(upstream, max_concurrent_streams=1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            stream = stubs.chat.StreamChatCompletion(_stream_request())
            await stream.read()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.models.ListModels(models_pb2.ListModelsRequest(), timeout=1)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(upstream.requests) == 1  # the second call never reached the bridge
            stream.cancel()
            assert await stubs.models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    finally:
        await running.stop(0)


async def test_max_connection_age_ends_connections_that_outlive_it(
    upstream: DevUpstream,
) -> None:
    upstream.program(MODEL, SlowStream(30))
    running = await server.start(
        bridge_config(upstream, max_connection_age=0.5, max_connection_age_grace=0.5)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel)
            stream = stubs.chat.StreamChatCompletion(_stream_request(), timeout=20)
            await stream.read()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _rest_of(stream)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            # The channel reconnects by itself: the next call is served.
            assert await stubs.models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    finally:
        await running.stop(0)


async def _ping_until_dropped(port: int, within: float) -> bool:
    """Ping every 50 ms on an idle connection; True when the server drops it within `within`."""
    options = [
        ("grpc.keepalive_time_ms", 50),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        await stubs_for(channel).models.ListModels(models_pb2.ListModelsRequest())
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        try:
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), within
            )
        except TimeoutError:
            return False
        return True


async def test_clients_pinging_too_often_are_disconnected(upstream: DevUpstream) -> None:
    strict = await server.start(bridge_config(upstream, min_client_ping_interval=10))
    lenient = await server.start(bridge_config(upstream, min_client_ping_interval=0.01))
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        # GOAWAY too_many_pings after a few strikes: the connection leaves READY.
        assert await _ping_until_dropped(strict.port, 60)
        took = loop.time() - began
        # The same client against a server that allows its pace keeps its connection at
        # least twice as long.
        assert not await _ping_until_dropped(lenient.port, 2 * took + 1)
    finally:
        await strict.stop(0)
        await lenient.stop(0)


# ------------------------------------------------------------------------------- workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing")
@pytest.mark.slow
async def test_workers_share_the_port_and_stop_together(
    upstream: DevUpstream, spawn: list[Served]
) -> None:
    served = await _serve(spawn, upstream, "--workers", "2")
    for index in (0, 1):
        await served.line_matching(rf"worker {index}: aigateway bridge listening")
    port = (await served.line_matching(r"workers on 127\.0\.0\.1:(\d+)")).group(1)
    seen: set[str] = set()
    connections = 0
    while len(seen) < 2 and connections < 40:
        connections += 1
        # A channel per call, each with its own connection (no shared subchannel pool), so
        # the kernel picks a worker for each.
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            call = stubs_for(channel).models.ListModels(models_pb2.ListModelsRequest())
            await call
            trailing = dict(await call.trailing_metadata())
            seen.add(trailing[WORKER_KEY])
    assert seen == {"0", "1"}, f"after {connections} connections only {seen}"

    served.process.send_signal(signal.SIGTERM)
    code, output = await served.wait()
    assert code == 0, output
    for index in (0, 1):
        assert re.search(rf"worker {index} \(pid \d+\) exited with code 0", output), output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing")
@pytest.mark.slow
async def test_workers_that_cannot_start_make_the_supervisor_fail(
    upstream: DevUpstream, spawn: list[Served]
) -> None:
    # A listener without SO_REUSEPORT holds the port: no worker can join it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = await _serve(spawn, upstream, "--workers", "2", "--listen", f"127.0.0.1:{port}")
        code, output = await served.wait()
    assert code == 1, output
    assert "could not bind" in output
    assert re.search(r"worker \d \(pid \d+\) exited with code 1", output), output
