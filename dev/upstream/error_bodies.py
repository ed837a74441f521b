"""The error bodies the development upstream sends: what real upstreams and proxies answer.

The OpenAI error envelope, the body a real upstream sends with each HTTP status (for
`Status(status)` without a body), and the nginx-style HTML page of a proxy in front of it.
"""

from __future__ import annotations

import http

from dev.upstream.replies import Json

__all__ = ["default_error_body", "error_envelope", "html_page", "status_phrase"]


def error_envelope(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> Json:
    """The OpenAI error envelope: `{"error": {message, type, param, code}}`, nulls kept."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# status -> (type, code, param, message) of the envelope a real upstream would send.
_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str | None, str]] = {
    400: ("invalid_request_error", None, None, "Invalid request."),
    401: ("authentication_error", "invalid_api_key", None, "Incorrect API key provided."),
    403: ("permission_error", None, None, "You are not allowed to use this resource."),
    404: ("invalid_request_error", "model_not_found", "model", "The model does not exist."),
    408: ("timeout_error", "request_timeout", None, "The request timed out."),
    409: ("invalid_request_error", "conflict", None, "The request conflicts with another."),
    413: ("invalid_request_error", "request_too_large", None, "The request is too large."),
    429: (
        "rate_limit_error",
        "rate_limit_exceeded",
        None,
        "Rate limit reached for requests. Please try again later.",
    ),
    499: ("invalid_request_error", "client_closed_request", None, "Client closed request."),
    500: ("server_error", None, None, "The server had an error processing your request."),
    501: ("server_error", "not_implemented", None, "Not implemented."),
    502: ("server_error", "bad_gateway", None, "Bad gateway."),
    503: ("server_error", "service_unavailable", None, "The service is unavailable."),
    504: ("timeout_error", "gateway_timeout", None, "Gateway timeout."),
    529: ("overloaded_error", "overloaded", None, "The upstream is overloaded."),
}


def default_error_body(status: int, model: str | None = None) -> Json:
    """The body a real upstream sends with `status`, for `Status(status)` without a body.

    422 gets the FastAPI/vLLM validation shape (`detail[].loc`) rather than an envelope,
    because that is what servers answering 422 actually send.
    """
    if status == 422:
        loc = ["body", "messages"]
        return {"detail": [{"loc": loc, "msg": "Field required", "type": "missing"}]}
    type_, code, param, message = _DEFAULT_ERRORS.get(
        status,
        ("invalid_request_error" if status < 500 else "server_error", None, None, ""),
    )
    if status == 404 and model is not None:
        message = f"The model `{model}` does not exist or you do not have access to it."
    if not message:
        message = f"HTTP {status} {status_phrase(status)}".rstrip()
    return error_envelope(message, type_, param, code)


def status_phrase(status: int) -> str:
    """The reason phrase of `status` (RFC 9110 section 15), or "" for an unregistered one."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def html_page(status: int) -> bytes:
    """The HTML error page nginx sends with `status` (`text/html`), CRLF line ends."""
    title = f"{status} {status_phrase(status)}".rstrip()
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
