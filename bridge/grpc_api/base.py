"""The three gRPC services: each RPC is one upstream request, translated both ways.

Servicers stay thin: check the request, translate it (aigateway_json), call the upstream
(bridge.upstream.client), translate the answer. Every failure arrives as a BridgeError and becomes
the call's status in `_failing`, the one place that aborts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar, overload

import grpc
from aigateway.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    embeddings_pb2,
    embeddings_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from aigateway_json import ChatRequest, ResponseRequest, TranslationError, from_json, request_body
from google.protobuf.message import Message

from bridge.grpc_api import validation
from bridge.status import BridgeError
from bridge.telemetry.redaction import Redactor
from bridge.upstream import transport_failures
from bridge.upstream.client import Upstream

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
U = TypeVar("U")
UpstreamRequest: TypeAlias = ChatRequest | embeddings_pb2.CreateEmbeddingsRequest | ResponseRequest
"""A request message the bridge sends on as a JSON body (`aigateway_json.request_body`)."""


def deadline_of(context: Context) -> float | None:
    """The caller's deadline on the event loop's clock, or None when it set none."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


_MAX_EXPANSION = 6
"""How many times its JSON body's size an answer's protobuf encoding can be, at most (see
`_Base.check_answer_size`)."""


class _Base:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def check_size(self, request: Message) -> None:
        """Reject a request over --max-message-bytes before anything is sent upstream."""
        validation.message_size(request, self.upstream.config.max_message_bytes)

    def headers(self, context: Context) -> dict[str, str]:
        return self.upstream.headers_for(context.invocation_metadata() or ())

    def redactor(self, context: Context) -> Redactor:
        """The call's credentials to cut from what it gets back (DESIGN.md "Credentials"):
        the upstream boundary redacts its own errors; this covers what servicers add after
        it (a translation error naming an upstream key, the returned headers)."""
        return self.upstream.redactor(dict(context.invocation_metadata() or ()))

    async def fail(self, context: Context, error: BridgeError) -> NoReturn:
        """End the call with `error`, the call's credentials redacted from it."""
        await error.redacted(self.redactor(context)).abort(context)

    def parse(self, message_type: type[T], data: dict[str, Any], request_id: str | None) -> T:
        """Translate an upstream answer; a shape no message can hold is the upstream's fault."""
        try:
            return from_json(message_type, data)  # type: ignore[type-var]
        except TranslationError as exc:
            raise transport_failures.transport_error(
                "malformed", domain=self.upstream.domain, detail=str(exc), request_id=request_id
            ) from None

    @overload
    async def unary(
        self,
        context: Context,
        answer: type[T],
        path: str,
        request: UpstreamRequest | None = None,
        *,
        model: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> T: ...

    @overload
    async def unary(
        self,
        context: Context,
        answer: type[U],
        path: str,
        request: UpstreamRequest | None = None,
        *,
        model: str | None = None,
        check: Callable[[], None] | None = None,
        wrap: Callable[[U], T],
    ) -> T: ...

    async def unary(
        self,
        context: Context,
        answer: type[Any],
        path: str,
        request: UpstreamRequest | None = None,
        *,
        model: str | None = None,
        check: Callable[[], None] | None = None,
        wrap: Callable[[Any], Any] | None = None,
    ) -> Any:
        """One unary call: `check` (the request's own rules), the upstream exchange (a POST of
        `request`'s JSON body to `path`, or a GET without one), the answer translated into
        `answer` (or into what `wrap` makes of that), then sent with the upstream's returned
        headers as initial metadata. A BridgeError anywhere ends the call with its status."""
        try:
            if check is not None:
                check()
            if request is None:
                reply = await self.upstream.get_json(
                    path, headers=self.headers(context), deadline=deadline_of(context), model=model
                )
            else:
                body = request_body(request)  # never streams, whatever extra_fields says
                reply = await self.upstream.post_json(
                    path,
                    body,
                    headers=self.headers(context),
                    deadline=deadline_of(context),
                    model=model,
                )
            result: Any = self.parse(answer, reply.data, reply.headers.get("x-request-id"))
            if wrap is not None:
                result = wrap(result)
            self.check_answer_size(result, reply.size)
        except BridgeError as error:
            await self.fail(context, error)
        if reply.metadata:
            # A batch of its own in gRPC core (a write and a completion, ~10% of a call's
            # CPU); without headers to return, the answer's batch carries empty metadata.
            await context.send_initial_metadata(reply.metadata)
        return result

    def send_limit(self) -> int:
        """The largest message grpc sends (`grpc.max_send_message_length`, set by
        bridge.server.assembly): twice --max-response-bytes."""
        return min(2 * self.upstream.config.max_response_bytes, 2**31 - 1)

    def measured_above(self) -> int:
        """The JSON size above which `check_answer_size` measures an answer: a stream looks
        this up once, then compares each event's size to it (one comparison per chunk)."""
        return self.send_limit() // _MAX_EXPANSION

    def check_answer_size(
        self, answer: Message, body_size: int, request_id: str | None = None
    ) -> None:
        """An answer grpc would refuse to send (over twice --max-response-bytes) becomes the
        bridge's own RESPONSE_TOO_LARGE, with details, instead of grpc's bare error after the
        call was logged as OK (or, for a streamed message, as CANCELLED).

        `body_size` is the size of the JSON the answer (or streamed message) was made from:
        bytes of a body, characters of an event's data (a character is at most 4 bytes in a
        protobuf string, under the bound below). Only an answer from JSON over a sixth of the
        limit is measured: upb's `ByteSize()` encodes the whole message, as long as the
        serialization grpc does next (~20 ms for a 12 MB embeddings answer). A protobuf
        encoding is at most about 5.5 times its JSON: a small integer in a free-form array
        (`1,`, 2 bytes) becomes a `google.protobuf.Value` of 11.
        """
        limit = self.send_limit()
        if body_size * _MAX_EXPANSION <= limit:
            return
        size = answer.ByteSize()
        if size > limit:
            raise transport_failures.transport_error(
                "too_large",
                domain=self.upstream.domain,
                detail=f"its gRPC answer is {size} bytes, over twice --max-response-bytes "
                f"({limit} bytes)",
                request_id=request_id,
            )


class ModelsService(_Base, models_pb2_grpc.ModelsServiceServicer):
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        return await self.unary(context, models_pb2.ListModelsResponse, "/models")

    async def RetrieveModel(
        self, request: models_pb2.RetrieveModelRequest, context: Context
    ) -> models_pb2.RetrieveModelResponse:
        def check() -> None:
            self.check_size(request)
            validation.model_id(request.model)

        return await self.unary(
            context,
            models_pb2.Model,
            self.upstream.url_for_model(request.model),
            model=request.model,
            check=check,
            wrap=lambda model: models_pb2.RetrieveModelResponse(model=model),
        )


class ChatService(_Base, chat_pb2_grpc.ChatServiceServicer):
    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context
    ) -> chat_pb2.CreateChatCompletionResponse:
        def check() -> None:
            self.check_size(request)
            validation.chat(request)

        return await self.unary(
            context,
            chat_pb2.CreateChatCompletionResponse,
            "/chat/completions",
            request,
            model=request.model,
            check=check,
        )

    async def StreamChatCompletion(
        self, request: chat_pb2.StreamChatCompletionRequest, context: Context
    ) -> AsyncIterator[chat_pb2.StreamChatCompletionResponse]:
        try:
            self.check_size(request)
            validation.chat(request)
            body = request_body(request)  # "stream": true
            first = True
            rid: str | None = None
            measured_above = self.measured_above()
            async with self.upstream.stream(
                "/chat/completions",
                body,
                headers=self.headers(context),
                deadline=deadline_of(context),
                model=request.model,
            ) as stream:
                async for data in stream:
                    if first:
                        # Once per stream: a header lookup per chunk is measurable.
                        rid = stream.response_headers.get("x-request-id")
                    chunk = self.parse(chat_pb2.StreamChatCompletionResponse, data, rid)
                    if stream.last_size > measured_above:
                        self.check_answer_size(chunk, stream.last_size, rid)
                    if first:
                        first = False
                        if stream.metadata:  # else the first message's batch carries none
                            await context.send_initial_metadata(stream.metadata)
                    yield chunk
        except BridgeError as error:
            await self.fail(context, error)


class EmbeddingsService(_Base, embeddings_pb2_grpc.EmbeddingsServiceServicer):
    async def CreateEmbeddings(
        self, request: embeddings_pb2.CreateEmbeddingsRequest, context: Context
    ) -> embeddings_pb2.CreateEmbeddingsResponse:
        def check() -> None:
            self.check_size(request)
            validation.embeddings(request)

        return await self.unary(
            context,
            embeddings_pb2.CreateEmbeddingsResponse,
            "/embeddings",
            request,
            model=request.model,
            check=check,
        )
