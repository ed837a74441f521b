"""The public translation API (aigateway_json) and the edge cases the fidelity tests found."""

from __future__ import annotations

import json
from typing import Any

import aigateway_json as translate
import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2
from aigateway_json import TranslationError, from_json, to_json
from google.protobuf import struct_pb2

CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("function", "data", "message_type"),
    [
        (translate.chat_request_from_json, CHAT, chat_pb2.CreateChatCompletionRequest),
        (translate.stream_chat_request_from_json, CHAT, chat_pb2.StreamChatCompletionRequest),
        (
            translate.embeddings_request_from_json,
            {"model": "m", "input": [[1, 2]]},
            embeddings_pb2.CreateEmbeddingsRequest,
        ),
        (
            translate.chat_completion_from_json,
            {"id": "c", "choices": [{"index": 0, "message": {"content": "x"}}]},
            chat_pb2.CreateChatCompletionResponse,
        ),
        (
            translate.chat_chunk_from_json,
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]},
            chat_pb2.StreamChatCompletionResponse,
        ),
        (
            translate.embeddings_from_json,
            {"data": [{"index": 0, "embedding": [0.5]}]},
            embeddings_pb2.CreateEmbeddingsResponse,
        ),
        (translate.model_list_from_json, {"data": [{"id": "m"}]}, models_pb2.ListModelsResponse),
        (translate.model_from_json, {"id": "m", "released": 3}, models_pb2.Model),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_typed_shortcuts(function: Any, data: dict[str, Any], message_type: Any) -> None:
    msg: Any = function(data)
    assert type(msg) is message_type
    assert not msg.extra_fields.fields
    assert to_json(msg) == data


def test_chat_request_shortcuts_take_the_stream_flag_from_the_rpc() -> None:
    unary = translate.chat_request_from_json({**CHAT, "stream": False})
    assert "stream" not in unary.extra_fields.fields
    stream = translate.stream_chat_request_from_json({**CHAT, "stream": True})
    assert "stream" not in stream.extra_fields.fields
    with pytest.raises(TranslationError, match="stream_chat_request_from_json"):
        translate.chat_request_from_json({**CHAT, "stream": True})
    with pytest.raises(TranslationError, match="chat_request_from_json"):
        translate.stream_chat_request_from_json({**CHAT, "stream": False})


def test_request_body_sets_stream_by_rpc_whatever_extra_fields_say() -> None:
    extra = struct_pb2.Struct()
    extra.update({"stream": True, "future": 1})
    unary = chat_pb2.CreateChatCompletionRequest(model="m", extra_fields=extra)
    assert translate.request_body(unary) == {"model": "m", "future": 1}
    extra.update({"stream": False})
    stream = chat_pb2.StreamChatCompletionRequest(model="m", extra_fields=extra)
    assert translate.request_body(stream) == {"model": "m", "future": 1, "stream": True}
    embeddings = embeddings_pb2.CreateEmbeddingsRequest(model="m", input_text="x")
    assert translate.request_body(embeddings) == {"model": "m", "input": "x"}


def test_to_json_bytes_is_compact_utf8_with_integers_kept() -> None:
    msg = from_json(chat_pb2.CreateChatCompletionRequest, {**CHAT, "future": {"n": 3, "s": "é"}})
    raw = translate.to_json_bytes(msg)
    assert b'"n":3' in raw
    assert "é".encode() in raw
    assert json.loads(raw) == {**CHAT, "future": {"n": 3, "s": "é"}}


def test_from_json_bytes_rejects_text_that_is_not_json() -> None:
    with pytest.raises(TranslationError, match="not JSON"):
        translate.from_json_bytes(models_pb2.Model, b"{not json")
    assert translate.from_json_bytes(models_pb2.Model, '{"id": "m"}').id == "m"


def test_two_members_of_a_plain_oneof_are_both_kept() -> None:
    """A part with both `text` and `image_url` used to lose `text` silently."""
    data = {"type": "text", "text": "hi", "image_url": {"url": "u"}}
    part = from_json(chat_pb2.ContentPart, data)
    assert part.text == "hi"
    assert "image_url" in part.extra_fields.fields
    assert to_json(part) == data


def test_a_non_string_type_tag_is_kept_not_a_crash() -> None:
    """Objects of a union are chosen by their `type`; an unhashable one used to raise."""
    data = {**CHAT, "response_format": {"type": ["json_schema"]}}
    msg = from_json(chat_pb2.CreateChatCompletionRequest, data)
    assert msg.WhichOneof("response_format") is None
    assert to_json(msg) == data


def test_lone_surrogates_become_replacement_characters() -> None:
    """JSON may escape half a surrogate pair; protobuf strings cannot hold it."""
    raw = '{"id": "c", "choices": [{"index": 0, "delta": {"content": "a\\ud83d"}}], "\\udc00": 1}'
    chunk = translate.from_json_bytes(chat_pb2.StreamChatCompletionResponse, raw)
    assert chunk.choices[0].delta.content == "a\ufffd"
    assert to_json(chunk)["\ufffd"] == 1


def test_numbers_beyond_a_double_are_a_translation_error() -> None:
    """Python's JSON decoder keeps `1e400`-sized integer literals exact; nothing else can."""
    huge = "1" + "0" * 400
    for raw in (f'{{"id": "m", "x": {huge}}}', f'{{"created": {huge}}}'):
        with pytest.raises(TranslationError, match="beyond the range of a double"):
            translate.from_json_bytes(models_pb2.Model, raw)


def test_integers_beyond_2_53_in_free_form_json_are_the_nearest_double() -> None:
    """The documented limit: a Struct number is a double, as a JSON number is in most parsers."""
    msg = from_json(models_pb2.Model, {"exact": 2**53, "rounded": 2**63})
    assert to_json(msg) == {"exact": 2**53, "rounded": float(2**63)}
