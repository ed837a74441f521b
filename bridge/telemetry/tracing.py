"""OpenTelemetry tracing, used only when the `otel` extra is installed.

Without OpenTelemetry the caller's `traceparent` and `tracestate` still reach the upstream
unchanged (they are on the metadata allowlist), so the upstream's own spans join the
caller's trace. With it, the bridge becomes a hop of that trace: a SERVER span per RPC that
continues the caller's context, a CLIENT span per upstream attempt under it, and the
upstream receives the CLIENT span's `traceparent` instead of the caller's.

Attributes that can hold what a caller chose (the model id) are bounded and escaped like log
fields (`bridge.telemetry.logs.clean`): an 8 MiB model id must not become an 8 MiB span attribute.

Spans go to the process's global tracer provider (whatever `opentelemetry-instrument` or
the host application configured) unless `--trace-exporter` asks the bridge to set up its
own SDK provider with a console or OTLP exporter.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.telemetry.logs import clean

log = logging.getLogger(__name__)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    AVAILABLE = False

EXPORTERS = ("none", "console", "otlp")
SERVICE_NAME = "aigateway-bridge"

# OpenTelemetry's gRPC conventions: these codes make a SERVER span an error; the others
# (NOT_FOUND, INVALID_ARGUMENT...) are the caller's problem, not the server's.
_SERVER_ERROR_CODES = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


class TracingUnavailable(RuntimeError):
    """A --trace-exporter was asked for but the packages it needs are not installed."""


class Tracing:
    """Starts the bridge's spans; one per bridge, holding its tracer (and provider, if own)."""

    def __init__(self, exporter: str = "none") -> None:
        if not AVAILABLE:
            raise TracingUnavailable(
                "--trace-exporter needs OpenTelemetry: pip install 'aigateway-bridge[otel]'"
            )
        self._provider: Any = None
        if exporter != "none":
            self._provider = _sdk_provider(exporter)
        self.tracer = trace.get_tracer("bridge", tracer_provider=self._provider)

    @property
    def active(self) -> bool:
        """Whether spans would be recorded: the bridge's own provider, or a global one set up.

        Without one, OpenTelemetry's spans are no-ops that only copy the caller's context,
        which the metadata allowlist already forwards; skipping them saves their cost (about
        a tenth of a millisecond per call) on every call.
        """
        if self._provider is not None:
            return True
        return not isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
        )

    def shutdown(self) -> None:
        """Flush and stop the bridge's own provider (the global one belongs to the host)."""
        if self._provider is not None:
            self._provider.shutdown()

    # ------------------------------------------------------------------ server side

    def start_server_span(
        self, service: str, method: str, metadata: Iterable[tuple[str, str | bytes]]
    ) -> tuple[Any, object]:
        """A SERVER span continuing the caller's trace, made current; returns (span, token)."""
        carrier = {k: v for k, v in metadata if isinstance(v, str)}
        parent = propagate.extract(carrier)
        span = self.tracer.start_span(
            f"{service}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end_server_span(
        self, span: Any, token: object, code: str, attributes: Mapping[str, Any]
    ) -> None:
        """End a SERVER span with its status; string attributes are bounded (`clean`)."""
        with contextlib.suppress(Exception):
            otel_context.detach(token)  # type: ignore[arg-type]
        span.set_attribute("rpc.grpc.status_code", _code_number(code))
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, clean(value) if isinstance(value, str) else value)
        if code in _SERVER_ERROR_CODES:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()

    # ------------------------------------------------------------------ client side

    def start_client_span(
        self, method: str, route: str, host: str, attempt: int, headers: Any
    ) -> Any:
        """A CLIENT span for one upstream attempt; its context is injected into `headers`."""
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.template": route,
            "server.address": host,
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        span = self.tracer.start_span(
            f"{method} {route}", kind=SpanKind.CLIENT, attributes=attributes
        )
        # Replaces the caller's traceparent/tracestate: the upstream's parent is this span,
        # which is in the caller's trace.
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return span

    @staticmethod
    def client_responded(span: Any, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))

    @staticmethod
    def client_failed(span: Any, error: BaseException) -> None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    @staticmethod
    def current_trace_id() -> str | None:
        """The current span's trace id in hex, for log lines; None outside a span."""
        context = trace.get_current_span().get_span_context()
        return f"{context.trace_id:032x}" if context.is_valid else None


def _code_number(name: str) -> int:
    import grpc

    for code in grpc.StatusCode:
        if code.name == name:
            return int(code.value[0])
    return 2  # UNKNOWN


def _sdk_provider(exporter: str) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise TracingUnavailable(
            f"--trace-exporter {exporter} needs the OpenTelemetry SDK: "
            "pip install 'aigateway-bridge[otel]'"
        ) from None
    span_exporter: Any
    if exporter == "console":
        # sys.stdout as it is now (its default is bound when the SDK is imported).
        span_exporter = ConsoleSpanExporter(out=sys.stdout)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            raise TracingUnavailable(
                "--trace-exporter otlp needs opentelemetry-exporter-otlp-proto-grpc "
                "(pip install opentelemetry-exporter-otlp-proto-grpc==1.45.2); its endpoint "
                "comes from OTEL_EXPORTER_OTLP_ENDPOINT"
            ) from None
        span_exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider
