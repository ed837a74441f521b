"""`--workers N`: N server processes sharing one port, supervised by a parent.

One Python process serves gRPC on one core (the event loop and the GIL). To use a machine's
cores, N worker processes each bind the same address with SO_REUSEPORT, and the Linux kernel
spreads incoming connections across them (by connection, not by call: one long-lived HTTP/2
connection stays with one worker). SO_REUSEPORT load-balancing is Linux behaviour, so more
than one worker is refused elsewhere.

The parent only supervises: it starts the workers (spawned, not forked: gRPC's core threads
do not survive fork), forwards SIGTERM/SIGINT to them, so each drains as `serve` describes,
and reports each worker's exit status. A worker that exits on its own (killed, crashed) is
started again in its slot after a backoff that doubles with each recent exit of that slot
(RESTART_BACKOFF, from 0.1 s up to 30 s), while the other workers keep serving: the kernel
sends new connections to the listeners that remain. Only a crash loop, CRASH_LOOP_LIMIT exits
of one slot within CRASH_LOOP_WINDOW seconds (a worker that cannot bind its port, a bug that
kills every worker), stops the others and makes the parent exit EXIT_WORKER_FAILED, so that
the orchestrator sees the failure instead of a bridge restarting forever.

Each worker gets `Config.worker_index` (0..N-1, also BRIDGE_WORKER_INDEX; a restarted
worker keeps its slot's index), which tags its answers (`x-bridge-worker` trailing metadata)
and lets per-process state (metrics) tell the workers apart. Exit code of the parent: the
worst of the workers' last exits (0 drained, 3 calls were cancelled, 1 killed by a signal),
or 1 after a crash loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections import deque
from multiprocessing.process import BaseProcess
from types import FrameType

from bridge.config import Config, ConfigError, split_host_port
from bridge.telemetry.metrics import SharedMetrics

EXIT_WORKER_FAILED = 1

RESTART_BACKOFF = (0.1, 30.0)
"""Seconds before a dead worker starts again: (first, most). Doubles with each exit of the
same slot within CRASH_LOOP_WINDOW."""
CRASH_LOOP_LIMIT = 5
"""Exits of one worker slot within CRASH_LOOP_WINDOW that make a crash loop."""
CRASH_LOOP_WINDOW = 60.0
"""Seconds over which a slot's exits are counted (for the crash loop and the backoff)."""


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker(config: Config) -> None:
    """A worker's entry point (in a fresh interpreter): serve, exit with serve's code."""
    # Own process group: a terminal's Ctrl-C reaches the supervisor only, which forwards it
    # once; a second SIGINT would make the worker skip its grace period.
    os.setpgid(0, 0)
    _die_with_parent()
    from bridge.server.assembly import run

    sys.exit(run(config))


def _reserve_port(host: str) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: holds a free port for the workers to share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


@dataclasses.dataclass
class _Slot:
    """One worker index: its current process, its recent exits, its pending restart."""

    index: int
    config: Config
    process: BaseProcess
    exits: deque[float] = dataclasses.field(default_factory=deque)
    restart_at: float | None = None
    alive: bool = False
    """Started and its exit not yet handled. Kept apart from `process.exitcode`: a process
    can close its sentinel a moment before it can be reaped, so the exit code may appear
    only on a later look, and an exit must be handled whenever it appears."""

    def recent_exits(self, now: float) -> int:
        while self.exits and self.exits[0] < now - CRASH_LOOP_WINDOW:
            self.exits.popleft()
        return len(self.exits)


def restart_delay(recent_exits: int) -> float:
    """Backoff before a restart, in seconds, after `recent_exits` (>= 1) exits of a slot."""
    first, most = RESTART_BACKOFF
    return float(min(first * 2 ** (recent_exits - 1), most))


def supervise(config: Config) -> int:
    """Run `config.workers` workers on `config.listen` until stopped; returns the exit code.

    Raises ConfigError off Linux. Restarts dead workers (see the module docstring); returns
    on SIGTERM/SIGINT once every worker has exited, or after a crash loop.
    """
    if not sys.platform.startswith("linux"):
        raise ConfigError(
            "--workers above 1 needs Linux (SO_REUSEPORT spreads connections across "
            "processes there); run one process per core under your supervisor instead"
        )
    host, port = split_host_port(config.listen)
    # One metrics port and one directory of metric values for all workers
    # (bridge.telemetry.metrics).
    shared_metrics = SharedMetrics.prepare(config)
    config = shared_metrics.config
    reserved = _reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = reserved.getsockname()[1]
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    context = multiprocessing.get_context("spawn")

    def new_process(slot_config: Config) -> BaseProcess:
        return context.Process(
            target=_worker, args=(slot_config,), name=f"bridge-worker-{slot_config.worker_index}"
        )

    slots = []
    for index in range(config.workers):
        slot_config = dataclasses.replace(config, listen=listen, worker_index=index)
        slots.append(_Slot(index, slot_config, new_process(slot_config)))
    stopping = False
    # A signal wakes the loop below through this pipe, even while no worker is running.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        with contextlib.suppress(OSError):
            os.write(wake_write, b"\0")
        for slot in slots:
            process = slot.process
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def start(slot: _Slot) -> None:
        slot.process.start()
        slot.alive = True
        if stopping and slot.process.pid is not None:  # a signal came while it started
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    crash_loop = False
    try:
        for slot in slots:
            start(slot)
        print(
            f"supervisor (pid {os.getpid()}): {config.workers} workers on {listen}: "
            + ", ".join(f"worker {s.index} pid {s.process.pid}" for s in slots),
            flush=True,
        )
        while True:
            running = [s for s in slots if s.alive]
            if stopping:
                for slot in slots:
                    slot.restart_at = None
            pending = [s.restart_at for s in slots if s.restart_at is not None]
            if not running and not pending:
                break
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            multiprocessing.connection.wait(
                [s.process.sentinel for s in running] + [wake_read], timeout
            )
            with contextlib.suppress(BlockingIOError):
                os.set_blocking(wake_read, False)
                os.read(wake_read, 64)
            now = time.monotonic()
            for slot in running:
                if slot.process.exitcode is None:
                    continue
                slot.alive = False
                shared_metrics.worker_exited(slot.process.pid)
                print(
                    f"supervisor: worker {slot.index} (pid {slot.process.pid}) exited with "
                    f"{_status(slot.process.exitcode)}",
                    flush=True,
                )
                if stopping:
                    continue
                slot.exits.append(now)
                recent = slot.recent_exits(now)
                if recent >= CRASH_LOOP_LIMIT:
                    crash_loop = True
                    print(
                        f"supervisor: worker {slot.index} exited {recent} times within "
                        f"{CRASH_LOOP_WINDOW:g} s: a crash loop; stopping the others",
                        flush=True,
                    )
                    forward(signal.SIGTERM, None)
                    continue
                delay = restart_delay(recent)
                slot.restart_at = now + delay
                print(f"supervisor: restarting worker {slot.index} in {delay:g} s", flush=True)
            for slot in slots:
                if not stopping and slot.restart_at is not None and slot.restart_at <= now:
                    slot.restart_at = None
                    slot.process = new_process(slot.config)
                    start(slot)
                    print(
                        f"supervisor: worker {slot.index} restarted (pid {slot.process.pid})",
                        flush=True,
                    )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(wake_read)
        os.close(wake_write)
        if reserved is not None:
            reserved.close()
        shared_metrics.close()
    if crash_loop:
        return EXIT_WORKER_FAILED
    return max(_code(s.process.exitcode) for s in slots)


def _code(exitcode: int | None) -> int:
    if exitcode is None or exitcode < 0:  # killed by a signal
        return EXIT_WORKER_FAILED
    return exitcode


def _status(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"code {exitcode}"
