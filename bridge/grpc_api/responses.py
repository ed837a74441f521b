"""The Responses API service (`POST /responses`), whole or streamed as typed events.

Like the chat servicer (bridge.grpc_api.base), it stays thin: check, translate, call the upstream,
translate back. What differs is the end of a stream: the Responses API sends no `[DONE]`; a
stream ends after a terminal event (`response.completed`, `response.incomplete`), so the
upstream stream runs `until="eof"` and this module judges how it ended. A `response.failed`
event ends the call with the status its `response.error` maps to, as an error object in a
chat stream does; a body that ends without a terminal event is a cut stream (UNAVAILABLE).

A unary answer of a failed response carries a top-level `error` object, which the upstream
client reads as an error in a 200 body: that call ends with the mapped status too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aigateway.v1 import responses_pb2, responses_pb2_grpc
from aigateway_json import ResponseRequest, request_body

from bridge import status
from bridge.grpc_api import validation
from bridge.grpc_api.base import Context, _Base, deadline_of
from bridge.status import BridgeError
from bridge.upstream import stream_failures, transport_failures

PATH = "/responses"

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
"""Event types after which a Responses stream is complete."""

FAILED_EVENT = "response.failed"


def check(request: ResponseRequest) -> None:
    """What the bridge rejects before calling the upstream (a BadRequest naming the field)."""
    validation.model_id(request.model)
    validation.json_values(request)
    ranges = (
        ("temperature", request.HasField("temperature"), request.temperature, 0.0, 2.0),
        ("top_p", request.HasField("top_p"), request.top_p, 0.0, 1.0),
        ("top_logprobs", request.HasField("top_logprobs"), request.top_logprobs, 0, 20),
    )
    for field, present, value, low, high in ranges:
        if present and not low <= value <= high:
            raise status.invalid_argument(field, f"must be between {low} and {high}, got {value}")
    if request.HasField("max_output_tokens") and request.max_output_tokens < 1:
        raise status.invalid_argument("max_output_tokens", "must be at least 1")


class ResponsesService(_Base, responses_pb2_grpc.ResponsesServiceServicer):
    async def CreateResponse(
        self, request: responses_pb2.CreateResponseRequest, context: Context
    ) -> responses_pb2.CreateResponseResponse:
        def checks() -> None:
            self.check_size(request)
            check(request)

        return await self.unary(
            context,
            responses_pb2.CreateResponseResponse,
            PATH,
            request,
            model=request.model,
            check=checks,
        )

    async def StreamResponse(
        self, request: responses_pb2.StreamResponseRequest, context: Context
    ) -> AsyncIterator[responses_pb2.StreamResponseResponse]:
        try:
            self.check_size(request)
            check(request)
            first = True
            finished = False
            rid: str | None = None
            measured_above = self.measured_above()
            async with self.upstream.stream(
                PATH,
                request_body(request),  # "stream": true
                headers=self.headers(context),
                deadline=deadline_of(context),
                model=request.model,
                until="eof",
            ) as stream:
                async for data in stream:
                    if first:
                        rid = stream.response_headers.get("x-request-id")
                    kind = data.get("type")
                    if kind == FAILED_EVENT or kind == "error":
                        raise self._stream_failure(data, rid)
                    event = self.parse(responses_pb2.StreamResponseResponse, data, rid)
                    if stream.last_size > measured_above:
                        self.check_answer_size(event, stream.last_size, rid)
                    if first:
                        first = False
                        if stream.metadata:  # else the first message's batch carries none
                            await context.send_initial_metadata(stream.metadata)
                    yield event
                    finished = finished or kind in TERMINAL_EVENTS
                if not finished:
                    raise transport_failures.transport_error(
                        "stream_cut",
                        domain=self.upstream.domain,
                        request_id=rid,
                        detail="the stream ended without response.completed or response.incomplete",
                    )
        except BridgeError as error:
            await self.fail(context, error)

    def _stream_failure(self, data: dict[str, Any], rid: str | None) -> BridgeError:
        """The status of a `response.failed` event (its `response.error`) or of a flat
        `error` event (`{"type": "error", "code", "message", "param"}`)."""
        if data.get("type") == FAILED_EVENT:
            response = data.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            if not isinstance(error, dict):
                error = {"message": "the response failed without an error object"}
        else:
            error = {k: v for k, v in data.items() if k not in ("type", "sequence_number")}
        return stream_failures.from_stream_error(error, domain=self.upstream.domain, request_id=rid)
