"""A failure with its gRPC status decided: code, message and rich details (google.rpc).

Every status the bridge ends a call with is a `BridgeError`, whichever side decided it (the caller's
request, the bridge's own limits, the upstream's answer). Its details follow google/rpc's
error_details.proto: exactly one ErrorInfo first, then a RequestInfo when the upstream request id
is known, then whichever of BadRequest, RetryInfo, QuotaFailure, ResourceInfo apply
(DESIGN.md "Error mapping"). Mapping foreign failures into it is `bridge.upstream.failures`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_Code = grpc.StatusCode

BRIDGE_DOMAIN = "bridge"
"""ErrorInfo domain of failures the bridge decides on its own (bad input, size limits)."""


_DETAIL_ORDER: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
)


def _detail_rank(detail: Message) -> int:
    for rank, kind in enumerate(_DETAIL_ORDER):
        if isinstance(detail, kind):
            return rank
    return len(_DETAIL_ORDER)


class BridgeError(Exception):
    """A failure with its gRPC status already decided.

    Built by the functions of this module (or directly, with the same guarantees): the details
    always start with exactly one ErrorInfo, then a RequestInfo when `request_id` is given, then
    the other details in a fixed order, so clients can rely on where to look.
    """

    code: grpc.StatusCode
    message: str
    """The status message: what happened and, where known, the upstream's own words."""
    details: tuple[Message, ...]
    retry_after: float | None
    """Seconds the upstream asked us to wait (retry-after-ms / retry-after), for the retry loop."""
    retryable: bool
    """Whether the bridge's retry loop may try again (decided by `bridge.upstream.retry`)."""
    http_status: int | None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        domain: str,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        extra_details: Iterable[Message] = (),
        retry_after: float | None = None,
        retryable: bool = False,
        http_status: int | None = None,
    ) -> None:
        if code is grpc.StatusCode.OK:
            raise ValueError("a BridgeError cannot carry status OK")
        extras = list(extra_details)
        for detail in extras:
            if isinstance(detail, error_details_pb2.ErrorInfo | error_details_pb2.RequestInfo):
                raise ValueError("ErrorInfo and RequestInfo are built from reason and request_id")
        message = encodable(message)
        super().__init__(message)
        self.code = code
        self.message = message
        metadata = {encodable(k): encodable(v) for k, v in (metadata or {}).items()}
        head: list[Message] = [
            error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata)
        ]
        request_id = _clean_request_id(request_id)
        if request_id:
            head.append(error_details_pb2.RequestInfo(request_id=request_id))
        self.details = (*head, *sorted(extras, key=_detail_rank))
        self.retry_after = retry_after
        self.retryable = retryable
        self.http_status = http_status
        self.trailing: tuple[tuple[str, str], ...] = ()
        """Upstream response headers to return as trailing metadata (DESIGN.md "Streaming")."""

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo:
        """The one ErrorInfo, for logging and tests."""
        info = self.details[0]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        return info

    @property
    def reason(self) -> str:
        return str(self.error_info.reason)

    def __repr__(self) -> str:
        return f"BridgeError({self.code.name}, {self.message!r}, reason={self.reason!r})"

    def to_status(self) -> grpc.Status:
        """The grpc.Status to abort with: code, message, the details as google.rpc.Status in
        `grpc-status-details-bin`, and `trailing` (the upstream's returned headers)."""
        packed = []
        for detail in self.details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        rich = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        status: grpc.Status = rpc_status.to_status(rich)
        if self.trailing:
            return _Status(status.code, status.details, (*self.trailing, *status.trailing_metadata))
        return status

    def redacted(self, redact: Callable[[str], str]) -> BridgeError:
        """A copy with `redact` applied to every string the caller would see: the message,
        every string field of every detail (ErrorInfo reason and metadata included) and the
        trailing metadata."""
        copy = BridgeError.__new__(BridgeError)
        copy.__dict__.update(self.__dict__)
        copy.message = redact(self.message)
        copy.args = (copy.message,)
        details = []
        for detail in self.details:
            clone = type(detail)()
            clone.CopyFrom(detail)
            _redact_fields(clone, redact)
            details.append(clone)
        copy.details = tuple(details)
        # The upstream's returned headers (x-request-id, x-ratelimit-*) may echo a key too.
        copy.trailing = tuple((key, redact(value)) for key, value in self.trailing)
        return copy

    async def abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        """End the RPC with this status.

        grpc raises its own AbortError from here; let it propagate (never wrap this call in a
        bare `except Exception`, or the abort is swallowed).
        """
        await context.abort_with_status(self.to_status())
        raise AssertionError("abort_with_status returned")  # pragma: no cover


def encodable(text: str) -> str:
    """`text` with lone surrogates as U+FFFD: a status message and a protobuf string must be
    UTF-8, and a header aiohttp decoded with `surrogateescape` (a byte that is not UTF-8, in a
    `location` say) or JSON's `"\\ud800"` would otherwise fail the status itself (UNKNOWN)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _redact_fields(message: Message, redact: Callable[[str], str]) -> None:
    """Apply `redact` to every string field of `message`, recursively (maps included)."""
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = {redact(str(k)): v for k, v in value.items()}
            value.clear()
            for key, item in entries.items():
                if isinstance(item, str):
                    value[key] = redact(item)
                else:
                    value[key].CopyFrom(item)
                    _redact_fields(value[key], redact)
        elif field.message_type is not None:
            for item in value if field.is_repeated else (value,):
                _redact_fields(item, redact)
        elif field.type == field.TYPE_STRING:
            if field.is_repeated:
                value[:] = [redact(item) for item in value]
            else:
                setattr(message, field.name, redact(value))


def invalid_argument(field: str, description: str, *, domain: str = BRIDGE_DOMAIN) -> BridgeError:
    """A request the bridge rejects itself, before calling the upstream.

    Reason INVALID_REQUEST (the bridge's own, distinct from the upstream's
    INVALID_REQUEST_ERROR), with a BadRequest naming the field so clients can point at it.
    """
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    return BridgeError(
        _Code.INVALID_ARGUMENT,
        f"invalid request: {field}: {description}",
        reason="INVALID_REQUEST",
        domain=domain,
        extra_details=[error_details_pb2.BadRequest(field_violations=[violation])],
    )


def resource_exhausted(limit_name: str, limit: int, actual: int) -> BridgeError:
    """A request over one of the bridge's own size limits (`limit_name` is the Config field).

    Reason REQUEST_TOO_LARGE, as for an upstream 413, so clients handle both alike; the limit's
    name and its flag are in the message and metadata so the operator knows which setting to
    raise, and the caller knows by how much to shrink the request.
    """
    flag = "--" + limit_name.replace("_", "-")
    return BridgeError(
        _Code.RESOURCE_EXHAUSTED,
        f"request too large: {actual} bytes exceeds the bridge's {limit_name} limit of "
        f"{limit} bytes (option {flag})",
        reason="REQUEST_TOO_LARGE",
        domain=BRIDGE_DOMAIN,
        metadata={"limitName": limit_name, "limit": str(limit), "actual": str(actual)},
    )


REQUEST_ID_LIMIT = 256
"""Longest upstream request id carried in a RequestInfo, in characters."""


def _clean_request_id(request_id: str | None) -> str | None:
    """The upstream's `x-request-id` as a RequestInfo may carry it, or None.

    The id is the upstream's word: a value with control or non-ASCII characters, or longer
    than `REQUEST_ID_LIMIT`, is dropped. Cut or escaped it would no longer find the request in
    the upstream's logs, and a 100 KB one would push the status past grpc's metadata limit,
    so that the caller lost the real error.
    """
    if not request_id or len(request_id) > REQUEST_ID_LIMIT:
        return None
    if not request_id.isascii() or not request_id.isprintable():
        return None
    return request_id
