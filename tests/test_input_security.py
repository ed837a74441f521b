"""Caller input that could make the bridge misbehave: model ids that are not plain ids, JSON
that cannot exist (NaN, Infinity, nesting past protobuf's limit), upstream JSON nested too
deep for a client to decode, and oneof members whose JSON `type` the caller left out.

Each kind is tested through a live bridge in front of the development upstream, asserting what
the caller sees and what (if anything) reached the upstream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2
from aigateway_json import translate
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge.grpc_api import validation as validate
from dev.upstream.faults import Status
from dev.upstream.server import DevUpstream
from tests import richstatus
from tests.conftest import Stubs
from tests.fidelity import spec
from tests.fidelity.harness import ThreadedBridge

MODEL = "openai/gpt-4o-mini"
SSE = {"content-type": "text/event-stream"}


def chat(model: str = MODEL, **fields: Any) -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content_text="hi")], **fields
    )


def strict_json(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: no NaN, Infinity or -Infinity tokens."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(raw, parse_constant=refuse)


def nested(depth: int, kind: str = "object") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value} if kind == "object" else [value]
    return value


def struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct built by protobuf itself, which builds past the limits the bridge checks."""
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


class Errors(logging.Handler):
    """Records at ERROR or with a traceback, from any thread (grpc logs its own)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture
def error_log() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def refused(pending: Any) -> richstatus.RichStatus:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pending
    return richstatus.of_error(caught.value)


# ----------------------------------------------------------------------------- model ids

REAL_MODEL_IDS = [
    "anthropic/claude-sonnet-4.5",
    "openai/gpt-4o-mini",
    "meta-llama/Llama-3.1-8B-Instruct",
    "llama3.2:3b",
    "qwen2.5-coder:7b-instruct-q4_K_M",
    "ft:gpt-4o-mini:org:custom:id",
    "vertex_ai/claude-3-5-sonnet@20240620",
    "@cf/meta/llama-3.1-8b-instruct",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet",
    "my-gpt4o_deployment.v2",
    "meta-llama/llama-3.1-8b-instruct:free",
    "accounts/fireworks/models/llama-v3p1-8b-instruct",
]

HOSTILE_MODEL_IDS = [
    "echo/..;/admin",
    "a;b",
    "a%2F..",
    "a b",
    "model\u00e9",
    "a\u202eb",
    "x\n127.0.0.1 - - [01/Jan/2025] GET /",
    "a/./b",
    "..",
    "a/",
    "/abs/path",
    "a" * 257,
]


@pytest.mark.parametrize("model", REAL_MODEL_IDS)
async def test_real_model_ids_reach_the_upstream_unchanged(
    upstream: DevUpstream, stubs: Stubs, model: str
) -> None:
    await stubs.chat.CreateChatCompletion(chat(model))
    await stubs.embeddings.CreateEmbeddings(
        embeddings_pb2.CreateEmbeddingsRequest(model=model, input_text="x")
    )
    try:
        await stubs.models.RetrieveModel(models_pb2.RetrieveModelRequest(model=model))
    except grpc.aio.AioRpcError as error:  # the dev upstream knows few models
        assert error.code() == grpc.StatusCode.NOT_FOUND
    chat_request, embeddings_request, retrieve = upstream.requests
    assert strict_json(chat_request.body)["model"] == model
    assert strict_json(embeddings_request.body)["model"] == model
    assert retrieve.path == f"/v1/models/{model}"


@pytest.mark.parametrize("model", HOSTILE_MODEL_IDS, ids=ascii)
async def test_model_ids_outside_the_allow_list_are_refused_everywhere(
    upstream: DevUpstream, stubs: Stubs, model: str
) -> None:
    for pending in (
        stubs.chat.CreateChatCompletion(chat(model)),
        stubs.embeddings.CreateEmbeddings(
            embeddings_pb2.CreateEmbeddingsRequest(model=model, input_text="x")
        ),
        stubs.models.RetrieveModel(models_pb2.RetrieveModelRequest(model=model)),
    ):
        status = await refused(pending)
        assert status.code is grpc.StatusCode.INVALID_ARGUMENT
        [(field, _)] = status.violations
        assert field == "model"
        assert len(status.message) < 400  # never the whole id echoed
        assert all(c.isprintable() for c in status.message)
    assert upstream.requests == []


async def test_allowed_characters_are_named_in_the_refusal(stubs: Stubs) -> None:
    status = await refused(stubs.chat.CreateChatCompletion(chat("echo/..;/admin")))
    [(_, description)] = status.violations
    assert "ASCII letters, digits and '-', '_', '.', ':', '/', '@'" in description
    assert "';'" in description


# ----------------------------------------------------------------------------- NaN, Infinity


def _with_number(place: str, number: float) -> tuple[chat_pb2.CreateChatCompletionRequest, str]:
    request = chat()
    if place == "extra_fields":
        request.extra_fields.update({"x": {"y": [1, number]}})
        return request, "extra_fields.x.y[1]"
    if place == "tool parameters":
        tool = request.tools.add(type="function")
        tool.function.name = "f"
        tool.function.parameters.update({"properties": {"n": {"maximum": number}}})
        return request, "tools[0].function.parameters.properties.n.maximum"
    if place == "json_schema":
        schema = request.response_format_json_schema.json_schema
        schema.name = "s"
        schema.schema.update({"odd key!": number})
        return request, 'response_format_json_schema.json_schema.schema["odd key!"]'
    if place == "providerOptions":
        request.provider_options.extra_fields.update({"anthropic": {"t": number}})
        return request, "provider_options.extra_fields.anthropic.t"
    assert place == "message extra_fields"
    request.messages[0].extra_fields.update({"w": number})
    return request, "messages[0].extra_fields.w"


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize(
    "place",
    ["extra_fields", "tool parameters", "json_schema", "providerOptions", "message extra_fields"],
)
async def test_numbers_json_cannot_hold_are_refused_naming_the_field(
    upstream: DevUpstream, stubs: Stubs, place: str, number: float
) -> None:
    request, path = _with_number(place, number)
    status = await refused(stubs.chat.CreateChatCompletion(request))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = status.violations
    assert field == path
    assert "JSON cannot represent" in description
    stream = chat_pb2.StreamChatCompletionRequest()
    stream.ParseFromString(request.SerializeToString())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.chat.StreamChatCompletion(stream):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    embed = embeddings_pb2.CreateEmbeddingsRequest(model=MODEL, input_text="x")
    embed.extra_fields.update({"n": number})
    status = await refused(stubs.embeddings.CreateEmbeddings(embed))
    assert status.violations[0][0] == "extra_fields.n"
    assert upstream.requests == []


def test_request_json_never_holds_the_invalid_tokens() -> None:
    request = chat()
    request.extra_fields.update({"x": float("nan")})
    with pytest.raises(translate.TranslationError, match="JSON compliant"):
        translate.to_json_bytes(request)


# ----------------------------------------------------------------------------- nesting


# In a request's extra_fields, {"a": <JSON nested n deep>} puts the innermost Value at message
# level 3 + 3n (objects) or 3 + 2n (arrays); protobuf parsers stop past 100.
@pytest.mark.parametrize(("depth", "kind"), [(33, "object"), (49, "list"), (400, "object")])
async def test_a_request_nested_past_protobufs_limit_is_invalid_argument_without_a_traceback(
    upstream: DevUpstream, stubs: Stubs, error_log: Errors, depth: int, kind: str
) -> None:
    request = chat()
    request.extra_fields.update({"a": nested(depth, kind)})
    status = await refused(stubs.chat.CreateChatCompletion(request))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "limit of 100" in status.message
    stream = chat_pb2.StreamChatCompletionRequest(model=MODEL, messages=request.messages)
    stream.extra_fields.update({"a": nested(depth, kind)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.chat.StreamChatCompletion(stream):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.requests == []
    assert error_log.records == []


async def test_the_deepest_request_protobuf_decodes_is_sent(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    for depth, kind in ((32, "object"), (48, "list")):
        deepest = {"a": nested(depth, kind)}
        await stubs.chat.CreateChatCompletion(chat(extra_fields=struct_of(deepest)))
        assert strict_json(upstream.requests[-1].body)["a"] == deepest["a"]


async def test_bytes_protobuf_refuses_are_invalid_argument(
    upstream: DevUpstream, stubs: Stubs, error_log: Errors
) -> None:
    """A string that is not UTF-8 (another language's client may send one, a lone
    surrogate encoded as CESU-8 say) fails grpc's deserializer, not the servicer."""
    raw = chat().SerializeToString().replace(b"hi", b"\xed\xa0")
    method = stubs.channel.unary_unary("/aigateway.v1.ChatService/CreateChatCompletion")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(raw)
    status = richstatus.of_error(caught.value)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert status.violations[0][0] == "request"
    assert upstream.requests == []
    assert error_log.records == []


def _completion(extra: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x", "x": extra}}],
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 1100 + b"1" + b"}" * 1100,  # past Python's recursion limit
        b"[" * 5000 + b"]" * 5000,
        json.dumps(_completion(nested(40))).encode(),  # parses, but no client could decode it
        json.dumps(_completion(nested(60, "list"))).encode(),
    ],
    ids=["objects-1100", "arrays-5000", "objects-40", "arrays-60"],
)
async def test_upstream_json_nested_too_deep_is_a_malformed_response(
    upstream: DevUpstream, stubs: Stubs, error_log: Errors, body: bytes
) -> None:
    upstream.program(MODEL, Status(200, body))
    status = await refused(stubs.chat.CreateChatCompletion(chat()))
    assert status.code is grpc.StatusCode.INTERNAL
    assert status.reason == "MALFORMED_RESPONSE"
    event = b"data: " + body + b"\n\ndata: [DONE]\n\n"
    upstream.program(MODEL, Status(200, event, headers=SSE))
    request = chat_pb2.StreamChatCompletionRequest(model=MODEL, messages=chat().messages)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.chat.StreamChatCompletion(request):
            pass
    assert richstatus.of_error(caught.value).reason == "MALFORMED_RESPONSE"
    assert error_log.records == []


async def test_upstream_json_a_client_can_decode_is_delivered(
    upstream: DevUpstream, stubs: Stubs
) -> None:
    completion = _completion(nested(29))
    upstream.program(MODEL, Status(200, completion))
    response = await stubs.chat.CreateChatCompletion(chat())  # decoded by a protobuf client
    assert translate.to_json(response) == completion


def test_from_json_limit_is_exactly_what_protobuf_decodes() -> None:
    """Found by bisection against upb: accepted iff the serialized message parses again."""
    response = chat_pb2.CreateChatCompletionResponse
    for kind, deepest in (("object", 31), ("list", 47)):  # level 5 + 3n, 5 + 2n
        msg = translate.from_json(response, _completion(nested(deepest, kind)))
        response.FromString(msg.SerializeToString())
        with pytest.raises(translate.TranslationError, match="limit of 100"):
            translate.from_json(response, _completion(nested(deepest + 1, kind)))


# ----------------------------------------------------------------------------- implied type


def _implied_cases() -> dict[str, chat_pb2.CreateChatCompletionRequest]:
    def with_parts(*parts: chat_pb2.ContentPart) -> chat_pb2.CreateChatCompletionRequest:
        content = chat_pb2.ContentPartList(values=list(parts))
        return chat_pb2.CreateChatCompletionRequest(
            model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content_parts=content)]
        )

    function = chat_pb2.FunctionDefinition(name="f", parameters=struct_of({"type": "object"}))
    tool = chat_pb2.Tool(function=function)
    custom = chat_pb2.Tool(custom=chat_pb2.CustomToolDefinition(name="c"))
    call = chat_pb2.ToolCall(id="call_1", function=chat_pb2.FunctionCall(name="f", arguments="{}"))
    assistant = chat_pb2.ChatMessage(role="assistant", tool_calls=[call])
    answer = chat_pb2.ChatMessage(role="tool", tool_call_id="call_1", content_text="42")
    allowed = chat_pb2.AllowedTools(
        mode="auto", tools=[struct_of({"type": "function", "function": {"name": "f"}})]
    )
    schema = chat_pb2.JsonSchema(name="s", schema=struct_of({"type": "object"}))
    return {
        "part text": with_parts(chat_pb2.ContentPart(text="hi")),
        "part image_url": with_parts(chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url="u"))),
        "part input_audio": with_parts(
            chat_pb2.ContentPart(input_audio=chat_pb2.InputAudio(data="AAAA", format="wav"))
        ),
        "part file": with_parts(chat_pb2.ContentPart(file=chat_pb2.FileContent(file_id="f"))),
        "response_format text": chat(response_format_text=chat_pb2.ResponseFormatText()),
        "response_format json_object": chat(
            response_format_json_object=chat_pb2.ResponseFormatJsonObject()
        ),
        "response_format json_schema": chat(
            response_format_json_schema=chat_pb2.ResponseFormatJsonSchema(json_schema=schema)
        ),
        "tool function": chat(tools=[tool]),
        "tool custom": chat(tools=[custom]),
        "tool_choice function": chat(
            tools=[tool],
            tool_choice_named=chat_pb2.ToolChoice(function=chat_pb2.FunctionName(name="f")),
        ),
        "tool_choice custom": chat(
            tools=[custom],
            tool_choice_named=chat_pb2.ToolChoice(custom=chat_pb2.FunctionName(name="c")),
        ),
        "tool_choice allowed_tools": chat(
            tools=[tool], tool_choice_named=chat_pb2.ToolChoice(allowed_tools=allowed)
        ),
        "tool call": chat_pb2.CreateChatCompletionRequest(
            model=MODEL, messages=[*chat().messages, assistant, answer]
        ),
        "prediction": chat(prediction=chat_pb2.Prediction(content_text="x")),
    }


IMPLIED = _implied_cases()


@pytest.mark.parametrize("case", IMPLIED)
async def test_a_member_set_without_type_is_sent_with_the_type_it_implies(
    upstream: DevUpstream, stubs: Stubs, case: str
) -> None:
    await stubs.chat.CreateChatCompletion(IMPLIED[case])
    body = strict_json(upstream.requests[-1].body)
    assert spec.validation_errors("CreateChatCompletionRequest", body) == []
    # ... where the message as it is, without the implied type, is not a valid request.
    assert spec.validation_errors("CreateChatCompletionRequest", translate.to_json(IMPLIED[case]))


def test_implied_types_in_the_body() -> None:
    body = translate.request_body(IMPLIED["tool_choice allowed_tools"])
    assert body["tools"][0]["type"] == "function"
    assert body["tool_choice"]["type"] == "allowed_tools"
    body = translate.request_body(IMPLIED["response_format json_object"])
    assert body["response_format"] == {"type": "json_object"}
    body = translate.request_body(IMPLIED["tool call"])
    assert body["messages"][1]["tool_calls"][0]["type"] == "function"
    assert translate.request_body(IMPLIED["prediction"])["prediction"]["type"] == "content"


def test_a_type_the_caller_set_is_kept() -> None:
    part = chat_pb2.ContentPart(type="input_text", text="hi")
    extra = chat_pb2.ResponseFormatJsonObject()
    extra.extra_fields.update({"type": "json_object_v2"})
    request = chat(response_format_json_object=extra)
    request.messages[0].content_parts.values.append(part)
    body = translate.request_body(request)
    assert body["messages"][0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert body["response_format"] == {"type": "json_object_v2"}


def test_responses_keep_their_json_exactly() -> None:
    """Stream fragments of a tool call omit `type` after the first; no type is invented."""
    fragment = {"index": 0, "function": {"arguments": "{"}}
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]}
    assert translate.to_json(translate.chat_chunk_from_json(chunk)) == chunk


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (chat(tool_choice_named=chat_pb2.ToolChoice()), "tool_choice_named.type"),
        (chat(tools=[chat_pb2.Tool()]), "tools[0].type"),
        (chat(prediction=chat_pb2.Prediction()), "prediction.type"),
    ],
    ids=["tool_choice", "tool", "prediction"],
)
async def test_a_message_with_neither_type_nor_member_is_refused(
    upstream: DevUpstream, stubs: Stubs, request_: Any, field: str
) -> None:
    status = await refused(stubs.chat.CreateChatCompletion(request_))
    assert status.violations[0][0] == field
    assert upstream.requests == []


def test_max_nesting_is_protobufs_default() -> None:
    assert validate.MAX_NESTING == translate.MAX_NESTING == 100


# ----------------------------------------------------------------------------- properties
# Arbitrary model ids and Struct contents thrown at a live bridge: the caller sees OK or
# INVALID_ARGUMENT, never UNKNOWN; the upstream sees strict JSON or nothing; nothing is logged
# at ERROR or with a traceback.

PROPERTIES = settings(
    max_examples=spec.examples(60),
    deadline=None,
    suppress_health_check=[*spec.TOLERATED, HealthCheck.function_scoped_fixture],
)

_ODD_TEXT = st.text(
    st.characters(codec=None, exclude_categories=()), max_size=12
) | st.sampled_from(["", "\x00", "\ud800", "a\udfffb", "\u202e", "\r\n", "..", "é" * 3])
_NUMBERS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60)
_JSON_ISH = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ODD_TEXT, inner, max_size=3),
    max_leaves=20,
)


@st.composite
def _deep(draw: st.DrawFn) -> Any:
    return nested(draw(st.integers(0, 60)), draw(st.sampled_from(["object", "list"])))


_CONTENTS = st.dictionaries(_ODD_TEXT, _JSON_ISH | _deep(), max_size=4)


@pytest.fixture(scope="module")
def live() -> Iterator[ThreadedBridge]:
    with ThreadedBridge() as running:
        yield running


def _settable(data: Any) -> bool:
    """What a Python client can put in a Struct at all (protobuf strings are UTF-8)."""
    try:
        struct_pb2.Struct().update({"x": data})
    except (UnicodeEncodeError, ValueError):
        return False
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _outcome(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _sent_bodies(live: ThreadedBridge, before: int) -> list[Any]:
    return [strict_json(r.body) for r in live.requests_since(before) if r.body]


def test_property_arbitrary_struct_contents(live: ThreadedBridge) -> None:
    handler = Errors()
    logging.getLogger().addHandler(handler)

    @PROPERTIES
    @given(contents=_CONTENTS, where=st.sampled_from(["extra", "parameters", "schema", "options"]))
    def check(contents: dict[str, Any], where: str) -> None:
        assume(_settable(contents))
        request = chat()
        if where == "extra":
            target = request.extra_fields
        elif where == "parameters":
            tool = request.tools.add(function=chat_pb2.FunctionDefinition(name="f"))
            target = tool.function.parameters
        elif where == "schema":
            target = request.response_format_json_schema.json_schema.schema
        else:
            target = request.provider_options.extra_fields
        target.update(contents)
        before = len(live.upstream.requests)
        code = _outcome(lambda: live.chat.CreateChatCompletion(request, timeout=30))
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), code
        bodies = _sent_bodies(live, before)  # strict JSON, or the test fails here
        assert len(bodies) == (code == grpc.StatusCode.OK)

    try:
        check()
    finally:
        logging.getLogger().removeHandler(handler)
    assert handler.records == []


_MODEL_IDS = (
    st.text(st.characters(codec=None), max_size=40)
    | st.text(st.sampled_from("abcAB09-_.:/@;%?#\\ \n~+"), min_size=1, max_size=40)
    | st.sampled_from(REAL_MODEL_IDS + HOSTILE_MODEL_IDS)
)


def test_property_arbitrary_model_ids(live: ThreadedBridge) -> None:
    handler = Errors()
    logging.getLogger().addHandler(handler)

    @PROPERTIES
    @given(model=_MODEL_IDS)
    def check(model: str) -> None:
        assume(_encodable(model))  # a Python client cannot send a lone surrogate
        before = len(live.upstream.requests)
        chat_code = _outcome(lambda: live.chat.CreateChatCompletion(chat(model), timeout=30))
        assert chat_code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
        retrieve = models_pb2.RetrieveModelRequest(model=model)
        code = _outcome(lambda: live.models.RetrieveModel(retrieve, timeout=30))
        sent = live.requests_since(before)
        if chat_code == grpc.StatusCode.INVALID_ARGUMENT:
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert sent == []
            return
        # Accepted: sent as it is, in the body and as the path, which needed no escaping.
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
        assert [r.path for r in sent] == ["/v1/chat/completions", f"/v1/models/{model}"]
        assert strict_json(sent[0].body)["model"] == model
        assert all(c.isascii() and c.isprintable() and c not in ";%?#\\ " for c in model)
        assert ".." not in model.split("/")

    try:
        check()
    finally:
        logging.getLogger().removeHandler(handler)
    assert handler.records == []
