"""Every row of DESIGN.md's error table, decoded the way a client decodes it.

Most tests build the BridgeError, turn it into the grpc.Status the servicer aborts with, and
read `grpc-status-details-bin` back with `tests.richstatus`, as any client does. The last ones
do the same through a real channel: a bare grpc.aio server, then the real bridge in front of
the development upstream answering each row's HTTP error, unary and streamed.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from aigateway.v1 import chat_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bridge.status import BRIDGE_DOMAIN, BridgeError, invalid_argument, resource_exhausted
from bridge.telemetry.redaction import Redactor
from bridge.upstream.failures import (
    HTTP_STATUS_TO_CODE,
    code_for_http_status,
    from_http_response,
)
from bridge.upstream.stream_failures import from_stream_error
from bridge.upstream.transport_failures import TransportKind, transport_error
from dev.upstream.server import DevUpstream
from dev.upstream.server import Status as DevStatus
from tests import richstatus
from tests.conftest import Stubs
from tests.richstatus import RichStatus

HOST = "ai-gateway.vercel.sh"
Code = grpc.StatusCode


def decode(error: BridgeError) -> RichStatus:
    """The status a servicer aborts with, decoded as a client decodes it."""
    status = error.to_status()
    assert status.code is error.code
    assert status.details == error.message
    return richstatus.of_status(status)


def envelope(
    message: str | None = "something went wrong",
    type: str | None = "invalid_request_error",
    code: Any = None,
    param: str | None = None,
) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type, "param": param, "code": code}}
    ).encode()


def http_error(
    status: int,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    model: str | None = None,
) -> tuple[BridgeError, RichStatus]:
    error = from_http_response(status, body, headers or {}, domain=HOST, model=model)
    assert error.http_status == status
    return error, decode(error)


# --- the table -----------------------------------------------------------------------------

DESIGN_TABLE = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    408: Code.UNAVAILABLE,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    422: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
    529: Code.UNAVAILABLE,
}


def test_registered_table_is_the_design_table() -> None:
    assert dict(HTTP_STATUS_TO_CODE) == DESIGN_TABLE


@pytest.mark.parametrize(("status", "code"), sorted(DESIGN_TABLE.items()))
def test_every_row_maps_by_status(status: int, code: grpc.StatusCode) -> None:
    _, seen = http_error(status, envelope(type="some_error"), {"x-request-id": "req_9"})
    assert seen.code is code is code_for_http_status(status)
    assert seen.info.domain == HOST
    assert seen.info.metadata["httpStatus"] == str(status)
    assert seen.one(error_details_pb2.RequestInfo).request_id == "req_9"
    assert seen.details[1] == error_details_pb2.RequestInfo(request_id="req_9")
    assert seen.message.startswith(f"upstream returned {status}")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (402, Code.INVALID_ARGUMENT),
        (405, Code.INVALID_ARGUMENT),
        (418, Code.INVALID_ARGUMENT),
        (451, Code.INVALID_ARGUMENT),
        (505, Code.INTERNAL),
        (520, Code.INTERNAL),
        (599, Code.INTERNAL),
        (302, Code.INTERNAL),
    ],
)
def test_other_statuses(status: int, code: grpc.StatusCode) -> None:
    _, seen = http_error(status, b"nope")
    assert seen.code is code
    assert seen.info.reason == f"HTTP_{status}"


# --- ErrorInfo -----------------------------------------------------------------------------


def test_error_info_from_a_full_envelope() -> None:
    body = envelope(
        "Invalid value for 'temperature'", "invalid_request_error", "invalid_value", "temperature"
    )
    _, seen = http_error(400, body)
    assert seen.info.reason == "INVALID_VALUE"
    assert seen.info.domain == HOST
    assert dict(seen.info.metadata) == {
        "httpStatus": "400",
        "type": "invalid_request_error",
        "code": "invalid_value",
        "param": "temperature",
    }


def test_reason_falls_back_to_the_type_when_code_is_null() -> None:
    _, seen = http_error(401, envelope("Incorrect API key provided", "authentication_error"))
    assert seen.code is Code.UNAUTHENTICATED
    assert seen.info.reason == "AUTHENTICATION_ERROR"
    assert "code" not in seen.info.metadata
    assert "param" not in seen.info.metadata
    assert seen.message == "upstream returned 401 Unauthorized: Incorrect API key provided"


def test_numeric_code_prefers_the_type_and_keeps_the_number_in_metadata() -> None:
    _, seen = http_error(400, envelope("bad", "BadRequestError", 400))
    assert seen.info.reason == "BAD_REQUEST_ERROR"
    assert seen.info.metadata["code"] == "400"


def test_numeric_code_without_a_type_uses_the_http_status() -> None:
    _, seen = http_error(400, envelope("bad", None, "400"))
    assert seen.info.reason == "HTTP_400"
    assert seen.info.metadata["code"] == "400"
    assert "type" not in seen.info.metadata


def test_flat_vllm_error_object_is_an_envelope() -> None:
    body = json.dumps(
        {
            "object": "error",
            "message": "max_tokens is too large",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    ).encode()
    _, seen = http_error(400, body)
    assert seen.info.reason == "BAD_REQUEST_ERROR"
    assert seen.message == "upstream returned 400 Bad Request: max_tokens is too large"


def test_request_id_header_is_case_insensitive_and_httpx_headers_work() -> None:
    headers = httpx.Headers({"X-Request-ID": "req_abc"})
    _, seen = http_error(500, envelope(type="server_error"), headers)
    assert seen.one(error_details_pb2.RequestInfo).request_id == "req_abc"
    _, seen = http_error(500, envelope(type="server_error"), {"X-Request-Id": "req_def"})
    assert seen.one(error_details_pb2.RequestInfo).request_id == "req_def"


def test_no_request_info_without_a_request_id() -> None:
    _, seen = http_error(500, envelope(type="server_error"))
    assert not seen.has(error_details_pb2.RequestInfo)


# --- 400 / 422: BadRequest -----------------------------------------------------------------


def test_400_param_becomes_a_field_violation() -> None:
    body = envelope("'messages' must not be empty", param="messages", code="invalid_value")
    error, seen = http_error(400, body)
    violations = seen.one(error_details_pb2.BadRequest).field_violations
    assert [(v.field, v.description) for v in violations] == [
        ("messages", "'messages' must not be empty")
    ]
    assert not error.retryable


def test_400_null_param_gives_no_bad_request() -> None:
    _, seen = http_error(400, envelope("bad", param=None))
    assert not seen.has(error_details_pb2.BadRequest)
    assert "param" not in seen.info.metadata


def test_422_fastapi_detail_locations_become_field_violations() -> None:
    body = json.dumps(
        {
            "detail": [
                {
                    "loc": ["body", "messages", 0, "content"],
                    "msg": "Field required",
                    "type": "missing",
                },
                {
                    "loc": ["body", "temperature"],
                    "msg": "Input should be less than 2",
                    "type": "less_than",
                },
            ]
        }
    ).encode()
    error, seen = http_error(422, body)
    assert seen.code is Code.INVALID_ARGUMENT
    assert seen.info.reason == "HTTP_422"
    violations = seen.one(error_details_pb2.BadRequest).field_violations
    assert [(v.field, v.description) for v in violations] == [
        ("messages.0.content", "Field required"),
        ("temperature", "Input should be less than 2"),
    ]
    assert seen.message == (
        "upstream returned 422 Unprocessable Entity: messages.0.content: Field required; "
        "temperature: Input should be less than 2"
    )
    assert not error.retryable


def test_422_envelope_param() -> None:
    _, seen = http_error(422, envelope("bad n", param="n"))
    assert [v.field for v in seen.one(error_details_pb2.BadRequest).field_violations] == ["n"]


# --- 404: ResourceInfo ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        envelope("not here", "invalid_request_error", "model_not_found"),
        envelope("not here", "model_not_found"),
        envelope("not here", "invalid_request_error", None, "model"),
        envelope("The model `openai/gpt-9` does not exist", "invalid_request_error"),
    ],
)
def test_404_about_the_model_names_it(body: bytes) -> None:
    error, seen = http_error(404, body, model="openai/gpt-9")
    assert seen.code is Code.NOT_FOUND
    info = seen.one(error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("model", "openai/gpt-9")
    assert not error.retryable


def test_404_about_something_else_has_no_resource_info() -> None:
    _, seen = http_error(404, envelope("Unknown path /v1/chat", "not_found_error"), model="m")
    assert not seen.has(error_details_pb2.ResourceInfo)


def test_404_without_a_model_has_no_resource_info() -> None:
    _, seen = http_error(404, envelope("nope", code="model_not_found"))
    assert not seen.has(error_details_pb2.ResourceInfo)


# --- 408 / 5xx: UNAVAILABLE and RetryInfo --------------------------------------------------


def test_408_has_a_default_retry_delay() -> None:
    error, seen = http_error(408, b"")
    assert seen.code is Code.UNAVAILABLE
    assert seen.retry_delay == 1.0
    assert error.retryable
    assert error.retry_after is None  # the loop uses its own backoff
    assert seen.message == (
        "upstream returned 408 Request Timeout with an empty body (retry after 1.0 s)"
    )


def test_408_uses_the_upstream_delay() -> None:
    _, seen = http_error(408, b"", {"retry-after": "4"})
    assert seen.retry_delay == 4.0


@pytest.mark.parametrize("status", [502, 503, 529])
def test_unavailable_retry_info_only_when_given(status: int) -> None:
    error, seen = http_error(status, envelope("busy", "overloaded_error"))
    assert seen.code is Code.UNAVAILABLE
    assert not seen.has(error_details_pb2.RetryInfo)
    assert error.retryable
    error, seen = http_error(
        status, envelope("busy", "overloaded_error"), {"retry-after-ms": "750"}
    )
    assert seen.retry_delay == 0.75
    assert error.retry_after == 0.75
    assert seen.message.endswith("(retry after 0.75 s)")


def test_529_has_a_readable_status_line() -> None:
    _, seen = http_error(529, envelope("Overloaded", "overloaded_error"))
    assert seen.message == "upstream returned 529 Overloaded: Overloaded"
    assert seen.info.reason == "OVERLOADED_ERROR"


@pytest.mark.parametrize(("status", "code"), [(500, Code.INTERNAL), (504, Code.DEADLINE_EXCEEDED)])
def test_other_5xx_are_retryable_without_retry_info(status: int, code: grpc.StatusCode) -> None:
    error, seen = http_error(status, envelope("oops", "server_error"), {"retry-after": "2"})
    assert seen.code is code
    assert not seen.has(error_details_pb2.RetryInfo)
    assert error.retryable


def test_x_should_retry_overrides_the_status() -> None:
    assert not http_error(500, b"", {"x-should-retry": "false"})[0].retryable
    assert http_error(400, b"", {"x-should-retry": "true"})[0].retryable


def test_409_is_aborted_and_retryable() -> None:
    error, seen = http_error(409, envelope("conflict", "conflict_error"))
    assert seen.code is Code.ABORTED
    assert error.retryable


def test_499_is_cancelled() -> None:
    _, seen = http_error(499, b"")
    assert seen.code is Code.CANCELLED
    assert seen.message == "upstream returned 499 Client Closed Request with an empty body"


# --- 413 / 429: RESOURCE_EXHAUSTED ---------------------------------------------------------


def test_413_is_request_too_large_without_retry_info() -> None:
    error, seen = http_error(
        413, envelope("Request too large", "invalid_request_error"), {"retry-after": "5"}
    )
    assert seen.code is Code.RESOURCE_EXHAUSTED
    assert seen.info.reason == "REQUEST_TOO_LARGE"
    assert seen.info.metadata["type"] == "invalid_request_error"
    assert not seen.has(error_details_pb2.RetryInfo)
    assert not seen.has(error_details_pb2.QuotaFailure)
    assert not error.retryable


def test_429_rate_limit_with_retry_after_ms() -> None:
    body = envelope("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded")
    error, seen = http_error(429, body, {"retry-after-ms": "2000", "x-request-id": "req_1"})
    assert seen.code is Code.RESOURCE_EXHAUSTED
    assert seen.message == (
        "upstream returned 429 Too Many Requests: Rate limit reached for gpt-4o (retry after 2.0 s)"
    )
    assert seen.info.reason == "RATE_LIMIT_EXCEEDED"
    violation = seen.one(error_details_pb2.QuotaFailure).violations
    assert [(v.subject, v.description) for v in violation] == [
        ("rate_limit_exceeded", "Rate limit reached for gpt-4o")
    ]
    assert seen.retry_delay == 2.0
    assert error.retry_after == 2.0
    assert error.retryable
    # ErrorInfo, RequestInfo, RetryInfo, QuotaFailure: in the documented order
    assert [type(d).__name__ for d in seen.details] == [
        "ErrorInfo",
        "RequestInfo",
        "RetryInfo",
        "QuotaFailure",
    ]


def test_429_retry_after_seconds() -> None:
    _, seen = http_error(429, envelope("slow down", "rate_limit_error"), {"Retry-After": "3"})
    assert seen.retry_delay == 3.0
    assert seen.one(error_details_pb2.QuotaFailure).violations[0].subject == "rate_limit_error"


def test_429_retry_after_http_date() -> None:
    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    error, seen = http_error(429, envelope("slow down", "rate_limit_error"), {"retry-after": date})
    assert 100 < seen.retry_delay <= 120
    assert error.retry_after is not None and 100 < error.retry_after <= 120


def test_429_fractional_retry_delay_is_exact_in_the_duration() -> None:
    _, seen = http_error(429, envelope("x", "rate_limit_error"), {"retry-after-ms": "1234"})
    delay = seen.one(error_details_pb2.RetryInfo).retry_delay
    assert (delay.seconds, delay.nanos) == (1, 234_000_000)


def test_429_without_a_delay_has_no_retry_info_but_is_retryable() -> None:
    error, seen = http_error(429, envelope("slow down", "rate_limit_error"))
    assert not seen.has(error_details_pb2.RetryInfo)
    assert seen.has(error_details_pb2.QuotaFailure)
    assert error.retryable


@pytest.mark.parametrize(
    "body",
    [
        envelope("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        envelope("You exceeded your current quota", "invalid_request_error", "insufficient_quota"),
        envelope("You exceeded your current quota", "insufficient_quota", None),
    ],
)
def test_429_insufficient_quota_has_no_retry_info_and_is_final(body: bytes) -> None:
    error, seen = http_error(429, body, {"retry-after": "20"})
    assert seen.code is Code.RESOURCE_EXHAUSTED
    assert seen.info.reason == "INSUFFICIENT_QUOTA"
    assert not seen.has(error_details_pb2.RetryInfo)
    quota = seen.one(error_details_pb2.QuotaFailure).violations[0]
    assert (quota.subject, quota.description) == (
        "insufficient_quota",
        "You exceeded your current quota",
    )
    assert not error.retryable
    assert "retry after" not in seen.message


def test_429_non_envelope_still_has_quota_failure() -> None:
    _, seen = http_error(429, b"Too Many Requests", {"retry-after": "1"})
    assert seen.info.reason == "HTTP_429"
    assert seen.one(error_details_pb2.QuotaFailure).violations[0].subject == "HTTP_429"
    assert seen.retry_delay == 1.0


# --- bodies that are not envelopes ---------------------------------------------------------


def test_html_body_maps_by_status_with_a_short_excerpt() -> None:
    page = (
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
        + "<center><h1>502 Bad Gateway</h1></center>\n" * 20
        + "</body>\n</html>\n"
    )
    error, seen = http_error(502, page.encode(), {"content-type": "text/html"})
    assert seen.code is Code.UNAVAILABLE
    assert seen.info.reason == "HTTP_502"
    assert dict(seen.info.metadata) == {"httpStatus": "502"}
    assert seen.message.startswith(
        "upstream returned 502 Bad Gateway with a non-JSON body: "
        '"<html> <head><title>502 Bad Gateway'
    )
    excerpt = seen.message.split(": ", 1)[1].strip('"')
    assert len(excerpt) <= 200
    assert excerpt.endswith("...")
    assert "\n" not in seen.message
    assert error.retryable


def test_empty_body() -> None:
    _, seen = http_error(503, b"")
    assert seen.code is Code.UNAVAILABLE
    assert seen.info.reason == "HTTP_503"
    assert seen.message == "upstream returned 503 Service Unavailable with an empty body"


def test_truncated_json_is_not_an_envelope() -> None:
    _, seen = http_error(500, b'{"error": {"message": "Internal err')
    assert seen.code is Code.INTERNAL
    assert seen.info.reason == "HTTP_500"
    assert seen.message == (
        "upstream returned 500 Internal Server Error with a non-JSON body: "
        '"{"error": {"message": "Internal err"'
    )


def test_non_utf8_body_does_not_break_the_mapping() -> None:
    _, seen = http_error(500, b"\xff\xfe garbage")
    assert seen.code is Code.INTERNAL
    assert "garbage" in seen.message


def test_json_that_is_not_an_envelope_quotes_a_plain_message() -> None:
    _, seen = http_error(
        404, json.dumps({"error": "model 'llama9' not found"}).encode(), model="llama9"
    )
    assert seen.info.reason == "HTTP_404"
    assert seen.message == "upstream returned 404 Not Found: model 'llama9' not found"
    assert seen.one(error_details_pb2.ResourceInfo).resource_name == "llama9"


def test_unrecognized_json_gets_an_excerpt() -> None:
    _, seen = http_error(500, b'{"status": "bad",\n "trace": [1, 2]}')
    assert seen.message == (
        "upstream returned 500 Internal Server Error with an unrecognized JSON body: "
        '"{"status": "bad", "trace": [1, 2]}"'
    )


def test_envelope_without_a_message_names_the_error() -> None:
    _, seen = http_error(401, envelope(None, "authentication_error", "invalid_api_key"))
    assert seen.message == "upstream returned 401 Unauthorized (invalid_api_key)"
    assert seen.info.reason == "INVALID_API_KEY"


def test_long_upstream_messages_are_clipped() -> None:
    _, seen = http_error(400, envelope("x" * 50_000))
    assert len(seen.message) < 1100
    assert seen.message.endswith("...")


def test_huge_bodies_are_only_excerpted() -> None:
    body = envelope("x" * (2 << 20))
    _, seen = http_error(500, body)
    assert seen.info.reason == "HTTP_500"
    assert len(seen.message) < 300


def test_echoed_credentials_do_not_reach_the_message() -> None:
    page = b"<pre>Authorization: Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123456789</pre>"
    _, seen = http_error(502, page)
    assert "abcdefghijklmnop" not in seen.message
    _, seen = http_error(401, envelope("bad key sk-abcdefghijklmnopqrstuvwxyz012345"))
    assert "abcdefghijklmnop" not in seen.message


def test_the_requests_own_credential_is_cut_out_of_any_echo() -> None:
    body = envelope("Incorrect API key provided: key-12345678.", "authentication_error")
    error = from_http_response(401, body, {}, domain=HOST, redact=Redactor(["key-12345678"]))
    assert "key-12345678" not in error.message
    assert error.message.endswith("Incorrect API key provided: [redacted].")
    # Too short to be a credential worth hunting for: left alone.
    error = from_http_response(
        401, envelope("bad key abc"), {}, domain=HOST, redact=Redactor(["abc"])
    )
    assert error.message.endswith("bad key abc")


# --- errors inside a stream ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "reason", "retryable"),
    [
        (
            {"type": "rate_limit_error", "message": "slow"},
            Code.RESOURCE_EXHAUSTED,
            "RATE_LIMIT_ERROR",
            True,
        ),
        (
            {"code": "rate_limit_exceeded", "message": "slow"},
            Code.RESOURCE_EXHAUSTED,
            "RATE_LIMIT_EXCEEDED",
            True,
        ),
        (
            {"type": "insufficient_quota", "message": "pay"},
            Code.RESOURCE_EXHAUSTED,
            "INSUFFICIENT_QUOTA",
            False,
        ),
        (
            {"type": "invalid_request_error", "message": "bad", "param": "tools"},
            Code.INVALID_ARGUMENT,
            "INVALID_REQUEST_ERROR",
            False,
        ),
        (
            {"type": "authentication_error", "message": "who"},
            Code.UNAUTHENTICATED,
            "AUTHENTICATION_ERROR",
            False,
        ),
        (
            {"code": "invalid_api_key", "message": "who"},
            Code.UNAUTHENTICATED,
            "INVALID_API_KEY",
            False,
        ),
        (
            {"type": "permission_error", "message": "no"},
            Code.PERMISSION_DENIED,
            "PERMISSION_ERROR",
            False,
        ),
        (
            {"type": "overloaded_error", "message": "busy"},
            Code.UNAVAILABLE,
            "OVERLOADED_ERROR",
            True,
        ),
        ({"type": "server_error", "message": "boom"}, Code.INTERNAL, "SERVER_ERROR", True),
        ({"message": "mystery"}, Code.INTERNAL, "UPSTREAM_STREAM_ERROR", True),
        ({"code": 429, "message": "slow"}, Code.RESOURCE_EXHAUSTED, "HTTP_429", True),
    ],
)
def test_stream_error_maps_by_type_and_code(
    error: dict[str, Any], code: grpc.StatusCode, reason: str, retryable: bool
) -> None:
    bridge_error = from_stream_error(error, domain=HOST, request_id="gen_123")
    seen = decode(bridge_error)
    assert seen.code is code
    assert seen.info.reason == reason
    assert seen.info.domain == HOST
    assert "httpStatus" not in seen.info.metadata
    assert seen.one(error_details_pb2.RequestInfo).request_id == "gen_123"
    assert not seen.has(error_details_pb2.RetryInfo)
    assert bridge_error.retryable is retryable
    assert bridge_error.http_status is None
    assert seen.message == f"upstream reported an error in the stream: {error['message']}"


def test_stream_error_details() -> None:
    seen = decode(
        from_stream_error(
            {
                "type": "invalid_request_error",
                "message": "bad tools",
                "param": "tools",
                "code": None,
            },
            domain=HOST,
            request_id=None,
        )
    )
    assert dict(seen.info.metadata) == {"type": "invalid_request_error", "param": "tools"}
    assert [v.field for v in seen.one(error_details_pb2.BadRequest).field_violations] == ["tools"]
    assert not seen.has(error_details_pb2.RequestInfo)

    seen = decode(
        from_stream_error(
            {"code": "rate_limit_exceeded", "message": "slow"}, domain=HOST, request_id=None
        )
    )
    assert seen.one(error_details_pb2.QuotaFailure).violations[0].subject == "rate_limit_exceeded"


# --- transport failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code", "reason", "retryable"),
    [
        ("connect", Code.UNAVAILABLE, "UPSTREAM_UNREACHABLE", True),
        ("reset", Code.UNAVAILABLE, "UPSTREAM_CONNECTION_RESET", True),
        ("protocol", Code.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR", True),
        ("body_cut", Code.UNAVAILABLE, "UPSTREAM_RESPONSE_INCOMPLETE", False),
        ("stream_cut", Code.UNAVAILABLE, "STREAM_INCOMPLETE", False),
        ("certificate", Code.UNAVAILABLE, "UPSTREAM_CERTIFICATE_UNTRUSTED", False),
        ("pool_exhausted", Code.UNAVAILABLE, "UPSTREAM_POOL_EXHAUSTED", False),
        ("read_timeout", Code.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", True),
        ("deadline", Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", False),
        ("malformed", Code.INTERNAL, "MALFORMED_RESPONSE", False),
        ("too_large", Code.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE", False),
        ("redirect", Code.INTERNAL, "UPSTREAM_REDIRECT", False),
    ],
)
def test_transport_errors(
    kind: TransportKind, code: grpc.StatusCode, reason: str, retryable: bool
) -> None:
    error = transport_error(kind, domain=HOST, detail="  something\n happened ", request_id="req_7")
    seen = decode(error)
    assert seen.code is code
    assert seen.info.reason == reason
    assert seen.info.domain == HOST
    assert dict(seen.info.metadata) == {}
    assert seen.one(error_details_pb2.RequestInfo).request_id == "req_7"
    assert error.retryable is retryable
    assert HOST in seen.message
    assert seen.message.endswith(": something happened")


def test_stream_cut_says_so() -> None:
    error = transport_error("stream_cut", domain=HOST)
    assert error.message == (
        f"upstream {HOST} ended the stream before [DONE]; the response is incomplete"
    )
    assert not decode(error).has(error_details_pb2.RequestInfo)


# --- the bridge's own checks ---------------------------------------------------------------


def test_invalid_argument() -> None:
    error = invalid_argument("messages", "must contain at least one message")
    seen = decode(error)
    assert seen.code is Code.INVALID_ARGUMENT
    assert seen.info.reason == "INVALID_REQUEST"
    assert seen.info.domain == BRIDGE_DOMAIN
    violation = seen.one(error_details_pb2.BadRequest).field_violations[0]
    assert (violation.field, violation.description) == (
        "messages",
        "must contain at least one message",
    )
    assert seen.message == "invalid request: messages: must contain at least one message"
    assert not error.retryable


def test_resource_exhausted_names_the_limit() -> None:
    error = resource_exhausted("max_request_bytes", 1_000_000, 1_500_000)
    seen = decode(error)
    assert seen.code is Code.RESOURCE_EXHAUSTED
    assert seen.info.reason == "REQUEST_TOO_LARGE"
    assert "max_request_bytes" in seen.message
    assert "1000000" in seen.message and "1500000" in seen.message
    assert seen.info.metadata["limitName"] == "max_request_bytes"
    assert not error.retryable


def test_constructor_keeps_the_invariants() -> None:
    with pytest.raises(ValueError):
        BridgeError(Code.OK, "fine", reason="X", domain=HOST)
    with pytest.raises(ValueError):
        BridgeError(
            Code.INTERNAL,
            "x",
            reason="X",
            domain=HOST,
            extra_details=[error_details_pb2.ErrorInfo(reason="Y")],
        )
    error = BridgeError(
        Code.INTERNAL,
        "x",
        reason="X",
        domain=HOST,
        request_id="r",
        extra_details=[error_details_pb2.ResourceInfo(), error_details_pb2.BadRequest()],
    )
    assert [type(d).__name__ for d in decode(error).details] == [
        "ErrorInfo",
        "RequestInfo",
        "BadRequest",
        "ResourceInfo",
    ]
    assert str(error) == "x"


# --- through a real server -----------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


async def test_abort_reaches_a_real_client_with_details() -> None:
    body = envelope("Rate limit reached for gpt-4o — über", "requests", "rate_limit_exceeded")
    error = from_http_response(
        429, body, {"retry-after-ms": "1500", "x-request-id": "req_live"}, domain=HOST
    )

    async def fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await error.abort(context)

    handler = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Fail": grpc.unary_unary_rpc_method_handler(
                fail, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary(
                "/test.Errors/Fail", request_serializer=_identity, response_deserializer=_identity
            )
            call = method(b"ping")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() is Code.RESOURCE_EXHAUSTED
            assert raised.value.details() == error.message
            rich = await rpc_status.aio.from_call(call)
            assert rich is not None
            # the synchronous helper reads the same trailers off the exception
            assert rpc_status.from_call(raised.value) == rich
    finally:
        await server.stop(None)

    assert rich.message == error.message
    seen = richstatus.of_error(raised.value)
    assert seen.info.reason == "RATE_LIMIT_EXCEEDED"
    assert seen.info.metadata["httpStatus"] == "429"
    assert seen.one(error_details_pb2.RequestInfo).request_id == "req_live"
    assert seen.retry_delay == 1.5
    assert seen.one(error_details_pb2.QuotaFailure).violations[0].subject == "rate_limit_exceeded"


# --- every row end to end: a real bridge, a real upstream, a real channel ------------------


@dataclass(frozen=True)
class Row:
    """One row of DESIGN.md's error table as the upstream sends it and the caller sees it."""

    name: str
    status: int
    body: bytes
    code: grpc.StatusCode
    reason: str
    extras: frozenset[type[Message]]
    """Detail types besides ErrorInfo and RequestInfo."""
    retried: bool
    headers: Mapping[str, str] = field(default_factory=dict)


_BAD = error_details_pb2.BadRequest
_RETRY = error_details_pb2.RetryInfo
_QUOTA = error_details_pb2.QuotaFailure
_RESOURCE = error_details_pb2.ResourceInfo
_422 = json.dumps(
    {"detail": [{"loc": ["body", "messages", 0, "role"], "msg": "Field required"}]}
).encode()
E2E_MODEL = "openai/gpt-4o-mini"

ROWS = [
    Row(
        "400",
        400,
        envelope("bad n", code="invalid_value", param="n"),
        Code.INVALID_ARGUMENT,
        "INVALID_VALUE",
        frozenset({_BAD}),
        retried=False,
    ),
    Row("422", 422, _422, Code.INVALID_ARGUMENT, "HTTP_422", frozenset({_BAD}), retried=False),
    Row(
        "401",
        401,
        envelope("Incorrect API key", "authentication_error", "invalid_api_key"),
        Code.UNAUTHENTICATED,
        "INVALID_API_KEY",
        frozenset(),
        retried=False,
    ),
    Row(
        "403",
        403,
        envelope("no", "permission_error"),
        Code.PERMISSION_DENIED,
        "PERMISSION_ERROR",
        frozenset(),
        retried=False,
    ),
    Row(
        "404",
        404,
        envelope(f"The model `{E2E_MODEL}` does not exist", code="model_not_found"),
        Code.NOT_FOUND,
        "MODEL_NOT_FOUND",
        frozenset({_RESOURCE}),
        retried=False,
    ),
    Row(
        "408",
        408,
        envelope("timed out", "timeout_error"),
        Code.UNAVAILABLE,
        "TIMEOUT_ERROR",
        frozenset({_RETRY}),
        retried=True,
    ),
    Row(
        "409",
        409,
        envelope("conflict", "conflict_error"),
        Code.ABORTED,
        "CONFLICT_ERROR",
        frozenset(),
        retried=True,
    ),
    Row(
        "413",
        413,
        envelope("too big", code="request_too_large"),
        Code.RESOURCE_EXHAUSTED,
        "REQUEST_TOO_LARGE",
        frozenset(),
        retried=False,
        headers={"retry-after": "1"},
    ),
    Row(
        "429 rate limit",
        429,
        envelope("slow down", "requests", "rate_limit_exceeded"),
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMIT_EXCEEDED",
        frozenset({_QUOTA, _RETRY}),
        retried=True,
        headers={"retry-after-ms": "10"},
    ),
    Row(
        "429 rate limit without delay",
        429,
        envelope("slow down", "rate_limit_error"),
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMIT_ERROR",
        frozenset({_QUOTA}),
        retried=True,
    ),
    Row(
        "429 insufficient_quota",
        429,
        envelope("pay up", "insufficient_quota", "insufficient_quota"),
        Code.RESOURCE_EXHAUSTED,
        "INSUFFICIENT_QUOTA",
        frozenset({_QUOTA}),
        retried=False,
        headers={"retry-after": "1"},
    ),
    Row("499", 499, b"", Code.CANCELLED, "HTTP_499", frozenset(), retried=False),
    Row(
        "500",
        500,
        envelope("oops", "server_error"),
        Code.INTERNAL,
        "SERVER_ERROR",
        frozenset(),
        retried=True,
    ),
    Row(
        "501",
        501,
        envelope("nope", "server_error", "not_implemented"),
        Code.UNIMPLEMENTED,
        "NOT_IMPLEMENTED",
        frozenset(),
        retried=True,
    ),
    Row(
        "502",
        502,
        envelope("bad gateway", "server_error"),
        Code.UNAVAILABLE,
        "SERVER_ERROR",
        frozenset(),
        retried=True,
    ),
    Row(
        "503 with delay",
        503,
        envelope("busy", "server_error"),
        Code.UNAVAILABLE,
        "SERVER_ERROR",
        frozenset({_RETRY}),
        retried=True,
        headers={"retry-after": "0"},
    ),
    Row(
        "529",
        529,
        envelope("Overloaded", "overloaded_error"),
        Code.UNAVAILABLE,
        "OVERLOADED_ERROR",
        frozenset(),
        retried=True,
    ),
    Row(
        "504",
        504,
        envelope("gateway timeout", "timeout_error"),
        Code.DEADLINE_EXCEEDED,
        "TIMEOUT_ERROR",
        frozenset(),
        retried=True,
    ),
    Row(
        "other 4xx",
        418,
        b"I'm a teapot",
        Code.INVALID_ARGUMENT,
        "HTTP_418",
        frozenset(),
        retried=False,
    ),
    Row("other 5xx", 520, b"", Code.INTERNAL, "HTTP_520", frozenset(), retried=True),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_every_row_end_to_end(
    upstream: DevUpstream, stubs: Stubs, row: Row, streamed: bool
) -> None:
    request_id = f"req_row_{row.status}"
    reply = DevStatus(row.status, row.body, {"x-request-id": request_id, **row.headers})
    upstream.program(E2E_MODEL, reply, reply, reply)
    messages = [chat_pb2.ChatMessage(role="user", content_text="hi")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streamed:
            request = chat_pb2.StreamChatCompletionRequest(model=E2E_MODEL, messages=messages)
            async for _ in stubs.chat.StreamChatCompletion(request):
                raise AssertionError("no message may arrive")
        else:
            await stubs.chat.CreateChatCompletion(
                chat_pb2.CreateChatCompletionRequest(model=E2E_MODEL, messages=messages)
            )
    seen = richstatus.of_error(caught.value)
    assert seen.code is row.code
    assert seen.message.startswith(f"upstream returned {row.status}")
    assert seen.reason == row.reason
    assert seen.info.domain == "127.0.0.1"
    assert seen.info.metadata["httpStatus"] == str(row.status)
    assert seen.request_id == request_id
    kinds = {type(detail) for detail in seen.details}
    assert kinds == {error_details_pb2.ErrorInfo, error_details_pb2.RequestInfo, *row.extras}
    if _RESOURCE in row.extras:
        assert seen.one(_RESOURCE).resource_name == E2E_MODEL
    if _BAD in row.extras:
        assert seen.violations[0][0] in ("n", "messages.0.role")
    sent = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(sent) == (3 if row.retried else 1)
