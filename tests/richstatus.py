"""Decoding the bridge's rich error details the way a client in any language does.

A Go, Java or TypeScript client reads the `grpc-status-details-bin` trailer, parses it as a
`google.rpc.Status` and unpacks each `google.protobuf.Any` by its type URL. This module does
exactly that and nothing more (no use of the bridge's own classes), so a test that passes here
passes for every client; it also checks the invariants DESIGN.md promises of every error
status, so no test can forget them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

__all__ = ["DETAIL_ORDER", "RichStatus", "decode", "of_error", "of_status"]

M = TypeVar("M", bound=Message)

DETAIL_ORDER: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
)
"""The detail types the bridge sends, in the order it sends them."""

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class RichStatus:
    """What a client sees of a failed call: code, message and the unpacked details in order."""

    code: grpc.StatusCode
    message: str
    details: tuple[Message, ...]

    def all(self, kind: type[M]) -> list[M]:
        return [detail for detail in self.details if isinstance(detail, kind)]

    def one(self, kind: type[M]) -> M:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind.__name__}, got {list(self.details)}"
        return found[0]

    def has(self, kind: type[Message]) -> bool:
        return bool(self.all(kind))

    @property
    def info(self) -> error_details_pb2.ErrorInfo:
        return self.one(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str:
        return str(self.info.reason)

    @property
    def request_id(self) -> str | None:
        found = self.all(error_details_pb2.RequestInfo)
        return str(found[0].request_id) if found else None

    @property
    def retry_delay(self) -> float:
        """RetryInfo's delay in seconds (fails when there is no RetryInfo)."""
        delay = self.one(error_details_pb2.RetryInfo).retry_delay
        return float(delay.seconds + delay.nanos / 1e9)

    @property
    def violations(self) -> list[tuple[str, str]]:
        """BadRequest's (field, description) pairs (fails when there is no BadRequest)."""
        bad = self.one(error_details_pb2.BadRequest)
        return [(v.field, v.description) for v in bad.field_violations]


def decode(code: grpc.StatusCode, message: str, details_bin: bytes) -> RichStatus:
    """Parse `grpc-status-details-bin` and check the contract every error status keeps.

    The google.rpc.Status has the call's code and message; its details are known types, in
    the documented order, starting with exactly one ErrorInfo whose domain is set; at most one
    of each other type.
    """
    rich = status_pb2.Status.FromString(details_bin)
    assert rich.code == code.value[0], f"details say code {rich.code}, the call says {code}"
    assert rich.message == message, "the details' message differs from the status message"
    details: list[Message] = []
    for packed in rich.details:
        for kind in DETAIL_ORDER:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                assert packed.Unpack(detail)
                details.append(detail)
                break
        else:
            raise AssertionError(f"unexpected detail type {packed.type_url}")
    assert details and isinstance(details[0], error_details_pb2.ErrorInfo), "ErrorInfo first"
    assert details[0].reason and details[0].domain, "ErrorInfo needs reason and domain"
    ranks = [next(i for i, k in enumerate(DETAIL_ORDER) if isinstance(d, k)) for d in details]
    assert ranks == sorted(ranks), f"details out of the documented order: {details}"
    assert len(set(ranks)) == len(ranks), f"a detail type appears twice: {details}"
    return RichStatus(code, message, tuple(details))


def of_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> RichStatus:
    """The rich status of a failed call, read from its trailers."""
    code = error.code()
    message = error.details() or ""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            assert isinstance(value, bytes)
            return decode(code, message, value)
    raise AssertionError(f"{code.name} {message!r} has no {DETAILS_KEY} trailer")


def of_status(status: grpc.Status) -> RichStatus:
    """The rich status a servicer aborts with (`BridgeError.to_status()`)."""
    for key, value in status.trailing_metadata:
        if key == DETAILS_KEY:
            return decode(status.code, status.details, value)
    raise AssertionError(f"{status.code.name} {status.details!r} has no {DETAILS_KEY}")
