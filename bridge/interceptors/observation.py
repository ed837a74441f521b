"""Watching every call: a gRPC server interceptor and hooks on each upstream attempt.

The interceptor wraps each handler, so it sees the request (the model asked for), every
response (usage, the first chunk of a stream) and the final status, whatever the servicer
did; the upstream hooks see each HTTP attempt (status, latency, retries). A context variable
ties the two together: the hooks run inside the servicer's task, so they find the call they
belong to, and the access log line can name the upstream's x-request-id and attempt count.

Out of all this come the Prometheus metrics (bridge.telemetry.metrics), one access log line per call
(logger `bridge.access`) and OpenTelemetry spans (bridge.telemetry.tracing). Nothing here looks at
message content beyond `model` and `usage`, nor at any credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from bridge.telemetry import tracing
from bridge.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("bridge.access")

# Probes call these every few seconds: their lines go to DEBUG, not to every INFO log.
QUIET_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
MAX_ID_LENGTH = 128


@dataclass
class Call:
    """What is known about one gRPC call while it runs."""

    service: str
    method: str
    kind: str
    started: float
    model: str | None = None
    request_id: str | None = None
    attempts: int = 0
    upstream_status: int | None = None
    upstream_request_id: str | None = None
    first_message: bool = False
    traced: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    usage_model: str | None = None


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("bridge_call", default=None)


def current_call() -> Call | None:
    return _current.get()


def request_read(request: Any) -> None:
    """Tell the current call its parsed request (for the model it names).

    The access guard (bridge.interceptors.access) parses aigateway.v1 requests itself, after the
    access
    check, so the interceptor here sees only their bytes; the guard calls this once parsed.
    """
    call = _current.get()
    if call is not None and call.kind in ("unary", "server_stream"):
        call.model = _model_of(request)


def _split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or full


def clean_id(value: str | bytes | None) -> str | None:
    """A caller-supplied id, bounded and printable, fit for a log line."""
    if not isinstance(value, str) or not value:
        return None
    value = value[:MAX_ID_LENGTH]
    return value if value.isprintable() else value.encode("unicode_escape").decode()


def _usage_of(message: Any) -> dict[str, int]:
    """prompt/completion/total tokens of a response's `usage`, when it has one set."""
    try:
        if not message.HasField("usage"):
            return {}
    except (ValueError, AttributeError):
        return {}
    usage = message.usage
    found: dict[str, int] = {}
    for kind in ("prompt", "completion", "total"):
        name = f"{kind}_tokens"
        try:
            if usage.HasField(name):
                found[kind] = int(getattr(usage, name))
        except ValueError:
            value = getattr(usage, name, 0)
            if value:
                found[kind] = int(value)
    return found


def _model_of(message: Any) -> str | None:
    model = getattr(message, "model", None)
    return model if isinstance(model, str) and model else None


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler of the server with metrics, the access log and a server span."""

    def __init__(self, metrics: Metrics | None, tracer: tracing.Tracing | None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split_method(handler_call_details.method)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=self._wrap(handler.unary_unary, service, method, "unary")
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=self._wrap(handler.unary_stream, service, method, "server_stream")
            )
        if handler.stream_unary is not None:
            return handler._replace(
                stream_unary=self._wrap(handler.stream_unary, service, method, "client_stream")
            )
        return handler._replace(
            stream_stream=self._wrap(handler.stream_stream, service, method, "bidi_stream")
        )

    def _wrap(
        self, behavior: Callable[..., Any], service: str, method: str, kind: str
    ) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                call, span = self._begin(service, method, kind, request, context)
                error: BaseException | None = None
                try:
                    # Closed here, not whenever it is collected: its `finally` closes the
                    # upstream response, which a cancelled call must release at once.
                    async with contextlib.aclosing(behavior(request, context)) as responses:
                        async for response in responses:
                            self._message(call, response)
                            yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._end(call, span, context, error)

            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call, span = self._begin(service, method, kind, request, context)
            error: BaseException | None = None
            try:
                response = await behavior(request, context)
                if response is not None:
                    self._message(call, response)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(call, span, context, error)

        return unary

    # ------------------------------------------------------------------ per call

    def _begin(
        self,
        service: str,
        method: str,
        kind: str,
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> tuple[Call, tuple[Any, object] | None]:
        metadata = tuple(context.invocation_metadata() or ())
        call = Call(service, method, kind, time.perf_counter())
        if kind in ("unary", "server_stream") and not isinstance(request, bytes):
            call.model = _model_of(request)
        for key, value in metadata:
            if key == "x-request-id":
                call.request_id = clean_id(value)
        _current.set(call)
        if self.metrics is not None:
            self.metrics.child(self.metrics.in_flight, service, method, kind).inc()
        span = None
        if self.tracer is not None and self.tracer.active:
            span = self.tracer.start_server_span(service, method, metadata)
            call.traced = True
        return call, span

    def _message(self, call: Call, response: Any) -> None:
        if not call.first_message:
            call.first_message = True
            if call.kind == "server_stream" and self.metrics is not None:
                self.metrics.child(
                    self.metrics.first_message_seconds, call.service, call.method
                ).observe(time.perf_counter() - call.started)
        usage = _usage_of(response)
        if usage:
            # The last usage of a call counts, once, when it ends: OpenAI sends one in the
            # final chunk, but vLLM's continuous_usage_stats sends a running total in every
            # chunk, which summing would count many times over.
            call.usage = usage
            call.usage_model = _model_of(response) or call.model

    def _end(
        self,
        call: Call,
        span: tuple[Any, object] | None,
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
    ) -> None:
        elapsed = time.perf_counter() - call.started
        code = _status_of(context, error)
        if self.metrics is not None:
            labels = (call.service, call.method, call.kind)
            self.metrics.child(self.metrics.in_flight, *labels).dec()
            self.metrics.child(self.metrics.calls, *labels, code).inc()
            self.metrics.child(self.metrics.call_seconds, *labels).observe(elapsed)
            if call.usage:
                self.metrics.count_usage(call.usage_model, call.usage)
        trace_id = None
        if span is not None and self.tracer is not None:
            trace_id = _trace_id(span[0])
            self.tracer.end_server_span(
                span[0],
                span[1],
                code,
                {
                    "aigateway.model": call.model,
                    "aigateway.upstream.attempts": call.attempts or None,
                },
            )
        fields: dict[str, Any] = {
            "grpc_method": f"{call.service}/{call.method}",
            "grpc_code": code,
            "duration_ms": round(elapsed * 1000, 1),
        }
        optional = {
            "model": call.model,
            "request_id": call.request_id,
            "upstream_request_id": call.upstream_request_id,
            "upstream_status": call.upstream_status,
            "upstream_attempts": call.attempts or None,
            "trace_id": trace_id,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        for kind, value in call.usage.items():
            fields[f"{kind}_tokens"] = value
        level = logging.DEBUG if call.service in QUIET_SERVICES else logging.INFO
        if access_log.isEnabledFor(level):
            # What `access_log.log` does, less its walk up the stack to find the caller (a
            # measurable share of a unary call): this line's origin is always here.
            access_log.handle(
                access_log.makeRecord(
                    access_log.name, level, __file__, 0, "grpc call", (), None, extra=fields
                )
            )


def _status_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The status the caller sees, as a grpc.StatusCode name."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = None
    try:
        code = context.code()
    except Exception:  # older grpc: no code() on aio contexts
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return str(candidate.name)
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return "UNKNOWN"
    return "OK"


def _trace_id(span: Any) -> str | None:
    context = span.get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None
