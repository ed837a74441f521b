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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

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


class UpstreamHooks:
    """Called by bridge.upstream.client around every HTTP attempt (see `Upstream.hooks`)."""

    def __init__(
        self, metrics: Metrics | None, tracer: tracing.Tracing | None, base_url: str
    ) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.base_path = httpx.URL(base_url).path.rstrip("/")
        self.host = httpx.URL(base_url).host

    def started(self, request: httpx.Request) -> None:
        route = route_of(request.url.path, self.base_path)
        call = current_call()
        attempt = 1
        if call is not None:
            call.attempts += 1
            attempt = call.attempts
        if attempt > 1 and self.metrics is not None:
            self.metrics.child(self.metrics.upstream_retries, request.method, route).inc()
        request.extensions["bridge_observed"] = (route, time.perf_counter())
        traced = call.traced if call is not None else self.tracer is not None and self.tracer.active
        if self.tracer is not None and traced:
            span = self.tracer.start_client_span(
                request.method, route, self.host, attempt, request.headers
            )
            request.extensions["bridge_span"] = span

    def responded(self, request: httpx.Request, response: httpx.Response) -> None:
        route, started = request.extensions.get("bridge_observed", ("other", time.perf_counter()))
        if self.metrics is not None:
            self.metrics.child(
                self.metrics.upstream_requests, request.method, route, str(response.status_code)
            ).inc()
            self.metrics.child(self.metrics.upstream_seconds, request.method, route).observe(
                time.perf_counter() - started
            )
        call = current_call()
        if call is not None:
            call.upstream_status = response.status_code
            call.upstream_request_id = clean_id(response.headers.get("x-request-id"))
        span = request.extensions.get("bridge_span")
        if span is not None:
            tracing.Tracing.client_responded(span, response.status_code)
            # The attempt lasts until its body is read or the stream is closed.
            response.stream = _EndSpanOnClose(response.stream, span)

    def failed(self, request: httpx.Request, error: BaseException) -> None:
        route, started = request.extensions.get("bridge_observed", ("other", time.perf_counter()))
        if self.metrics is not None:
            status = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
            self.metrics.child(self.metrics.upstream_requests, request.method, route, status).inc()
            self.metrics.child(self.metrics.upstream_seconds, request.method, route).observe(
                time.perf_counter() - started
            )
        span = request.extensions.get("bridge_span")
        if span is not None:
            tracing.Tracing.client_failed(span, error)


class _EndSpanOnClose(httpx.AsyncByteStream):
    """The response body stream, ending the attempt's span when httpx closes it."""

    def __init__(self, inner: Any, span: Any) -> None:
        self._inner = inner
        self._span = span

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._span is not None:
                self._span.end()
                self._span = None


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
