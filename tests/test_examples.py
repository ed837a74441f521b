"""The example clients in Go, TypeScript, Java, Rust and Python, built from protos/ and run
against a live bridge in front of the development upstream.

Each example is built by its Makefile target and then run as a separate process, exactly as
its README says. Its toolchain (Go, Node/npm, a JDK with Maven, Rust with cargo) must be on
PATH: without it the test is skipped with a reason naming what is missing, and fails under CI
(`CI=true`), where the full suite is required (tests/toolchains.py). Every example checks its
own outcomes and exits non-zero on a surprise; this test also checks the lines it prints, so
that all five languages are seen doing the same things: listing models, a unary and a streamed
chat, a streamed Response (ResponsesService.StreamResponse), embeddings, a deadline, a
cancellation and rich error details.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.server import assembly as server
from dev.upstream.server import DevUpstream
from tests import toolchains
from tests.conftest import DEV_KEY, bridge_config

pytestmark = pytest.mark.examples

ROOT = Path(__file__).resolve().parent.parent

BUILD_TIMEOUT = 1500.0
"""Seconds for one example build; a cold Maven or Go build downloads its dependencies."""
RUN_TIMEOUT = 120.0

STREAM_INTERVAL = 0.01
"""Seconds between the upstream's chunks, so the examples' 500 ms deadline runs out mid-stream."""


@dataclass(frozen=True)
class Example:
    name: str
    target: str | None
    """The Makefile target that builds it, if it needs building."""
    command: tuple[str, ...]
    """How its README runs it, without the bridge address (appended)."""
    toolchain: tuple[str, ...] = ()
    """Commands its build and run need on PATH (besides make and this Python)."""


EXAMPLES = (
    Example("go", "examples-go", ("examples/go/bin/client",), ("go",)),
    Example(
        "typescript",
        "examples-typescript",
        ("node", "examples/typescript/dist/client.js"),
        ("node", "npm"),
    ),
    Example(
        "java",
        "examples-java",
        ("java", "-jar", "examples/java/target/aigateway-example.jar"),
        ("java", "mvn"),
    ),
    Example("rust", "examples-rust", ("examples/rust/target/debug/client",), ("cargo",)),
    Example("python", None, (sys.executable, "examples/python/client.py")),
)

# Each line every example prints, in order, as a pattern over the development upstream's answers.
EXPECTED = (
    r"bridge: 127\.0\.0\.1:\d+",
    r"models: openai/gpt-4o-mini, anthropic/claude-sonnet-4\.5, openai/text-embedding-3-small, "
    r"gpt-4o-mini",
    r"unary: Echo: Say hello to the \w+ client\. \(finish_reason=stop, total_tokens=\d+\)",
    r"stream: Echo: Stream a greeting to the \w+ client\.",
    r"stream: \d+ chunks, finish_reason=stop, usage=\d+\+\d+ tokens",
    r"response: Echo: Stream a response to the \w+ client\.",
    r"response: \d+ events, status=completed, usage=\d+\+\d+ tokens",
    r"embeddings: 2 vectors of \d+ dimensions",
    r"deadline: DEADLINE_EXCEEDED after \d+ chunks within 500ms, as expected",
    r"cancel: CANCELLED after 3 chunks, as expected",
    r"error: NOT_FOUND .*no-such/model.*",
    r"error:   ErrorInfo reason=MODEL_NOT_FOUND domain=127\.0\.0\.1 "
    r"metadata=\{code=model_not_found, httpStatus=404, param=model, type=invalid_request_error\}",
    r"error:   RequestInfo request_id=\S+",
    r"error:   ResourceInfo type=model name=no-such/model",
    r"error: INVALID_ARGUMENT .*model.*",
    r"error:   ErrorInfo reason=\w+ domain=\S+ metadata=\{.*\}",
    r"error:   BadRequest field=model description=.+",
    r"OK: all checks passed",
)


async def run(command: list[str], limit: float) -> tuple[int, str]:
    """Runs a command from the repository root; returns its exit code and merged output."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(limit):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(command)} took longer than {limit:.0f} s")
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """A live bridge, in this process, in front of the development upstream."""
    async with DevUpstream(api_key=DEV_KEY, stream_interval=STREAM_INTERVAL) as upstream:
        running = await server.start(bridge_config(upstream))
        try:
            yield f"127.0.0.1:{running.port}"
        finally:
            await running.stop(0)


@pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT + 60)
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
async def test_example_runs_against_a_live_bridge(example: Example, address: str) -> None:
    toolchains.require(f"the {example.name} example", *example.toolchain)
    if example.target:
        code, output = await run(["make", "-s", example.target], BUILD_TIMEOUT)
        assert code == 0, f"make {example.target} failed:\n{output}"
    code, output = await run([*example.command, address], RUN_TIMEOUT)
    assert code == 0, f"the {example.name} example failed:\n{output}"
    lines = output.splitlines()
    assert len(lines) == len(EXPECTED), output
    for line, pattern in zip(lines, EXPECTED, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}\n\n{output}"
