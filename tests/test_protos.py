"""The protos and the generated code: fresh, consistent, importable as `aigateway.v1`."""

from __future__ import annotations

from pathlib import Path

from aigateway.v1 import chat_pb2

from bridge import codegen


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
