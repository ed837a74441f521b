"""The protos and the generated code: fresh, consistent, importable as `aigateway.v1`."""

from __future__ import annotations

from pathlib import Path

from aigateway.v1 import chat_pb2, common_pb2, embeddings_pb2, models_pb2

from dev import codegen


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    codegen.generate_into(tmp_path)
    stale = codegen.differences(tmp_path / "aigateway", codegen.GENERATED / "aigateway")
    assert stale == [], f"generated/ is stale, run `make generate`: {stale}"


def test_stream_request_mirrors_unary_request() -> None:
    """Two request messages (one per RPC), one shape: same names, numbers and types."""

    def shape(descriptor: object) -> dict[str, tuple[int, int, str | None, bool]]:
        return {
            f.name: (
                f.number,
                f.type,
                # Map entry types are nested in their message; compare by their own name.
                f.message_type.name if f.message_type else None,
                f.is_repeated,
            )
            for f in descriptor.fields  # type: ignore[attr-defined]
        }

    unary = shape(chat_pb2.CreateChatCompletionRequest.DESCRIPTOR)
    stream = shape(chat_pb2.StreamChatCompletionRequest.DESCRIPTOR)
    assert stream.pop("stream_options")[0] == 25
    assert unary == stream


def test_every_json_object_message_keeps_unknown_keys() -> None:
    """The fidelity convention: each message that mirrors a JSON object has
    `google.protobuf.Struct extra_fields = 1000`, so a key it does not model is never lost."""
    # Not JSON objects: array wrappers of unions, and RPC envelopes around path parameters.
    exempt = {
        "ListModelsRequest",
        "RetrieveModelRequest",
        "RetrieveModelResponse",
    }
    missing = []
    checked = 0
    for module in (chat_pb2, common_pb2, embeddings_pb2, models_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            fields = message.fields
            if message.name in exempt or (len(fields) == 1 and fields[0].name == "values"):
                continue
            extra = message.fields_by_name.get("extra_fields")
            if (
                extra is None
                or extra.number != 1000
                or extra.message_type.full_name != "google.protobuf.Struct"
            ):
                missing.append(message.full_name)
            checked += 1
    assert missing == []
    assert checked > 50  # every object message of the four files, not a vacuous pass
