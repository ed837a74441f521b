"""The bridge through the gRPC tools people already use: grpcurl and ghz in reflection mode,
grpc-health-probe, and buf curl over `grpc.reflection.v1`.

`make tools` builds the first three from the Go module proxy at pinned versions into
build/bin (without Go they are skipped, with the reason; under CI=true they are required);
buf comes with the `dev` extra. Every tool runs as a separate process against a live bridge in
front of the development upstream, with no proto file: reflection is all they get.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.server import assembly as server
from dev.upstream.server import DevUpstream
from tests import toolchains
from tests.conftest import DEV_KEY, bridge_config

pytestmark = pytest.mark.examples

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "build" / "bin"
BUF = ROOT / ".venv" / "bin" / "buf"
CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content_text": "Hello!"}]}


@pytest.fixture(scope="module")
def tools() -> Path:
    """build/bin with grpcurl, ghz and grpc-health-probe (built once per version)."""
    toolchains.require("grpcurl, ghz and grpc-health-probe (built by `make tools`)", "go")
    done = subprocess.run(
        ["make", "-s", "tools"], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, f"make tools failed:\n{done.stdout}{done.stderr}"
    return BIN


@pytest.fixture
async def address() -> AsyncIterator[str]:
    async with DevUpstream(api_key=DEV_KEY) as upstream:
        running = await server.start(bridge_config(upstream))
        try:
            yield f"127.0.0.1:{running.port}"
        finally:
            await running.stop(0)


async def run(*command: str | Path) -> tuple[int, str]:
    """A tool's exit code and its stdout and stderr, merged."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


# ------------------------------------------------------------------------------- grpcurl


async def test_grpcurl_lists_every_service(tools: Path, address: str) -> None:
    code, output = await run(tools / "grpcurl", "-plaintext", address, "list")
    assert code == 0, output
    assert set(output.split()) == {
        *server.SERVICE_NAMES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_grpcurl_describes_methods_with_their_documentation(
    tools: Path, address: str
) -> None:
    grpcurl = (tools / "grpcurl", "-plaintext", address, "describe")
    code, output = await run(*grpcurl, "aigateway.v1.ChatService.CreateChatCompletion")
    assert code == 0, output
    assert "is a method:" in output and "// Creates a chat completion" in output, output
    code, output = await run(*grpcurl, "aigateway.v1.CreateChatCompletionRequest")
    assert code == 0, output
    assert re.search(r"// Required\. The model id", output), output
    code, output = await run(*grpcurl, "grpc.health.v1.Health.Check")
    assert code == 0 and "rpc Check" in output, output


async def test_grpcurl_calls_and_streams_a_chat(tools: Path, address: str) -> None:
    grpcurl = (tools / "grpcurl", "-plaintext", "-d", json.dumps(CHAT), address)
    code, output = await run(*grpcurl, "aigateway.v1.ChatService/CreateChatCompletion")
    assert code == 0, output
    reply = json.loads(output)
    assert reply["choices"][0]["message"]["content"] == "Echo: Hello!"
    code, output = await run(*grpcurl, "aigateway.v1.ChatService/StreamChatCompletion")
    assert code == 0, output
    assert output.count('"choices"') > 1  # one JSON document per chunk


async def test_grpcurl_shows_an_error_with_its_details(tools: Path, address: str) -> None:
    code, output = await run(
        tools / "grpcurl",
        "-plaintext",
        "-d",
        json.dumps({"model": "no-such/model"}),
        address,
        "aigateway.v1.ModelsService/RetrieveModel",
    )
    assert code != 0, output
    assert "Code: NotFound" in output, output
    # Reflection serves google.rpc's files too, so grpcurl decodes the details.
    assert "not recognized" not in output and '"reason": "MODEL_NOT_FOUND"' in output, output


async def test_grpcurl_health_list(tools: Path, address: str) -> None:
    code, output = await run(tools / "grpcurl", "-plaintext", address, "grpc.health.v1.Health/List")
    assert code == 0, output
    statuses = json.loads(output)["statuses"]
    assert set(statuses) == {"", *server.SERVICE_NAMES}
    assert {s["status"] for s in statuses.values()} == {"SERVING"}


# ------------------------------------------------------------------------------- ghz


async def test_ghz_in_reflection_mode(tools: Path, address: str) -> None:
    code, output = await run(
        tools / "ghz",
        "--insecure",
        "--call",
        "aigateway.v1.ChatService/CreateChatCompletion",
        "--data",
        json.dumps(CHAT),
        "--total",
        "20",
        "--concurrency",
        "2",
        "--format",
        "json",
        address,
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["count"] == 20
    assert report["statusCodeDistribution"] == {"OK": 20}, report.get("errorDistribution")


# ------------------------------------------------------------------------------- probes


async def test_grpc_health_probe(tools: Path, address: str) -> None:
    probe = (tools / "grpc-health-probe", "-addr", address)
    code, output = await run(*probe)
    assert (code, output.strip()) == (0, "status: SERVING"), output
    code, output = await run(*probe, "-service", "aigateway.v1.ChatService")
    assert code == 0, output
    code, output = await run(*probe, "-service", "no.such.Service")
    assert code != 0, output


async def test_buf_curl_over_reflection_v1(address: str) -> None:
    code, output = await run(
        BUF,
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        "grpc-v1",
        "--data",
        json.dumps(CHAT),
        f"http://{address}/aigateway.v1.ChatService/CreateChatCompletion",
    )
    assert code == 0, output
    assert json.loads(output)["choices"][0]["message"]["content"] == "Echo: Hello!"
