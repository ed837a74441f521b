"""`serve --workers 2` losing a worker: the others keep serving, the lost one comes back.

A real `python -m bridge serve --workers 2` runs against the test's dev upstream; workers
are killed with SIGKILL as the kernel's OOM killer would, and the bridge is called through
fresh connections, which the kernel spreads over the workers still listening (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aigateway.v1 import models_pb2

from bridge.interceptors.access import WORKER_KEY
from bridge.server import workers
from dev.upstream.server import DevUpstream
from tests.conftest import DEV_KEY, stubs_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="--workers needs Linux (SO_REUSEPORT)"
    ),
]


class Supervisor:
    """A `python -m bridge serve --workers 2` subprocess and what it printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output = ""
        self.cursor = 0  # where the last match ended: later expectations look after it

    async def expect(
        self, pattern: str, since: int | None = None, within: float = 60
    ) -> re.Match[str]:
        """The first match of `pattern` after `since` (default: the last match); bounds a hang."""
        compiled = re.compile(pattern)
        start = self.cursor if since is None else since

        async def scan() -> re.Match[str]:
            assert self.process.stdout is not None
            while not (match := compiled.search(self.output, start)):
                raw = await self.process.stdout.readline()
                assert raw, f"no {pattern!r} in:\n{self.output}"
                self.output += raw.decode()
            return match

        try:
            match = await asyncio.wait_for(scan(), within)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {within} s in:\n{self.output}") from None
        self.cursor = max(self.cursor, match.end())
        return match

    async def finish(self) -> int:
        assert self.process.stdout is not None
        self.output += (await asyncio.wait_for(self.process.stdout.read(), 60)).decode()
        return await self.process.wait()


@pytest.fixture
async def supervisor(upstream: DevUpstream) -> AsyncIterator[Supervisor]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream.url,
        "--workers",
        "2",
        cwd=ROOT,
        env={**os.environ, "AI_GATEWAY_API_KEY": DEV_KEY},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = Supervisor(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def started(supervisor: Supervisor) -> tuple[int, dict[int, int]]:
    """The shared port and each worker's pid, once both workers listen."""
    found = await supervisor.expect(r"workers on 127\.0\.0\.1:(\d+): (.*)")
    pids = {int(i): int(p) for i, p in re.findall(r"worker (\d) pid (\d+)", found.group(2))}
    for index in (0, 1):  # in either order
        await supervisor.expect(rf"worker {index}: aigateway bridge listening", since=found.end())
    return int(found.group(1)), pids


async def call_on_new_connection(port: int) -> str:
    """ListModels on a connection of its own (the kernel picks its worker); the worker."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        call = stubs_for(channel).models.ListModels(models_pb2.ListModelsRequest(), timeout=30)
        await call
        return str(dict(await call.trailing_metadata())[WORKER_KEY])


async def test_a_killed_worker_is_restarted_while_the_other_serves(
    supervisor: Supervisor,
) -> None:
    port, pids = await started(supervisor)
    os.kill(pids[0], signal.SIGKILL)
    await supervisor.expect(rf"worker 0 \(pid {pids[0]}\) exited with signal SIGKILL")
    # Every call succeeds while worker 0 is down and while it comes back.
    served = [await call_on_new_connection(port) for _ in range(10)]
    restarted = await supervisor.expect(r"worker 0 restarted \(pid (\d+)\)")
    assert int(restarted.group(1)) != pids[0]
    await supervisor.expect(r"worker 0: aigateway bridge listening")
    seen: set[str] = set(served)
    for _ in range(40):
        seen.add(await call_on_new_connection(port))
        if seen == {"0", "1"}:
            break
    assert seen == {"0", "1"}, "the restarted worker 0 answers calls again"
    assert "stopping the others" not in supervisor.output
    # SIGTERM still drains and stops every worker, the restarted one included.
    supervisor.process.send_signal(signal.SIGTERM)
    assert await supervisor.finish() == 0, supervisor.output
    assert re.search(
        rf"worker 0 \(pid {restarted.group(1)}\) exited with code 0", supervisor.output
    )
    assert re.search(rf"worker 1 \(pid {pids[1]}\) exited with code 0", supervisor.output)


async def test_a_crash_loop_stops_the_supervisor_with_an_error(supervisor: Supervisor) -> None:
    port, pids = await started(supervisor)
    pid = pids[1]
    for kill in range(1, workers.CRASH_LOOP_LIMIT + 1):
        os.kill(pid, signal.SIGKILL)
        await supervisor.expect(rf"worker 1 \(pid {pid}\) exited with signal SIGKILL")
        if kill == workers.CRASH_LOOP_LIMIT:
            break
        pid = int((await supervisor.expect(r"worker 1 restarted \(pid (\d+)\)")).group(1))
        # Worker 0 keeps serving (and worker 1 serves too once it listens).
        assert await call_on_new_connection(port) in ("0", "1")
    await supervisor.expect("crash loop")
    code = await supervisor.finish()
    assert code == workers.EXIT_WORKER_FAILED, supervisor.output
    assert f"exited {workers.CRASH_LOOP_LIMIT} times within" in supervisor.output
    assert re.search(rf"worker 0 \(pid {pids[0]}\) exited with code 0", supervisor.output)


def test_restart_backoff_doubles_up_to_its_bound() -> None:
    first, most = workers.RESTART_BACKOFF
    delays = [workers.restart_delay(n) for n in range(1, 20)]
    assert delays[:3] == [first, 2 * first, 4 * first]
    assert max(delays) == most and delays == sorted(delays)


def test_the_supervisor_does_not_import_the_command_line() -> None:
    """bridge.server.workers and bridge.__main__ no longer import each other (a cycle)."""
    source = Path(workers.__file__).read_text()
    assert "bridge.__main__" not in source
