"""`--workers N`: N server processes sharing one port, supervised by a parent.

One Python process serves gRPC on one core (the event loop and the GIL). To use a machine's
cores, N worker processes each bind the same address with SO_REUSEPORT, and the Linux kernel
spreads incoming connections across them (by connection, not by call: one long-lived HTTP/2
connection stays with one worker). SO_REUSEPORT load-balancing is Linux behaviour, so more
than one worker is refused elsewhere.

The parent only supervises: it starts the workers (spawned, not forked: gRPC's core threads
do not survive fork), forwards SIGTERM/SIGINT to them, so each drains as `serve` describes,
and reports each worker's exit status. A worker that exits on its own (crash, bind failure)
brings the others down too, and the parent exits non-zero: the orchestrator restarts the
whole unit rather than the bridge running with fewer workers than configured.

Each worker gets `Config.worker_index` (0..N-1, also BRIDGE_WORKER_INDEX), which tags its
answers (`x-bridge-worker` trailing metadata) and lets per-process state (metrics) tell the
workers apart. Exit code of the parent: the worst of the workers' (0 drained, 3 calls were
cancelled), or 1 when a worker failed.
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
from types import FrameType

from bridge.config import Config, ConfigError, split_host_port
from bridge.metrics import SharedMetrics

EXIT_WORKER_FAILED = 1


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
    from bridge.__main__ import run_server

    sys.exit(run_server(config))


def _reserve_port(host: str) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: holds a free port for the workers to share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def supervise(config: Config) -> int:
    """Run `config.workers` workers on `config.listen` until they exit; returns the exit code."""
    if not sys.platform.startswith("linux"):
        raise ConfigError(
            "--workers above 1 needs Linux (SO_REUSEPORT spreads connections across "
            "processes there); run one process per core under your supervisor instead"
        )
    host, port = split_host_port(config.listen)
    # One metrics port and one directory of metric values for all workers (bridge.metrics).
    shared_metrics = SharedMetrics.prepare(config)
    config = shared_metrics.config
    reserved = _reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = reserved.getsockname()[1]
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker,
            args=(dataclasses.replace(config, listen=listen, worker_index=index),),
            name=f"bridge-worker-{index}",
        )
        for index in range(config.workers)
    ]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        for process in processes:
            process.start()
        print(
            f"supervisor (pid {os.getpid()}): {config.workers} workers on {listen}: "
            + ", ".join(f"worker {i} pid {p.pid}" for i, p in enumerate(processes)),
            flush=True,
        )
        running = list(processes)
        while running:
            multiprocessing.connection.wait([p.sentinel for p in running])
            for process in [p for p in running if p.exitcode is not None]:
                running.remove(process)
                shared_metrics.worker_exited(process.pid)
                index = processes.index(process)
                print(
                    f"supervisor: worker {index} (pid {process.pid}) exited with "
                    f"{_status(process.exitcode)}",
                    flush=True,
                )
                if not stopping:
                    failed = True
                    print("supervisor: a worker exited on its own: stopping the others", flush=True)
                    forward(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if reserved is not None:
            reserved.close()
        shared_metrics.close()
    if failed:
        return EXIT_WORKER_FAILED
    return max(_code(p.exitcode) for p in processes)


def _code(exitcode: int | None) -> int:
    if exitcode is None or exitcode < 0:  # killed by a signal
        return EXIT_WORKER_FAILED
    return exitcode


def _status(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"code {exitcode}"
