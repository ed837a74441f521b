"""A key order the caller chose reaches the upstream (README, "Key order").

A JSON Schema's `properties` decide the order of a structured reply's keys, and tool and
schema bytes are part of the prompt that prompt caching matches. `google.protobuf.Struct` is
a map and keeps no order, so each order-sensitive object has a `<key>_json` sibling: JSON
text, sent with its keys as written. The Struct form still works and is sent with its keys
sorted, so identical calls give identical bytes in either form. Checked through a live bridge
against the bytes the development upstream received.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aigateway.v1 import chat_pb2, responses_pb2, responses_pb2_grpc
from aigateway_json import (
    TranslationError,
    chat_request_from_json,
    from_json,
    parse_json_text,
    request_body,
    response_request_from_json,
    to_json,
    to_json_bytes,
)
from google.protobuf import struct_pb2

from bridge.server import assembly as server
from dev.upstream.server import DevUpstream
from tests import richstatus
from tests.conftest import Stubs

MODEL = "openai/gpt-4o-mini"

# "Reasoning before answer": the order is the point, and it is not alphabetical at any level.
SCHEMA_TEXT = """{
  "type": "object",
  "properties": {
    "reasoning": {"type": "string", "description": "Think first."},
    "answer": {"type": "string"},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1}
  },
  "required": ["reasoning", "answer", "confidence"],
  "additionalProperties": false
}"""
SCHEMA_KEYS = ["type", "properties", "required", "additionalProperties"]
PROPERTY_KEYS = ["reasoning", "answer", "confidence"]
FORMAT_TEXT = '{"type": "grammar", "syntax": "lark", "definition": "start: WORD"}'


def compact(text: str) -> bytes:
    """The JSON text as the bridge writes it into the body: compact, UTF-8, order kept."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False).encode()


def chat_request(**schema: str) -> chat_pb2.CreateChatCompletionRequest:
    """A chat request with a function tool and a json_schema response format, each schema
    given as `parameters_json` / `schema_json` (text form) unless told otherwise."""
    request = chat_request_from_json(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Is 17 prime?"}],
            "tools": [{"type": "function", "function": {"name": "check", "strict": True}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "verdict"}},
        }
    )
    function = request.tools[0].function
    json_schema = request.response_format_json_schema.json_schema
    function.parameters_json = schema.get("parameters_json", SCHEMA_TEXT)
    json_schema.schema_json = schema.get("schema_json", SCHEMA_TEXT)
    return request


def keys_at(sent: dict[str, Any], *path: str | int) -> list[str]:
    value: Any = sent
    for step in path:
        value = value[step]
    return list(value)


# ----------------------------------------------------------------------------- chat


async def test_chat_json_text_keeps_its_key_order(stubs: Stubs, upstream: DevUpstream) -> None:
    await stubs.chat.CreateChatCompletion(chat_request())
    sent = upstream.requests[-1]
    assert sent.json is not None
    parameters = ("tools", 0, "function", "parameters")
    schema = ("response_format", "json_schema", "schema")
    for where in (parameters, schema):
        assert keys_at(sent.json, *where) == SCHEMA_KEYS
        assert keys_at(sent.json, *where, "properties") == PROPERTY_KEYS
    # The exact bytes: the caller's object, compacted, under the Struct's key and in its place.
    assert b'"function":{"name":"check","parameters":' + compact(SCHEMA_TEXT) in sent.body
    assert b'"schema":' + compact(SCHEMA_TEXT) in sent.body
    assert keys_at(sent.json, "tools", 0, "function") == ["name", "parameters", "strict"]


async def test_streamed_chat_json_text_keeps_its_key_order(
    stubs: Stubs, upstream: DevUpstream
) -> None:
    request = chat_pb2.StreamChatCompletionRequest()
    request.ParseFromString(chat_request().SerializeToString())
    async for _ in stubs.chat.StreamChatCompletion(request):
        pass
    sent = upstream.requests[-1].json
    assert sent is not None and sent["stream"] is True
    assert keys_at(sent, "tools", 0, "function", "parameters", "properties") == PROPERTY_KEYS


async def test_identical_calls_send_identical_bytes(stubs: Stubs, upstream: DevUpstream) -> None:
    for _ in range(3):
        await stubs.chat.CreateChatCompletion(chat_request())
    bodies = {r.body for r in upstream.requests if r.path == "/v1/chat/completions"}
    assert len(bodies) == 1


def struct_of(pairs: list[tuple[str, Any]]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    for key, value in pairs:
        struct[key] = value
    return struct


async def test_struct_form_works_and_is_sent_sorted(stubs: Stubs, upstream: DevUpstream) -> None:
    schema = json.loads(SCHEMA_TEXT)
    forward = list(schema.items())
    # The same object, its keys inserted in opposite orders at every level.
    backward = [(k, dict(reversed(v.items())) if isinstance(v, dict) else v) for k, v in forward]
    backward.reverse()
    for pairs in (forward, backward):
        request = chat_request()
        request.tools[0].function.ClearField("parameters_json")
        request.tools[0].function.parameters.CopyFrom(struct_of(pairs))
        await stubs.chat.CreateChatCompletion(request)
    first, second = upstream.requests[-2:]
    assert first.body == second.body
    assert first.json is not None
    parameters = first.json["tools"][0]["function"]["parameters"]
    assert parameters == schema  # equal as JSON, integers still integers
    assert list(parameters) == sorted(schema)
    assert list(parameters["properties"]) == sorted(PROPERTY_KEYS)
    assert list(parameters["properties"]["confidence"]) == ["maximum", "minimum", "type"]


def test_struct_form_bytes_are_the_same_in_every_process() -> None:
    """Python's protobuf iterates a map in an order seeded per process; the bridge's body
    does not depend on it."""
    script = (
        "import json, sys\n"
        "from aigateway.v1 import chat_pb2\n"
        "from aigateway_json import request_body\n"
        "r = chat_pb2.CreateChatCompletionRequest(model='m')\n"
        "r.tools.add().function.parameters.update(json.loads(sys.argv[1]))\n"
        "r.extra_fields.update({'zeta': 1, 'alpha': 2, 'mu': {'b': 1, 'a': 2}})\n"
        "print(json.dumps(request_body(r), separators=(',', ':')))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script, SCHEMA_TEXT], check=True, capture_output=True, text=True
        ).stdout
        for _ in range(3)
    }
    assert len(outputs) == 1
    body = json.loads(outputs.pop())
    assert list(body) == ["model", "tools", "alpha", "mu", "zeta"]
    assert list(body["mu"]) == ["a", "b"]


BAD_TEXTS = [
    ("{", "not JSON"),
    ("", None),  # empty is unset: the call goes through
    ("[1, 2]", "got an array"),
    ('"schema"', "got a string"),
    ('{"a": NaN}', "NaN"),
    ('{"a": -Infinity}', "Infinity"),
    ('{"a": 1e400}', "beyond the range of a double"),
    ('{"a": 1, "a": 2}', 'the key "a" appears twice'),
    ('{"a": "\\ud83d"}', "lone UTF-16 surrogate"),
    ('{"a": ' * 101 + "1" + "}" * 101, "nested deeper than 100"),
]


@pytest.mark.parametrize(("text", "complaint"), BAD_TEXTS)
async def test_bad_json_text_is_invalid_argument_naming_the_field(
    stubs: Stubs, upstream: DevUpstream, text: str, complaint: str | None
) -> None:
    request = chat_request(schema_json=text)
    if complaint is None:
        await stubs.chat.CreateChatCompletion(request)
        sent = upstream.requests[-1].json
        assert sent is not None and "schema" not in sent["response_format"]["json_schema"]
        return
    before = len(upstream.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(request)
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.reason == "INVALID_REQUEST"
    [(field, description)] = status.violations
    assert field == "response_format_json_schema.json_schema.schema_json"
    assert complaint in description
    assert len(upstream.requests) == before  # nothing was sent


async def test_bad_json_text_in_a_stream_is_invalid_argument(stubs: Stubs) -> None:
    request = chat_pb2.StreamChatCompletionRequest()
    request.ParseFromString(chat_request(parameters_json="[]").SerializeToString())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.chat.StreamChatCompletion(request):
            pass
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.violations[0][0] == "tools[0].function.parameters_json"


async def test_both_forms_set_is_invalid_argument(stubs: Stubs) -> None:
    request = chat_request()
    request.tools[0].function.parameters.update({"type": "object"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.chat.CreateChatCompletion(request)
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.violations == [
        ("tools[0].function.parameters_json", "cannot be combined with parameters; set one")
    ]


# ----------------------------------------------------------------------------- Responses


@pytest.fixture
async def responses(
    bridge: server.Bridge,
) -> AsyncIterator[responses_pb2_grpc.ResponsesServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield responses_pb2_grpc.ResponsesServiceStub(channel)


def response_request() -> responses_pb2.CreateResponseRequest:
    request = response_request_from_json(
        {
            "model": MODEL,
            "input": "Is 17 prime?",
            "tools": [
                {"type": "function", "name": "check"},
                {"type": "custom", "name": "parse"},
            ],
            "text": {"format": {"type": "json_schema", "name": "verdict", "strict": True}},
        }
    )
    request.tools[0].function.parameters_json = SCHEMA_TEXT
    request.tools[1].custom.format_json = FORMAT_TEXT
    request.text.format.schema_json = SCHEMA_TEXT
    return request


async def test_responses_json_text_keeps_its_key_order(
    responses: responses_pb2_grpc.ResponsesServiceStub, upstream: DevUpstream
) -> None:
    for _ in range(2):
        await responses.CreateResponse(response_request())
    first, second = upstream.requests[-2:]
    assert first.body == second.body
    sent = first.json
    assert sent is not None
    assert keys_at(sent, "tools", 0, "parameters", "properties") == PROPERTY_KEYS
    assert keys_at(sent, "text", "format") == ["type", "name", "schema", "strict"]
    assert keys_at(sent, "text", "format", "schema", "properties") == PROPERTY_KEYS
    assert keys_at(sent, "tools", 1, "format") == ["type", "syntax", "definition"]
    assert b'"parameters":' + compact(SCHEMA_TEXT) in first.body
    assert b'"format":' + compact(FORMAT_TEXT) in first.body


async def test_responses_stream_json_text_keeps_its_key_order(
    responses: responses_pb2_grpc.ResponsesServiceStub, upstream: DevUpstream
) -> None:
    request = responses_pb2.StreamResponseRequest()
    request.ParseFromString(response_request().SerializeToString())
    async for _ in responses.StreamResponse(request):
        pass
    sent = upstream.requests[-1].json
    assert sent is not None and sent["stream"] is True
    assert keys_at(sent, "text", "format", "schema", "properties") == PROPERTY_KEYS


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("schema", "text.format.schema_json"),
        ("parameters", "tools[0].function.parameters_json"),
        ("format", "tools[1].custom.format_json"),
    ],
)
async def test_responses_bad_json_text_is_invalid_argument(
    responses: responses_pb2_grpc.ResponsesServiceStub, field: str, path: str
) -> None:
    request = response_request()
    target = {
        "schema": request.text.format,
        "parameters": request.tools[0].function,
        "format": request.tools[1].custom,
    }[field]
    setattr(target, f"{field}_json", '{"a": NaN}')
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await responses.CreateResponse(request)
    status = richstatus.of_error(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in status.violations] == [path]


async def test_responses_struct_form_still_works(
    responses: responses_pb2_grpc.ResponsesServiceStub, upstream: DevUpstream
) -> None:
    request = response_request()
    request.text.format.ClearField("schema_json")
    request.text.format.schema.update(json.loads(SCHEMA_TEXT))
    await responses.CreateResponse(request)
    sent = upstream.requests[-1].json
    assert sent is not None
    assert sent["text"]["format"]["schema"] == json.loads(SCHEMA_TEXT)
    assert keys_at(sent, "text", "format") == ["type", "name", "schema", "strict"]


# ----------------------------------------------------------------------------- translation


def test_json_from_the_upstream_fills_the_struct_form() -> None:
    """Response direction: nothing changes; `parameters` is read into the Struct, and a key
    literally named `parameters_json` is an unmodelled key like any other."""
    tool = from_json(
        responses_pb2.FunctionTool,
        {"type": "function", "name": "f", "parameters": {"b": 1}, "parameters_json": "{}"},
    )
    assert tool.parameters["b"] == 1
    assert tool.parameters_json == ""
    assert to_json(tool) == {
        "type": "function",
        "name": "f",
        "parameters": {"b": 1},
        "parameters_json": "{}",
    }


def test_python_api_reports_bad_text_and_both_forms() -> None:
    request = chat_request(parameters_json="[]")
    with pytest.raises(TranslationError, match="got an array"):
        request_body(request)
    request = chat_request()
    request.tools[0].function.parameters.update({"type": "object"})
    with pytest.raises(TranslationError, match="both set"):
        to_json_bytes(request)


def test_numbers_in_json_text() -> None:
    """Integers stay exact at any size (no double in between); other numbers are written as
    Python writes a float."""
    parsed = parse_json_text('{"big": 123456789012345678901234567890, "x": 1e5, "y": 0.1}')
    assert json.dumps(parsed) == '{"big": 123456789012345678901234567890, "x": 100000.0, "y": 0.1}'
