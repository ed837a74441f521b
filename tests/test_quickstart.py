"""The README's first steps, as a new user takes them: `make run` configured by the environment,
a second bridge on a taken port, the startup warnings, and the README's Python example.

`make run` and the example run as separate processes from the repository root, exactly as the
README shows them; the bridge they talk to runs on loopback in front of the development
upstream.
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.config import Config
from bridge.server import assembly as server
from dev.upstream.server import DevUpstream
from tests.conftest import DEV_KEY, bridge_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the bridge's own variables, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BRIDGE_", "AI_GATEWAY_", "VERCEL_", "PROMETHEUS_"))
        and key not in ("LISTEN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update(extra)
    return env


async def run(
    *command: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env or clean_environment(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


# ------------------------------------------------------------------------------- make run


async def make_run_serves(root: Path) -> None:
    """`make run` in `root`, configured by the environment only, serves and is healthy."""
    async with DevUpstream() as upstream:  # a local server that wants no key
        process = await asyncio.create_subprocess_exec(
            "make",
            "-s",
            "run",
            cwd=root,
            env=clean_environment(BRIDGE_LISTEN="127.0.0.1:0", BRIDGE_UPSTREAM_URL=upstream.url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # make and the bridge in a group of their own
        )
        assert process.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(300):  # a fresh clone installs first
                while not any(line.startswith(("note:", "warning:")) for line in lines):
                    line = (await process.stdout.readline()).decode()
                    assert line, "make run ended early:\n" + "".join(lines)
                    lines.append(line)
            output = "".join(lines)
            listening = re.search(r"listening on 127\.0\.0\.1:(\d+), upstream (\S+)", output)
            assert listening, output
            assert listening[1] != "50051" and listening[2] == upstream.url, output
            # Pointed at a local server: no word of the Vercel AI Gateway or of failing calls.
            assert "Vercel" not in output and "UNAUTHENTICATED" not in output, output
            async with grpc.aio.insecure_channel(f"127.0.0.1:{listening[1]}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGINT)
            await asyncio.wait_for(process.communicate(), 60)


async def test_make_run_takes_its_address_and_upstream_from_the_environment() -> None:
    await make_run_serves(ROOT)


@pytest.mark.timeout(900)
async def test_from_a_fresh_clone_the_quick_start_works(tmp_path: Path) -> None:
    """The committed tree, cloned, with only Python: `make demo`, `make run`, the CLI."""
    clone = tmp_path / "clone"
    code, output = await run("git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone))
    assert code == 0, output
    code, output = await run("make", "-s", "demo", cwd=clone)
    assert code == 0, output
    assert re.search(r"usage: \d+ prompt \+ \d+ completion tokens", output), output
    await make_run_serves(clone)
    # Serving needs only the runtime dependencies: none of the development tools.
    for tool in ("pytest", "mypy", "ruff", "buf"):
        assert not (clone / ".venv" / "bin" / tool).exists(), f"make run installed {tool}"
    for command in (
        [".venv/bin/python", "-m", "bridge", "config"],
        [".venv/bin/aigateway-bridge", "serve", "--help"],
    ):
        code, output = await run(*command, cwd=clone)
        assert code == 0, f"{' '.join(command)}:\n{output}"


async def test_a_taken_address_is_explained_without_grpc_core_noise(
    bridge: server.Bridge, upstream: DevUpstream
) -> None:
    address = f"127.0.0.1:{bridge.port}"
    code, output = await run(
        sys.executable, "-m", "bridge", "serve", "--listen", address, "--upstream", upstream.url
    )
    assert code == 1, output
    assert f"cannot listen on {address}: the address is already in use" in output, output
    for way in ("--listen ", "BRIDGE_LISTEN=", "make run LISTEN="):
        assert way in output, output
    assert "add_port" not in output and "Failed to add port" not in output, output


# ------------------------------------------------------------------------------- warnings


def test_without_a_credential_the_gateway_warning_points_to_the_offline_route() -> None:
    lines = server.startup_warnings(Config.load(environ={}))
    text = " ".join(lines)
    assert "AI_GATEWAY_API_KEY" in text and "UNAUTHENTICATED" in text
    assert "make demo" in text and "make dev-upstream" in text


def test_a_local_upstream_without_a_credential_is_only_noted() -> None:
    config = Config.load(environ={"BRIDGE_UPSTREAM_URL": "http://127.0.0.1:11434/v1"})
    (line,) = server.startup_warnings(config)
    assert line.startswith("note:") and "http://127.0.0.1:11434/v1" in line
    assert "Vercel" not in line and "UNAUTHENTICATED" not in line


def test_a_configured_credential_needs_no_warning() -> None:
    assert server.startup_warnings(Config.load(environ={"AI_GATEWAY_API_KEY": "sk-x"})) == []


# ------------------------------------------------------------------------------- README example


def readme_python_example() -> str:
    """The README's first Python block under "Calling it", as a user would copy it."""
    section = README.read_text().split("## Calling it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no Python example under 'Calling it'"
    return match[1]


@pytest.fixture
async def example_bridge() -> AsyncIterator[str]:
    async with DevUpstream(api_key=DEV_KEY) as upstream:
        running = await server.start(bridge_config(upstream))
        try:
            yield f"127.0.0.1:{running.port}"
        finally:
            await running.stop(0)


async def run_example(tmp_path: Path, address: str, model: str | None = None) -> str:
    source = readme_python_example()
    assert '"127.0.0.1:50051"' in source and '"openai/gpt-4o-mini"' in source
    source = source.replace('"127.0.0.1:50051"', repr(address))
    if model is not None:
        source = source.replace('"openai/gpt-4o-mini"', repr(model))
    script = tmp_path / "example.py"
    script.write_text(source)
    code, output = await run(sys.executable, str(script))
    assert code == 0, output
    return output


@pytest.mark.examples
async def test_readme_python_example_streams_a_chat(example_bridge: str, tmp_path: Path) -> None:
    output = await run_example(tmp_path, example_bridge)
    assert output.startswith("Echo: Hello!"), output


@pytest.mark.examples
async def test_readme_python_example_prints_a_failure_with_its_details(
    example_bridge: str, tmp_path: Path
) -> None:
    # A model id that could escape its URL path: the bridge's own refusal, with details.
    output = await run_example(tmp_path, example_bridge, model="../x")
    lines = output.splitlines()
    assert re.fullmatch(r"INVALID_ARGUMENT: .*model.*", lines[0]), output
    assert re.fullmatch(r'  ErrorInfo: reason: "INVALID_REQUEST" .*', lines[1]), output
    assert any(re.match(r'  BadRequest: .*field: "model"', line) for line in lines), output


@pytest.mark.examples
async def test_readme_python_example_prints_a_status_without_details(tmp_path: Path) -> None:
    with socket.socket() as unused:  # a port nobody listens on once closed
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    output = await run_example(tmp_path, f"127.0.0.1:{port}")
    assert re.fullmatch(r"UNAVAILABLE: .+\n", output), output
