"""Undecodable requests become INVALID_ARGUMENT with a BadRequest, not grpc's bare INTERNAL.

grpc.aio deserializes a request before any servicer code runs, and a message it cannot parse
ends the call with a status the caller cannot act on. `DecodingInterceptor` wraps each
handler's deserializer so that a parse failure becomes a `BridgeError` naming the request type.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message

from bridge.grpc_api.validation import MAX_NESTING, json_texts
from bridge.status import BridgeError, invalid_argument

Behavior: TypeAlias = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


class _Undecodable:
    """Stands for a request whose bytes protobuf refused, until the handler refuses the call."""

    __slots__ = ("error",)

    def __init__(self, error: BridgeError) -> None:
        self.error = error


class DecodingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A request that protobuf cannot decode is INVALID_ARGUMENT, not UNKNOWN; so is one
    whose JSON text fields (`json_texts`) cannot be decoded.

    grpc decodes the request with the handler's deserializer before any servicer code runs,
    and reports a parser's exception as UNKNOWN "Unexpected DecodeError" with a traceback in
    the log, per call. The usual cause is nesting deeper than `MAX_NESTING` (a caller's Struct
    about 33 objects deep), or a string that is not UTF-8. This interceptor gives unary-request
    handlers a deserializer that returns a stand-in instead of raising, and a behavior that
    refuses the stand-in with a status that says what is wrong. Innermost, so that the
    interceptors outside it (logs, metrics, access) see an ordinary refused call.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(
                request_deserializer=deserializer, unary_unary=_unary(handler.unary_unary)
            )
        if handler.unary_stream is not None:
            # A server-streaming method is an async generator, or a coroutine that writes
            # with context.write (grpc's health Watch).
            wrap = _streaming if inspect.isasyncgenfunction(handler.unary_stream) else _unary
            return handler._replace(
                request_deserializer=deserializer, unary_stream=wrap(handler.unary_stream)
            )
        return handler


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            request = deserializer(raw)
        except DecodeError as exc:
            return _Undecodable(_undecodable(str(exc)))
        if isinstance(request, Message):
            try:
                json_texts(request)
            except BridgeError as error:
                return _Undecodable(error)
        return request

    return deserialize


def _undecodable(reason: str) -> BridgeError:
    if "depth" in reason.lower():
        return invalid_argument(
            "request",
            f"nests messages deeper than protobuf's limit of {MAX_NESTING} levels (each level "
            "of JSON in a google.protobuf.Struct counts 3, so about 32 levels of JSON fit)",
        )
    return invalid_argument(
        "request",
        "is not a valid protobuf encoding of this method's request message (a string field "
        "that is not UTF-8, a truncated or mistyped field)",
    )


def _unary(behavior: Behavior) -> Behavior:
    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Undecodable):
            await request.error.abort(context)
        return await behavior(request, context)

    return checked


def _streaming(behavior: Behavior) -> Behavior:
    async def checked(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await request.error.abort(context)
        # aclosing: a cancelled call closes the servicer's generator (and with it the upstream
        # response) at once, as the access guard does.
        async with contextlib.aclosing(behavior(request, context)) as messages:
            async for message in messages:
                yield message

    return checked
