"""JSON -> proto -> JSON is exact: for the spec's examples and for JSON generated from its schemas.

These run the translation layer alone (fast, many cases); tests/test_fidelity_bridge.py drives
the same kinds of cases through a real bridge. Generated JSON carries unknown keys at every
object level, nulls where the spec allows them, unknown values of open vocabularies, and
integers inside free-form JSON, which must all come back exactly (3 stays 3, not 3.0).
"""

from __future__ import annotations

from typing import Any

import aigateway_json as translate
import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2
from aigateway_json import from_json, to_json
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fidelity import spec
from tests.fidelity.spec import extra_paths

KINDS: dict[str, type[Message]] = {
    "chat": chat_pb2.CreateChatCompletionResponse,
    "chunk": chat_pb2.StreamChatCompletionResponse,
    "embeddings": embeddings_pb2.CreateEmbeddingsResponse,
    "models": models_pb2.ListModelsResponse,
    "model": models_pb2.Model,
}

SCHEMA_OF = {
    "chat": "CreateChatCompletionResponse",
    "chunk": "CreateChatCompletionStreamResponse",
    "embeddings": "CreateEmbeddingResponse",
    "models": "ListModelsResponse",
    "model": "Model",
    "chat_request": "CreateChatCompletionRequest",
    "stream_request": "CreateChatCompletionRequest",
    "embeddings_request": "CreateEmbeddingRequest",
}

REQUESTS: dict[str, type[Message]] = {
    "chat_request": chat_pb2.CreateChatCompletionRequest,
    "stream_request": chat_pb2.StreamChatCompletionRequest,
    "embeddings_request": embeddings_pb2.CreateEmbeddingsRequest,
}

FIDELITY = settings(
    max_examples=spec.examples(150), deadline=None, suppress_health_check=spec.TOLERATED
)


def round_trip(kind: str, data: dict[str, Any]) -> None:
    message_type = KINDS.get(kind) or REQUESTS[kind]
    msg = from_json(message_type, data)
    # Through the wire format too: what a gRPC peer receives converts back the same.
    wire = message_type.FromString(msg.SerializeToString())
    assert spec.exact_diff(data, to_json(wire)) == []


def _example_ids() -> list[tuple[str, str, dict[str, Any]]]:
    return list(spec.response_examples())


@pytest.mark.parametrize(
    ("name", "kind", "data"), _example_ids(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_spec_response_examples_round_trip(name: str, kind: str, data: dict[str, Any]) -> None:
    round_trip(kind, data)
    # The examples use only fields the spec documents: every key must land in a typed field.
    # Stored completions also echo their request (`seed`, `tool_choice`, ...): extra keys.
    if not name.startswith(("chat-stored", "chat-list")):
        assert extra_paths(from_json(KINDS[kind], _without_nulls(data))) == []


def test_every_spec_example_is_exercised() -> None:
    kinds = [kind for _, kind, _ in spec.response_examples()]
    assert {"chat", "chunk", "embeddings", "models", "model"} <= set(kinds)
    assert len(kinds) >= 15


def _without_nulls(data: Any) -> Any:
    """Nulls, empty arrays and empty maps have no typed form (proto3 cannot tell them from
    absent), by design: they travel in `extra_fields`."""
    if isinstance(data, dict):
        kept = {k: _without_nulls(v) for k, v in data.items()}
        return {k: v for k, v in kept.items() if v is not None and v != [] and v != {}}
    if isinstance(data, list):
        return [_without_nulls(v) for v in data]
    return data


# ----------------------------------------------------------------------------- generated


MODEL_IDS = st.sampled_from(["openai/gpt-4o-mini", "anthropic/claude-sonnet-4.5", "gpt-4o"])
"""Request `model` is a plain proto3 string (required, so never empty): a real id."""


def generated(kind: str) -> st.SearchStrategy[Any]:
    overrides = {"model": MODEL_IDS} if kind in REQUESTS else {}
    generator = spec.Generator(future=True, open_vocabulary=True, overrides=overrides)
    return generator.named(SCHEMA_OF[kind])


@pytest.mark.parametrize("kind", [*KINDS, *REQUESTS])
def test_generated_json_round_trips_exactly(kind: str) -> None:
    """Unknown keys everywhere, nulls, unknown enum values, ints in free-form JSON: all kept."""

    @FIDELITY
    @given(generated(kind))
    def check(data: dict[str, Any]) -> None:
        round_trip(kind, data)

    check()


@pytest.mark.parametrize("kind", [*KINDS, *REQUESTS])
def test_known_fields_are_typed(kind: str) -> None:
    """Spec-valid JSON without unknown keys fills typed fields only, except for nulls and
    empty arrays (which have no typed form) and values a typed field cannot hold."""
    generator = spec.Generator(
        overrides={"model": MODEL_IDS} if kind in REQUESTS else {}, int_limit=2**31 - 1
    )

    @FIDELITY
    @given(generator.named(SCHEMA_OF[kind]))
    def check(data: dict[str, Any]) -> None:
        message_type = KINDS.get(kind) or REQUESTS[kind]
        msg = from_json(message_type, _without_nulls(data))
        untyped = [p for p in extra_paths(msg) if not _untypable(p)]
        if kind == "stream_request":  # the one message that has `stream_options`
            assert "stream_options" not in msg.extra_fields.fields  # type: ignore[attr-defined]
        assert untyped == []

    check()


def _untypable(path: str) -> bool:
    """Keys the protos leave out on purpose: the RPC, not a field, says whether to stream
    (`stream`), and only StreamChatCompletionRequest has `stream_options`."""
    return path in ("$.stream", "$.stream_options") or path.endswith(_FREE_FORM)


_FREE_FORM = (
    # `audio.voice` is a voice name or, for custom voices, `{"id": ...}`; the object form
    # travels in extra_fields (making `voice` a oneof now would break generated clients).
    "$.audio.voice",
)


def test_translation_error_for_non_objects() -> None:
    with pytest.raises(translate.TranslationError, match="expected a JSON object"):
        from_json(chat_pb2.CreateChatCompletionResponse, [1, 2])
