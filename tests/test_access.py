"""An unauthorized call costs almost nothing: refused from metadata and peer, never parsed.

A protobuf request can take about 80x its wire size once parsed (2-byte empty `messages`),
so a caller without a token could once exhaust the bridge's memory with one call before it
was refused. These tests send what such a caller sends (raw bytes through a real channel, as
any client can) and read what the bridge did: its status, and for the memory claim the peak
RSS of a real `python -m bridge serve` process (Linux /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aigateway.v1 import chat_pb2

from bridge.__main__ import _parser
from bridge.config import Config
from bridge.interceptors.access import TOKEN_KEY, token_digest
from bridge.server import assembly as server
from dev.upstream.server import DevUpstream
from tests import richstatus
from tests.conftest import DEV_KEY, bridge_config

ROOT = Path(__file__).resolve().parent.parent
CREATE = "/aigateway.v1.ChatService/CreateChatCompletion"
STREAM = "/aigateway.v1.ChatService/StreamChatCompletion"
TOKEN = "tok-access-test-93b1"
GARBAGE = b"\xff\xff\xff\xff"  # not a protobuf message: parsing it would fail
MIB = 1024 * 1024


def empty_messages(size: int) -> bytes:
    """A CreateChatCompletionRequest of `size` bytes: nothing but empty `messages` entries."""
    return b"\x12\x00" * (size // 2)


def _local_address() -> str | None:
    """This machine's own non-loopback IPv4 address, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def call_raw(
    channel: grpc.aio.Channel, method: str, payload: bytes, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    """Send `payload` as the request of `method`; the error it ends with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if method == STREAM:
            async for _ in channel.unary_stream(method)(payload, metadata=metadata, timeout=60):
                pass
        else:
            await channel.unary_unary(method)(payload, metadata=metadata, timeout=60)
    return caught.value


@pytest.fixture
async def guarded(upstream: DevUpstream) -> AsyncIterator[grpc.aio.Channel]:
    running = await server.start(
        bridge_config(
            upstream, access_token_sha256=token_digest(TOKEN), caller_credentials="refuse"
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield channel
    finally:
        await running.stop(0)


@pytest.mark.parametrize("method", [CREATE, STREAM])
async def test_refusals_come_before_the_request_is_parsed(
    guarded: grpc.aio.Channel, upstream: DevUpstream, method: str
) -> None:
    # Unparseable bytes: were they parsed first, the answer would be INVALID_ARGUMENT.
    cases = [
        ((), grpc.StatusCode.UNAUTHENTICATED, "BRIDGE_TOKEN_MISSING"),
        (((TOKEN_KEY, "tok-wrong"),), grpc.StatusCode.UNAUTHENTICATED, "BRIDGE_TOKEN_INVALID"),
        (
            (("authorization", "Bearer sk-caller"),),
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_CREDENTIALS_REFUSED",
        ),
    ]
    for metadata, code, reason in cases:
        error = await call_raw(guarded, method, GARBAGE, metadata)
        assert error.code() == code
        assert richstatus.of_error(error).reason == reason
    # Admitted, the same bytes are a clear INVALID_ARGUMENT (not UNKNOWN with a traceback).
    error = await call_raw(guarded, method, GARBAGE, ((TOKEN_KEY, TOKEN),))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = richstatus.of_error(error)
    assert status.reason == "INVALID_REQUEST" and status.info.domain == "bridge"
    assert upstream.requests == []


async def test_the_loopback_rule_refuses_a_remote_caller_before_parsing() -> None:
    address = _local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    async with DevUpstream(api_key=DEV_KEY) as upstream:
        running = await server.start(
            bridge_config(upstream, listen="0.0.0.0:0", allow_plaintext=True)
        )
        try:
            async with grpc.aio.insecure_channel(f"{address}:{running.port}") as remote:
                error = await call_raw(remote, CREATE, GARBAGE, ())
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert richstatus.of_error(error).reason == "NOT_A_LOCAL_CALLER"
        finally:
            await running.stop(0)


async def test_an_admitted_request_over_the_limit_is_refused_by_its_wire_size(
    guarded: grpc.aio.Channel,
) -> None:
    limit = Config.load(environ={}).max_message_bytes
    payload = empty_messages(limit + 1024)
    error = await call_raw(guarded, CREATE, payload, ((TOKEN_KEY, TOKEN),))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = richstatus.of_error(error)
    assert status.reason == "REQUEST_TOO_LARGE"
    assert status.info.metadata["actual"] == str(len(payload))
    assert status.info.metadata["limit"] == str(limit)
    assert "--max-message-bytes" in status.message


# ------------------------------------------------------------------------------ memory


def peak_rss_mib(pid: int) -> float:
    """VmHWM of `pid`: the most resident memory it has ever used, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.slow
async def test_refused_large_calls_do_not_grow_the_bridges_memory(upstream: DevUpstream) -> None:
    """The issue's attack, at the default limits: big requests of empty messages, refused.

    Parsed, each 7 MiB request would take about 550 MiB (measured before the guard parsed
    after the check: 8 MiB refused grew the peak RSS by 623 MiB, 30 MiB by 2.3 GiB). Refused
    unparsed, the process holds only the bytes for a moment. The bound is generous: a
    regression is a hundred times over it, not a few percent.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream.url,
        "--caller-credentials",
        "refuse",
        cwd=ROOT,
        env={
            **os.environ,
            "AI_GATEWAY_API_KEY": DEV_KEY,
            "BRIDGE_ACCESS_TOKEN_SHA256": token_digest(TOKEN),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        output = ""
        while not (found := re.search(r"listening on 127\.0\.0\.1:(\d+)", output)):
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, output
            output += line.decode()
        limit = Config.load(environ={}).max_message_bytes
        payload = empty_messages(limit + 3 * MIB)  # over the limit, under grpc's own (2x)
        options = [("grpc.max_send_message_length", 64 * MIB)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{found.group(1)}", options=options) as ch:
            small = chat_pb2.CreateChatCompletionRequest(model="x").SerializeToString()
            await call_raw(ch, CREATE, small, ())  # warm up: code paths, buffers, allocator
            baseline = peak_rss_mib(process.pid)
            refusals = [
                ((), grpc.StatusCode.UNAUTHENTICATED),
                (((TOKEN_KEY, "tok-wrong"),), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer sk-caller"),), grpc.StatusCode.PERMISSION_DENIED),
                # Admitted, but over --max-message-bytes: refused by size, still unparsed.
                (((TOKEN_KEY, TOKEN),), grpc.StatusCode.RESOURCE_EXHAUSTED),
            ]
            for metadata, code in refusals:
                for method in (CREATE, STREAM):
                    assert (await call_raw(ch, method, payload, metadata)).code() == code
            # Far over the limit: grpc itself refuses it while receiving.
            error = await call_raw(ch, CREATE, empty_messages(30 * MIB), ())
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            grown = peak_rss_mib(process.pid) - baseline
        sent = len(payload) / MIB
        print(f"peak RSS {baseline:.0f} MiB, +{grown:.0f} MiB after 8 refused {sent:.0f} MiB calls")
        assert grown < 150, f"peak RSS grew {grown:.0f} MiB refusing {sent:.0f} MiB requests"
    finally:
        process.terminate()
        await process.wait()


# ------------------------------------------------------------------------------ the key on argv


def test_api_key_help_points_away_from_the_command_line_which_still_works() -> None:
    parser = _parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    help_text = serve.format_help()
    text = " ".join(help_text[help_text.index("--api-key VALUE  ") :].split())
    assert "AI_GATEWAY_API_KEY" in text and "config file" in text and "`ps`" in text
    config = Config.load(parser.parse_args(["serve", "--api-key", "sk-from-argv"]), {})
    assert config.api_key == "sk-from-argv"


def test_docs_warn_about_port_forwarders_where_access_rules_are_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    section = operations[operations.index("## Who may use the bridge's credential") :]
    section = section[: section.index("\n## ")]
    for forwarder in ("ssh -L", "kubectl port-forward", "sidecar"):
        assert forwarder in section
    for remedy in ("--access-token-sha256", "--tls-client-ca", "--caller-credentials"):
        assert remedy in section
