"""A Python client of the aigateway bridge, with the stubs that come with the package.

`pip install` the project (or `make`, which creates .venv) and the generated code is importable
as `aigateway.v1`; no code generator is needed. Every call has a deadline, one stream is
cancelled, and failed calls are decoded down to their rich error details.

Usage: python examples/python/client.py [ADDRESS]   (default $BRIDGE_ADDR, else 127.0.0.1:50051)

It prints one line per step and exits 1 on the first unexpected outcome.
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
from aigateway.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    common_pb2,
    embeddings_pb2,
    embeddings_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    responses_pb2,
    responses_pb2_grpc,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

CALL_TIMEOUT = 30.0
"""Deadline of every ordinary call, in seconds: a client should never wait forever."""
SHORT_DEADLINE = 0.5
"""Deadline of the call that is meant to run out, in seconds."""

CHAT_MODEL = os.environ.get("CHAT_MODEL") or "openai/gpt-4o-mini"
EMBEDDING_MODEL = os.environ.get("EMBEDDING_MODEL") or "openai/text-embedding-3-small"

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
)


class Unexpected(Exception):
    """An outcome the example did not expect."""


def user_message(text: str) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(role="user", content_text=text)


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.models = models_pb2_grpc.ModelsServiceStub(channel)
        self.chat = chat_pb2_grpc.ChatServiceStub(channel)
        self.embeddings = embeddings_pb2_grpc.EmbeddingsServiceStub(channel)
        self.responses = responses_pb2_grpc.ResponsesServiceStub(channel)

    async def list_models(self) -> None:
        response = await self.models.ListModels(
            models_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT
        )
        if not response.data:
            raise Unexpected("ListModels: no models")
        print("models:", ", ".join(m.id for m in response.data))

    async def unary_chat(self) -> None:
        response = await self.chat.CreateChatCompletion(
            chat_pb2.CreateChatCompletionRequest(
                model=CHAT_MODEL, messages=[user_message("Say hello to the Python client.")]
            ),
            timeout=CALL_TIMEOUT,
        )
        if not response.choices or not response.choices[0].message.content:
            raise Unexpected(f"CreateChatCompletion: no reply in {response}")
        choice = response.choices[0]
        print(
            f"unary: {choice.message.content} (finish_reason={choice.finish_reason}, "
            f"total_tokens={response.usage.total_tokens})"
        )

    async def stream_chat(self) -> None:
        request = chat_pb2.StreamChatCompletionRequest(
            model=CHAT_MODEL,
            messages=[user_message("Stream a greeting to the Python client.")],
            stream_options=chat_pb2.StreamOptions(include_usage=True),
        )
        print("stream: ", end="", flush=True)
        chunks, text, finish = 0, "", ""
        usage: chat_pb2.Usage | None = None
        async for chunk in self.chat.StreamChatCompletion(request, timeout=CALL_TIMEOUT):
            chunks += 1
            for choice in chunk.choices:
                print(choice.delta.content, end="", flush=True)  # each token as it arrives
                text += choice.delta.content
                if choice.HasField("finish_reason"):
                    finish = choice.finish_reason
            if chunk.HasField("usage"):
                usage = chunk.usage
        print()
        if not text or usage is None:
            raise Unexpected(f"StreamChatCompletion: no text or no usage in {chunks} chunks")
        print(
            f"stream: {chunks} chunks, finish_reason={finish}, "
            f"usage={usage.prompt_tokens}+{usage.completion_tokens} tokens"
        )

    async def stream_response(self) -> None:
        """The Responses API: typed events, one per server-sent event, in order."""
        request = responses_pb2.StreamResponseRequest(
            model=CHAT_MODEL, input_text="Stream a response to the Python client."
        )
        print("response: ", end="", flush=True)
        events, text, final = 0, "", None
        async for event in self.responses.StreamResponse(request, timeout=CALL_TIMEOUT):
            events += 1
            kind = event.WhichOneof("event")
            if kind == "response_output_text_delta":
                print(event.response_output_text_delta.delta, end="", flush=True)
                text += event.response_output_text_delta.delta
            elif kind in ("response_completed", "response_incomplete"):
                final = getattr(event, kind).response
        print()
        if not text or final is None:
            raise Unexpected(f"StreamResponse: no text or no terminal event in {events} events")
        print(
            f"response: {events} events, status={final.status}, "
            f"usage={final.usage.input_tokens}+{final.usage.output_tokens} tokens"
        )

    async def create_embeddings(self) -> None:
        response = await self.embeddings.CreateEmbeddings(
            embeddings_pb2.CreateEmbeddingsRequest(
                model=EMBEDDING_MODEL,
                input_strings=common_pb2.StringList(values=["first input", "second input"]),
            ),
            timeout=CALL_TIMEOUT,
        )
        if len(response.data) != 2:
            raise Unexpected(f"CreateEmbeddings: {len(response.data)} vectors for 2 inputs")
        dimensions = len(response.data[0].embedding_float.values)
        if not dimensions:
            raise Unexpected("CreateEmbeddings: empty vector")
        print(f"embeddings: {len(response.data)} vectors of {dimensions} dimensions")

    def long_story(
        self, timeout: float
    ) -> grpc.aio.UnaryStreamCall[
        chat_pb2.StreamChatCompletionRequest, chat_pb2.StreamChatCompletionResponse
    ]:
        """A stream long enough to outlast the short deadline and the cancellation."""
        return self.chat.StreamChatCompletion(
            chat_pb2.StreamChatCompletionRequest(
                model=CHAT_MODEL,
                messages=[user_message("Write a very long story about deadlines.")],
                max_tokens=2000,
            ),
            timeout=timeout,
        )

    async def deadline(self) -> None:
        chunks = 0
        try:
            async for _ in self.long_story(SHORT_DEADLINE):
                chunks += 1
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Unexpected(
                    f"deadline: want DEADLINE_EXCEEDED, got {err.code().name}"
                ) from err
        else:
            raise Unexpected("deadline: want DEADLINE_EXCEEDED, got OK")
        print(
            f"deadline: DEADLINE_EXCEEDED after {chunks} chunks within "
            f"{int(SHORT_DEADLINE * 1000)}ms, as expected"
        )

    async def cancel_stream(self) -> None:
        wanted = 3
        call = self.long_story(CALL_TIMEOUT)
        for _ in range(wanted):
            await call.read()
        call.cancel()  # the bridge closes the upstream response at once
        if await call.code() != grpc.StatusCode.CANCELLED:
            raise Unexpected(f"cancel: want CANCELLED, got {(await call.code()).name}")
        print(f"cancel: CANCELLED after {wanted} chunks, as expected")

    async def expect_error(self, model: str, want: grpc.StatusCode) -> status_pb2.Status:
        try:
            await self.models.RetrieveModel(
                models_pb2.RetrieveModelRequest(model=model), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != want:
                raise Unexpected(f"error: want {want.name}, got {err.code().name}") from err
            print(f"error: {want.name} {err.details()}")
            # grpc-status-details-bin, decoded: a google.rpc.Status with Any details.
            status = rpc_status.from_call(err)
            if status is None or status.message != err.details():
                raise Unexpected("error: no google.rpc.Status matching the status") from err
            print_details(status)
            return status
        raise Unexpected(f"error: RetrieveModel({model}) succeeded; want {want.name}")

    async def error_details(self) -> None:
        # An unknown model: the upstream answers 404, the bridge NOT_FOUND with ResourceInfo.
        status = await self.expect_error("no-such/model", grpc.StatusCode.NOT_FOUND)
        found = {type(d) for d in decode(status)}
        if not {error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo} <= found:
            raise Unexpected("error: NOT_FOUND without ErrorInfo and ResourceInfo")
        # An invalid model id, rejected by the bridge itself with a BadRequest naming the field.
        status = await self.expect_error("../x", grpc.StatusCode.INVALID_ARGUMENT)
        bad = [d for d in decode(status) if isinstance(d, error_details_pb2.BadRequest)]
        if not bad or not bad[0].field_violations or bad[0].field_violations[0].field != "model":
            raise Unexpected("error: INVALID_ARGUMENT without a BadRequest for field model")


def decode(status: status_pb2.Status) -> list[Message]:
    """The details of a google.rpc.Status whose types are known here, unpacked."""
    found: list[Message] = []
    for any_ in status.details:
        for detail_type in _DETAIL_TYPES:
            if any_.Is(detail_type.DESCRIPTOR):
                detail = detail_type()
                any_.Unpack(detail)
                found.append(detail)
    return found


def print_details(status: status_pb2.Status) -> None:
    for detail in decode(status):
        match detail:
            case error_details_pb2.ErrorInfo():
                metadata = ", ".join(f"{k}={v}" for k, v in sorted(detail.metadata.items()))
                print(
                    f"error:   ErrorInfo reason={detail.reason} domain={detail.domain} "
                    f"metadata={{{metadata}}}"
                )
            case error_details_pb2.RequestInfo():
                print(f"error:   RequestInfo request_id={detail.request_id}")
            case error_details_pb2.ResourceInfo():
                print(
                    f"error:   ResourceInfo type={detail.resource_type} name={detail.resource_name}"
                )
            case error_details_pb2.BadRequest():
                for v in detail.field_violations:
                    print(f"error:   BadRequest field={v.field} description={v.description}")
            case error_details_pb2.RetryInfo():
                print(f"error:   RetryInfo retry_delay={detail.retry_delay.ToTimedelta()}")
            case error_details_pb2.QuotaFailure():
                for q in detail.violations:
                    print(f"error:   QuotaFailure subject={q.subject} description={q.description}")


async def main(address: str) -> int:
    print(f"bridge: {address}")
    async with grpc.aio.insecure_channel(address) as channel:
        client = Client(channel)
        try:
            await client.list_models()
            await client.unary_chat()
            await client.stream_chat()
            await client.stream_response()
            await client.create_embeddings()
            await client.deadline()
            await client.cancel_stream()
            await client.error_details()
        except Unexpected as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
        except grpc.aio.AioRpcError as err:
            print(f"FAIL: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print("OK: all checks passed")
    return 0


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BRIDGE_ADDR", "127.0.0.1:50051")
    sys.exit(asyncio.run(main(target)))
