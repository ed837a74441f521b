"""Server reflection (v1 and v1alpha) with documented descriptors, and Health/List.

Called through real channels, as a reflection client does: one ServerReflectionInfo stream,
a request per question. tests/test_tools.py asks the same of grpcurl, ghz and
grpc-health-probe.
"""

from __future__ import annotations

from typing import TypeAlias

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from bridge.server import assembly as server
from bridge.server.reflection import SERVICE_NAMES

Request: TypeAlias = reflection_pb2.ServerReflectionRequest
Response: TypeAlias = reflection_pb2.ServerReflectionResponse


async def ask(port: int, version: str, *requests: Request) -> list[Response]:
    """One reflection stream of `grpc.reflection.<version>`; v1 shares v1alpha's wire format."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        return [reply async for reply in call(iter(requests), timeout=10)]


def files(reply: Response) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    assert reply.HasField("file_descriptor_response"), reply
    found = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in reply.file_descriptor_response.file_descriptor_proto
    ]
    return {file.name: file for file in found}


def comments(file: descriptor_pb2.FileDescriptorProto) -> str:
    return " ".join(location.leading_comments for location in file.source_code_info.location)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_both_versions_list_every_service(bridge: server.Bridge, version: str) -> None:
    (reply,) = await ask(bridge.port, version, Request(list_services=""))
    names = {service.name for service in reply.list_services_response.service}
    assert names == {*server.SERVICE_NAMES, "grpc.health.v1.Health", *SERVICE_NAMES}


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_methods_resolve_to_their_documented_file(
    bridge: server.Bridge, version: str
) -> None:
    replies = await ask(
        bridge.port,
        version,
        Request(file_containing_symbol="aigateway.v1.ChatService.CreateChatCompletion"),
        Request(file_containing_symbol="grpc.health.v1.Health.Check"),
        Request(file_containing_symbol="aigateway.v1.CreateChatCompletionRequest.temperature"),
    )
    chat = files(replies[0])
    # The file first, then everything it imports, transitively.
    assert next(iter(chat)) == "aigateway/v1/chat.proto"
    assert {"aigateway/v1/common.proto", "google/protobuf/struct.proto"} <= set(chat)
    assert "Creates a chat completion" in comments(chat["aigateway/v1/chat.proto"])
    (health,) = files(replies[1]).values()  # named as grpcio-health-checking names it
    assert health.package == "grpc.health.v1" and health.service[0].name == "Health"
    assert next(iter(files(replies[2]))) == "aigateway/v1/chat.proto"


async def test_reflection_describes_itself_in_both_versions(bridge: server.Bridge) -> None:
    replies = await ask(
        bridge.port,
        "v1",
        Request(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        Request(file_containing_symbol="grpc.reflection.v1alpha.ServerReflection"),
    )
    (v1,) = files(replies[0]).values()
    assert v1.name == "grpc/reflection/v1/reflection.proto" and v1.package == "grpc.reflection.v1"
    method = v1.service[0].method[0]
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert all(
        not field.type_name or field.type_name.startswith(".grpc.reflection.v1.")
        for message in v1.message_type
        for field in message.field
    )
    (v1alpha,) = files(replies[1]).values()
    assert v1alpha.package == "grpc.reflection.v1alpha"


async def test_unknown_symbols_and_files_are_not_found(bridge: server.Bridge) -> None:
    replies = await ask(
        bridge.port,
        "v1",
        Request(file_containing_symbol="aigateway.v1.NoSuchService"),
        Request(file_by_filename="no/such.proto"),
        Request(all_extension_numbers_of_type="aigateway.v1.ChatMessage"),
    )
    for reply in replies[:2]:
        assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    # Known type, no extensions.
    assert replies[2].all_extension_numbers_response.base_type_name == "aigateway.v1.ChatMessage"
    assert list(replies[2].all_extension_numbers_response.extension_number) == []


async def test_health_list_reports_every_service(bridge: server.Bridge) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.List(health_pb2.HealthListRequest(), timeout=10)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert {name: s.status for name, s in reply.statuses.items()} == {
            name: serving for name in ("", *server.SERVICE_NAMES)
        }
        await bridge.health.set(server.SERVICE_NAMES[0], health_pb2.HealthCheckResponse.NOT_SERVING)
        reply = await health.List(health_pb2.HealthListRequest(), timeout=10)
        assert reply.statuses[server.SERVICE_NAMES[0]].status != serving
