"""Observability assembled: metrics, access log and spans for both sides of a call.

`Observability` is built once per process from the Config and owns the metrics endpoint; it
hands the gRPC side its `CallInterceptor` and the upstream side its `UpstreamHooks`, which
`bridge.upstream.client` calls around every HTTP attempt (route, status, duration in seconds,
pool waits; a client span per attempt when tracing is on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc

from bridge.config import Config, ConfigError, split_host_port
from bridge.interceptors.observation import CallInterceptor, clean_id, current_call
from bridge.telemetry import tracing
from bridge.telemetry.metrics import Metrics, MetricsServer

log = logging.getLogger(__name__)

_ROUTES = ("/chat/completions", "/embeddings", "/models")


def route_of(path: str, base_path: str) -> str:
    """The path template of an upstream request: bounded, no model ids in metric labels."""
    if base_path and path.startswith(base_path):
        path = path[len(base_path) :]
    if path.startswith("/models/"):
        return "/models/{model}"
    return path if path in _ROUTES else "other"


class Attempt:
    """One HTTP attempt as observed: its route and start, and its span when traced.

    `bridge.upstream.client` reports its outcome once (`responded` or `failed`) and, for a
    response, `closed` when the body is read or the stream closed (the span lasts until then).
    """

    __slots__ = ("_hooks", "_method", "_route", "_span", "_started")

    def __init__(self, hooks: UpstreamHooks, method: str, route: str, span: Any) -> None:
        self._hooks = hooks
        self._method = method
        self._route = route
        self._span = span
        self._started = time.perf_counter()

    def responded(
        self, status: int, headers: Mapping[str, str], redact: Callable[[str], str] = str
    ) -> None:
        """The response head arrived; `redact` cuts the call's credentials out of what is
        logged (an upstream may echo the key it got in `x-request-id`)."""
        metrics = self._hooks.metrics
        if metrics is not None:
            metrics.child(metrics.upstream_requests, self._method, self._route, str(status)).inc()
            metrics.child(metrics.upstream_seconds, self._method, self._route).observe(
                time.perf_counter() - self._started
            )
        call = current_call()
        if call is not None:
            call.upstream_status = status
            upstream_id = headers.get("x-request-id")
            call.upstream_request_id = clean_id(redact(upstream_id) if upstream_id else None)
        if self._span is not None:
            tracing.Tracing.client_responded(self._span, status)

    def failed(self, error: BaseException) -> None:
        metrics = self._hooks.metrics
        if metrics is not None:
            status = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
            metrics.child(metrics.upstream_requests, self._method, self._route, status).inc()
            metrics.child(metrics.upstream_seconds, self._method, self._route).observe(
                time.perf_counter() - self._started
            )
        if self._span is not None:
            tracing.Tracing.client_failed(self._span, error)
            self._span = None

    def closed(self) -> None:
        if self._span is not None:
            self._span.end()
            self._span = None


class UpstreamHooks:
    """Called by bridge.upstream.client around every HTTP attempt (see `Upstream.hooks`)."""

    def __init__(
        self, metrics: Metrics | None, tracer: tracing.Tracing | None, base_url: str
    ) -> None:
        self.metrics = metrics
        self.tracer = tracer
        parts = urlsplit(base_url)
        self.base_path = parts.path.rstrip("/")
        self.host = parts.hostname or ""

    def started(self, method: str, path: str, headers: MutableMapping[str, str]) -> Attempt:
        """An attempt at `method` `path` begins; with tracing on, its span's context is
        written into the request `headers` (W3C traceparent)."""
        route = route_of(path, self.base_path)
        call = current_call()
        attempt = 1
        if call is not None:
            call.attempts += 1
            attempt = call.attempts
        if attempt > 1 and self.metrics is not None:
            self.metrics.child(self.metrics.upstream_retries, method, route).inc()
        traced = call.traced if call is not None else self.tracer is not None and self.tracer.active
        span = None
        if self.tracer is not None and traced:
            span = self.tracer.start_client_span(method, route, self.host, attempt, headers)
        return Attempt(self, method, route, span)


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass
class Observability:
    """What `server.start` installs: the interceptor, the upstream hooks, the metrics port."""

    interceptor: CallInterceptor
    metrics: Metrics | None
    metrics_server: MetricsServer | None
    tracer: tracing.Tracing | None

    @classmethod
    async def start(cls, config: Config) -> Observability:
        metrics = None
        server = None
        if getattr(config, "metrics_listen", None):
            host, port = split_host_port(config.metrics_listen)  # type: ignore[arg-type]
            workers = int(getattr(config, "workers", 1) or 1)
            directory = getattr(config, "metrics_dir", None)
            if workers > 1 and not directory:
                raise ConfigError(
                    "--workers > 1 with --metrics-listen needs a shared metrics directory "
                    "(--metrics-dir / PROMETHEUS_MULTIPROC_DIR); the supervisor sets one"
                )
            metrics = Metrics(multiprocess_dir=directory)
            try:
                server = await MetricsServer.start(metrics, host, port, reuse_port=workers > 1)
            except OSError as exc:
                raise OSError(
                    f"could not bind --metrics-listen {config.metrics_listen}: {exc}"
                ) from None
            log.info(
                "metrics endpoint",
                extra={"metrics_url": f"http://{host_for_url(host)}:{server.port}/metrics"},
            )
        tracer = None
        exporter = getattr(config, "trace_exporter", "none")
        if tracing.AVAILABLE or exporter != "none":
            try:
                tracer = tracing.Tracing(exporter)
            except tracing.TracingUnavailable as exc:
                if server is not None:
                    await server.aclose()
                raise ConfigError(str(exc)) from None
        return cls(CallInterceptor(metrics, tracer), metrics, server, tracer)

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.interceptor]

    def attach(self, upstream: Any) -> None:
        """Observe the upstream's attempts (metrics, spans, the access log's upstream ids)."""
        upstream.hooks = UpstreamHooks(self.metrics, self.tracer, upstream.base_url)

    async def aclose(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.aclose()
        if self.tracer is not None:
            self.tracer.shutdown()
