"""Prometheus metrics and the HTTP endpoint that serves them.

One `Metrics` object per bridge holds every metric; `bridge.interceptors.observation` feeds it from
the gRPC
interceptor and the upstream hooks. Labels are bounded by construction: gRPC service and
method names come from the server's own handlers, upstream routes are path templates, status
codes are codes, and model names (from usage) pass through `BoundedLabel`, so a caller that
invents model ids cannot grow the series without limit. No label ever holds a credential,
a request id or message content.

With `--workers N` the processes share one directory of memory-mapped value files
(prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`); every worker binds the
metrics port with SO_REUSEPORT and answers a scrape with the sum over all workers, so any
worker the kernel picks gives the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from bridge.config import Config, split_host_port

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client reads this variable itself; the bridge sets it from its Config."""

# gRPC calls to language models take from milliseconds (models list) to minutes (long
# generations); the buckets cover both ends.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FIRST_MESSAGE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

MODEL_LABEL_LIMIT = 200
OTHER = "other"

_switch_lock = threading.Lock()


class BoundedLabel:
    """Admits the first `limit` distinct values of a label; later new values become "other".

    Model names reach the token counters from responses, and a caller choosing model ids
    must not be able to create unbounded series (each costs memory here and in Prometheus).
    """

    def __init__(self, limit: int = MODEL_LABEL_LIMIT, max_length: int = 120) -> None:
        self.limit = limit
        self.max_length = max_length
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "unknown"
        if len(value) > self.max_length or not value.isprintable():
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
            return value


class Metrics:
    """Every metric of one bridge, in its own registry (or the shared multiprocess files)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir:
            _enable_multiprocess(multiprocess_dir)
            # Values live in the shared files; the registry only reads them back at scrape.
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            target: CollectorRegistry | None = None
        else:
            self.registry = CollectorRegistry()
            target = self.registry
        self.model_label = BoundedLabel()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        call = ("grpc_service", "grpc_method", "grpc_type")
        self.calls = Counter(
            "bridge_grpc_server_handled",
            "gRPC calls completed, by method and status code.",
            (*call, "grpc_code"),
            registry=target,
        )
        self.call_seconds = Histogram(
            "bridge_grpc_server_handling_seconds",
            "Duration of gRPC calls from arrival to status (a stream: to its last message).",
            call,
            buckets=CALL_BUCKETS,
            registry=target,
        )
        self.in_flight = Gauge(
            "bridge_grpc_server_in_flight",
            'gRPC calls in progress; grpc_type="server_stream" counts open streams.',
            call,
            registry=target,
            multiprocess_mode="livesum",
        )
        self.first_message_seconds = Histogram(
            "bridge_grpc_server_first_message_seconds",
            "Time from a streaming call's arrival to its first message (time to first chunk).",
            ("grpc_service", "grpc_method"),
            buckets=FIRST_MESSAGE_BUCKETS,
            registry=target,
        )
        upstream = ("method", "route")
        self.upstream_requests = Counter(
            "bridge_upstream_requests",
            "Upstream HTTP requests (every attempt), by route and HTTP status "
            '("error" when no response arrived: connect error, reset, timeout).',
            (*upstream, "status"),
            registry=target,
        )
        self.upstream_seconds = Histogram(
            "bridge_upstream_request_seconds",
            "Time from sending an upstream request to its response headers (or its failure); "
            "for a stream, the wait for the stream to start.",
            upstream,
            buckets=UPSTREAM_BUCKETS,
            registry=target,
        )
        self.upstream_retries = Counter(
            "bridge_upstream_retries",
            "Upstream attempts after the first within one gRPC call (retries).",
            upstream,
            registry=target,
        )
        self.tokens = Counter(
            "bridge_tokens",
            "Tokens reported in the upstream's usage, by model and kind "
            "(prompt, completion, total).",
            ("model", "kind"),
            registry=target,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: labels are bounded, and prometheus_client's
        own lookup (validation, a lock) costs more than the increment itself."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    def count_usage(self, model: str | None, usage: Mapping[str, int]) -> None:
        label = self.model_label(model)
        for kind in ("prompt", "completion", "total"):
            value = usage.get(kind)
            if value:
                self.child(self.tokens, label, kind).inc(value)


def _enable_multiprocess(directory: str) -> None:
    """Switch prometheus_client to shared value files, even if it was imported before.

    The library picks its value class when first imported, from the environment; the bridge
    decides from its Config instead, which may be later, so it sets both here.
    """
    os.makedirs(directory, exist_ok=True)
    with _switch_lock:
        os.environ[MULTIPROC_ENV] = directory
        if values.ValueClass is values.MutexValue:
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


@dataclass
class SharedMetrics:
    """The supervisor's side of metrics with `--workers N` (see bridge.server.workers).

    `config` is what the workers get: `metrics_dir` set to a fresh shared directory, and
    `metrics_listen` with a real port when port 0 was asked for (held here by a bound
    SO_REUSEPORT socket, so that all workers share that one port).
    """

    config: Config
    directory: str | None = None
    owned: bool = False
    reserved: socket.socket | None = None

    @classmethod
    def prepare(cls, config: Config) -> SharedMetrics:
        if not config.metrics_listen:
            return cls(config)
        directory = config.metrics_dir
        owned = not directory
        if directory:
            # Files of an earlier run would be summed into this run's numbers.
            os.makedirs(directory, exist_ok=True)
            for name in os.listdir(directory):
                if name.endswith(".db"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(directory, name))
        else:
            directory = tempfile.mkdtemp(prefix="aigateway-bridge-metrics-")
        listen = config.metrics_listen
        reserved = None
        host, port = split_host_port(listen)
        if port == 0:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            reserved = socket.socket(family, socket.SOCK_STREAM)
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reserved.bind((host, 0))
            port = reserved.getsockname()[1]
            listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        shared = dataclasses.replace(config, metrics_dir=directory, metrics_listen=listen)
        return cls(shared, directory, owned, reserved)

    def worker_exited(self, pid: int | None) -> None:
        """Drop a dead worker's live gauges (calls in flight) from the sums."""
        if self.directory and pid is not None:
            multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self.reserved is not None:
            self.reserved.close()
        if self.owned and self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)


# ------------------------------------------------------------------------------ HTTP endpoint


@dataclass
class MetricsServer:
    """GET /metrics (and /) on aiohttp's web server, inside the bridge's own event loop.

    aiohttp parses the HTTP (HEAD comes with GET; other methods get 405, other paths 404) and
    binds with SO_REUSEPORT when asked, so worker processes can share one metrics port, which
    prometheus_client's own threaded server cannot.
    """

    metrics: Metrics
    runner: web.AppRunner
    host: str
    port: int

    @classmethod
    async def start(
        cls, metrics: Metrics, host: str, port: int, *, reuse_port: bool = False
    ) -> MetricsServer:
        async def scrape(request: web.Request) -> web.Response:
            # Multiprocess mode reads many files: keep that off the event loop.
            body = await asyncio.to_thread(metrics.exposition)
            response = web.Response(body=body)
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        app.router.add_get("/", scrape)
        # No access log: a scrape every few seconds would drown the bridge's own log.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound = runner.addresses[0][1]
        return cls(metrics, runner, host, bound)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.cleanup(), 1.0)
