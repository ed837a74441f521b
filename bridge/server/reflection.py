"""Server reflection, `grpc.reflection.v1` and `v1alpha`, answered with documented descriptors.

grpcio-reflection's servicer looks symbols up in the protobuf runtime's descriptor pool, which
cannot find a method (`aigateway.v1.ChatService.CreateChatCompletion`: "Symbol not found",
which also breaks ghz's reflection mode) and whose descriptors carry no comments; and it
serves only `v1alpha`. This module answers from the FileDescriptorProtos themselves:

* aigateway's protos and their imports come from the descriptor set that `make generate`
  writes next to the generated code (dev.codegen.DESCRIPTOR_SET), with source info, so
  `grpcurl describe` shows the protos' documentation;
* the health and reflection protos, and google.rpc's `status.proto` and `error_details.proto`
  (so that tools decode the details of an error status), come from their Python packages
  (without comments; the packages ship none); `grpc.reflection.v1`'s file is v1alpha's
  under its v1 name, since the two are the same messages in another package.

Both services share one implementation: v1's messages are v1alpha's on the wire (same fields,
same numbers), so v1 calls are decoded and answered with the v1alpha classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)

_V1_FILE = "grpc/reflection/v1/reflection.proto"


def documented_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """aigateway's files and their imports, with comments, from the packaged descriptor set."""
    data = (resources.files("aigateway.v1") / "descriptor_set.binpb").read_bytes()
    return list(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def _file_of(module: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def _files_of(*modules: Any) -> list[descriptor_pb2.FileDescriptorProto]:
    """The modules' files and everything they import, from the protobuf runtime."""
    found: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()
    pending = [module.DESCRIPTOR for module in modules]
    while pending:
        file = pending.pop()
        if file.name in seen:
            continue
        seen.add(file.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        found.append(proto)
        pending.extend(file.dependencies)
    return found


def _v1_file(v1alpha: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's file, renamed into its v1 package."""
    text = v1alpha.SerializeToString()
    proto = descriptor_pb2.FileDescriptorProto.FromString(text)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."

    def rename(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name.removeprefix(old)
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    proto.options.Clear()
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    return proto


def _symbols(file: descriptor_pb2.FileDescriptorProto) -> Iterable[str]:
    """Every fully-qualified name the file defines, as protoc's pool would find it."""
    prefix = f"{file.package}." if file.package else ""

    def enums(scope: str, items: Iterable[descriptor_pb2.EnumDescriptorProto]) -> Iterable[str]:
        for enum in items:
            yield scope + enum.name
            for value in enum.value:  # enum values are siblings of their enum in C++ scoping
                yield scope + value.name
                yield f"{scope}{enum.name}.{value.name}"

    def messages(scope: str, items: Iterable[descriptor_pb2.DescriptorProto]) -> Iterable[str]:
        for message in items:
            name = scope + message.name
            yield name
            inner = name + "."
            yield from (inner + f.name for f in message.field)
            yield from (inner + f.name for f in message.extension)
            yield from (inner + o.name for o in message.oneof_decl)
            yield from enums(inner, message.enum_type)
            yield from messages(inner, message.nested_type)

    yield from messages(prefix, file.message_type)
    yield from enums(prefix, file.enum_type)
    yield from (prefix + e.name for e in file.extension)
    for service in file.service:
        yield prefix + service.name
        yield from (f"{prefix}{service.name}.{m.name}" for m in service.method)


class Reflection:
    """The reflection service over a fixed set of files, for the services a server offers."""

    def __init__(
        self, services: Sequence[str], files: Iterable[descriptor_pb2.FileDescriptorProto]
    ) -> None:
        self._services = tuple(sorted(services))
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self._bytes: dict[str, bytes] = {}
        self._symbols: dict[str, str] = {}
        for file in files:
            if file.name in self._files:
                continue  # the first one wins: the documented copy comes first
            self._files[file.name] = file
            self._bytes[file.name] = file.SerializeToString()
            for symbol in _symbols(file):
                self._symbols.setdefault(symbol, file.name)
        for service in self._services:
            if service not in self._symbols:
                raise ValueError(f"no descriptor for service {service}")

    @classmethod
    def for_services(cls, services: Sequence[str]) -> Reflection:
        """aigateway's documented files, the google.rpc details its errors carry (so that
        grpcurl and other tools decode them), then health's and reflection's, both versions."""
        v1alpha = _file_of(reflection_pb2)
        files = [
            *documented_files(),
            *_files_of(status_pb2, error_details_pb2, health_pb2, reflection_pb2),
            _v1_file(v1alpha),
        ]
        return cls((*services, *SERVICE_NAMES), files)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve `grpc.reflection.v1` and `v1alpha`, one implementation for both."""
        for name in SERVICE_NAMES:
            handler = grpc.stream_stream_rpc_method_handler(
                self.server_reflection_info,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
            )

    async def server_reflection_info(
        self,
        requests: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)

    def answer(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        kind = request.WhichOneof("message_request")
        reply = reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request
        )
        if kind == "list_services":
            reply.list_services_response.service.extend(
                reflection_pb2.ServiceResponse(name=name) for name in self._services
            )
        elif kind == "file_by_filename":
            self._file_response(reply, request.file_by_filename)
        elif kind == "file_containing_symbol":
            self._file_response(reply, self._symbols.get(request.file_containing_symbol))
        elif kind == "file_containing_extension":
            # None of these files extends a message.
            self._not_found(reply, "no extensions are defined")
        elif kind == "all_extension_numbers_of_type":
            name = request.all_extension_numbers_of_type
            if name in self._symbols:
                reply.all_extension_numbers_response.base_type_name = name
            else:
                self._not_found(reply, f"unknown type {name}")
        else:
            reply.error_response.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            reply.error_response.error_message = "no request in ServerReflectionRequest"
        return reply

    def _file_response(
        self, reply: reflection_pb2.ServerReflectionResponse, name: str | None
    ) -> None:
        """The file and every file it imports, transitively, the file first."""
        if name is None or name not in self._files:
            self._not_found(reply, "symbol or file not found")
            return
        order: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in order or current not in self._files:
                continue
            order.append(current)
            pending.extend(self._files[current].dependency)
        reply.file_descriptor_response.file_descriptor_proto.extend(self._bytes[n] for n in order)

    @staticmethod
    def _not_found(reply: reflection_pb2.ServerReflectionResponse, message: str) -> None:
        reply.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
        reply.error_response.error_message = message
