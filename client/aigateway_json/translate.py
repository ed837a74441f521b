"""The one translation layer between OpenAI-style JSON and the `aigateway.v1` messages.

The bridge uses it for every request and response, and it is public so that Python users can
do the same (README, "Python translation API"):

* `from_json(MessageType, data)` / `to_json(msg)`: any message, from and to decoded JSON;
  `from_json_bytes` and `to_json_bytes` for JSON text. Raises only `TranslationError`.
* Typed shortcuts for each OpenAI document: `chat_request_from_json`,
  `stream_chat_request_from_json`, `embeddings_request_from_json`,
  `chat_completion_from_json`, `chat_chunk_from_json`, `embeddings_from_json`,
  `model_list_from_json`, `model_from_json`; and `request_body(request)`, the exact JSON
  the bridge sends upstream for a request message.

It is driven by the message descriptors, so a field added to the protos is translated
without code here. The rules (also written at the top of common.proto):

* A field's JSON key is its name (or the camelCase key in `descriptors.JSON_KEYS`).
* A oneof whose members are all named `<oneof>_<variant>` is a JSON union: the JSON key is
  the oneof name and the JSON value's form picks the member (a string, an array, an object
  whose `type` is `<variant>`, ...). Other oneofs are plain: each member is its own key;
  if JSON has two of them, the first is typed and the second kept in `extra_fields`.
* Messages with a single repeated field `values` stand for JSON arrays inside unions.
* A message whose fields all form one oneof of messages, among them one named `other`, is
  a JSON object tagged by its `type` key (the Responses API's items, parts, tools and
  events): the member named after the type, dots as underscores, holds the whole object;
  an object without `type` goes to the first member, one of any other type to `other`.
* `extra_fields` holds every key the message does not model and every value its typed
  field cannot hold: `null`, an empty array or object (so presence survives), a value of
  an unexpected JSON type. `to_json` merges it back, so JSON -> proto -> JSON is exact
  (integers in free-form JSON stay integers, within +-2**53, beyond which a JSON number is
  a double anyway). The one loss: a lone UTF-16 surrogate escaped in JSON (`"\\ud83d"`)
  cannot be a protobuf string and becomes U+FFFD.

* Key order. A `google.protobuf.Struct` (or any protobuf map) keeps no order: Python's
  protobuf iterates a map in hash order, which differs from one process to the next. In a
  request (`request_body`) the keys of every Struct, map and `extra_fields` are therefore
  written sorted, so identical requests give identical bytes wherever they are translated.
  Where the order is the caller's to choose (a JSON Schema's `properties`), a message has
  a `string <key>_json` beside its Struct `<key>`: JSON text, written as `<key>` with the
  keys in the order written (`parse_json_text`). Such a field is never read from JSON.

This module is the public API and re-exports the rest; the work is done by the package's
other modules: `fast` (`from_json`'s fast path: a shape check, then the message's
constructor; whatever it does not take, the generic walk decides, `generic_from_json`),
`plans` (one plan per message type, the recursive `fill` and `to_json`),
`reading` and `writing` (per-field readers and writers), `descriptors` (what the
descriptors say about the JSON shape), `freeform` (Struct and Value), `json_text`
(`parse_json_text`) and `errors` (`TranslationError`, `MAX_NESTING`).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2, responses_pb2
from google.protobuf.message import Message

from aigateway_json.descriptors import EXTRA_FIELDS, json_text_fields, type_oneof
from aigateway_json.errors import MAX_NESTING as MAX_NESTING
from aigateway_json.errors import TranslationError, too_deep
from aigateway_json.fast import kwargs, shape_of
from aigateway_json.freeform import struct_to_python, value_to_python
from aigateway_json.json_text import parse_json_text
from aigateway_json.plans import fill, request_json, to_json

__all__ = [
    "EXTRA_FIELDS",
    "ChatRequest",
    "ResponseRequest",
    "TranslationError",
    "chat_chunk_from_json",
    "chat_completion_from_json",
    "chat_request_from_json",
    "embeddings_from_json",
    "embeddings_request_from_json",
    "from_json",
    "from_json_bytes",
    "json_text_fields",
    "model_from_json",
    "model_list_from_json",
    "parse_json_text",
    "request_body",
    "response_event_from_json",
    "response_from_json",
    "response_request_from_json",
    "stream_chat_request_from_json",
    "stream_response_request_from_json",
    "struct_to_python",
    "to_json",
    "to_json_bytes",
    "type_oneof",
    "value_to_python",
]

M = TypeVar("M", bound=Message)


def from_json(message_type: type[M], data: Any) -> M:
    """Build a message of `message_type` from decoded JSON (a dict), losing nothing."""
    if type(data) is not dict:
        raise TranslationError(
            f"expected a JSON object for {message_type.DESCRIPTOR.full_name}, "
            f"got {type(data).__name__}"
        )
    try:
        # The fast path (`aigateway_json.fast`); whatever it does not take, or anything the
        # constructor refuses (a lone surrogate, a number beyond a double), the generic walk
        # decides, with the same result or error as if it had been the only one.
        return message_type(**kwargs(shape_of(message_type), data, 0))
    except Exception:  # Slow, or any failure: the generic walk is the reference
        pass
    return generic_from_json(message_type, data)


def generic_from_json(message_type: type[M], data: dict[str, Any]) -> M:
    """`from_json` by the generic walk alone (`plans.fill`), for any JSON object: the
    reference the fast path must match."""
    msg = message_type()
    try:
        try:
            fill(msg, data, 0)
        except UnicodeEncodeError:
            # JSON may escape a lone UTF-16 surrogate ("\ud83d", half of an emoji); protobuf
            # strings must be valid UTF-8. Such characters become U+FFFD, as in any UTF-8
            # decoder, rather than failing the whole message. The only lossy case, off the
            # fast path.
            msg = message_type()
            fill(msg, _replace_surrogates(data), 0)
    except OverflowError:
        # An integer literal beyond 1e308 (Python's JSON decoder keeps it exact; no double,
        # and so no protobuf number, can hold it).
        raise TranslationError("a number beyond the range of a double (about 1e308)") from None
    except RecursionError:
        # Only `_replace_surrogates` on JSON nested near Python's recursion limit gets here:
        # `fill` stops at MAX_NESTING long before.
        raise too_deep() from None
    return msg


def _replace_surrogates(value: Any) -> Any:
    if type(value) is str:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if type(value) is dict:
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if type(value) is list:
        return [_replace_surrogates(v) for v in value]
    return value


def from_json_bytes(message_type: type[M], raw: bytes | str) -> M:
    """Like `from_json`, from JSON text; TranslationError when it is not JSON."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TranslationError(f"not JSON: {exc}") from None
    return from_json(message_type, data)


def to_json_bytes(msg: Message) -> bytes:
    """The message as compact UTF-8 JSON text (what goes on the wire to the upstream).

    JSON has no NaN or Infinity: a message holding one is a TranslationError, not the
    tokens `NaN` / `Infinity` that Python's encoder writes by default and parsers refuse."""
    try:
        return json.dumps(
            to_json(msg), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError as exc:
        raise TranslationError(str(exc)) from None


# --------------------------------------------------------------------------- typed shortcuts
# One function per OpenAI JSON document, so that callers get the right message type (and
# type checkers the right return type) without naming it. `to_json` is the inverse of each.


ChatRequest = chat_pb2.CreateChatCompletionRequest | chat_pb2.StreamChatCompletionRequest
"""Either chat request message: the two share every field but `stream_options`."""


ResponseRequest = responses_pb2.CreateResponseRequest | responses_pb2.StreamResponseRequest
"""Either Responses API request message: the two share every field but `stream_options`."""


def _chat_request(message_type: type[M], data: Any, stream: bool) -> M:
    if type(data) is dict and "stream" in data:
        if data["stream"] not in (stream, None):
            other = "stream_chat_request_from_json" if data["stream"] else "chat_request_from_json"
            raise TranslationError(f'"stream": {json.dumps(data["stream"])} needs {other}')
        data = {k: v for k, v in data.items() if k != "stream"}
    return from_json(message_type, data)


def chat_request_from_json(data: Any) -> chat_pb2.CreateChatCompletionRequest:
    """An OpenAI `POST /chat/completions` body as the request of CreateChatCompletion.

    `"stream": false` is dropped (the RPC decides); `"stream": true` is a TranslationError.
    """
    return _chat_request(chat_pb2.CreateChatCompletionRequest, data, stream=False)


def stream_chat_request_from_json(data: Any) -> chat_pb2.StreamChatCompletionRequest:
    """An OpenAI chat body as the request of StreamChatCompletion; `"stream": true` is
    dropped (the RPC streams), `"stream": false` is a TranslationError."""
    return _chat_request(chat_pb2.StreamChatCompletionRequest, data, stream=True)


def embeddings_request_from_json(data: Any) -> embeddings_pb2.CreateEmbeddingsRequest:
    """An OpenAI `POST /embeddings` body as the request of CreateEmbeddings."""
    return from_json(embeddings_pb2.CreateEmbeddingsRequest, data)


def request_body(
    request: ChatRequest | embeddings_pb2.CreateEmbeddingsRequest | ResponseRequest,
) -> dict[str, Any]:
    """The JSON body the bridge sends upstream for `request`: `to_json`, with `stream` set by
    the RPC (true for StreamChatCompletionRequest and StreamResponseRequest, absent
    otherwise) whatever extra_fields says, so a stray key cannot turn a unary call into a
    stream or the reverse, and with the `type` each set oneof member implies where the
    message leaves it out (a content part with only `image_url` is sent as
    `{"type": "image_url", ...}`, as the API requires)."""
    body = request_json(request)
    if isinstance(
        request, chat_pb2.StreamChatCompletionRequest | responses_pb2.StreamResponseRequest
    ):
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def _response_request(message_type: type[M], data: Any, stream: bool) -> M:
    if type(data) is dict and data.get("stream") not in (stream, None):
        other = (
            "stream_response_request_from_json" if data["stream"] else "response_request_from_json"
        )
        raise TranslationError(f'"stream": {json.dumps(data["stream"])} needs {other}')
    if type(data) is dict and "stream" in data:
        data = {k: v for k, v in data.items() if k != "stream"}
    return from_json(message_type, data)


def response_request_from_json(data: Any) -> responses_pb2.CreateResponseRequest:
    """An OpenAI `POST /responses` body as the request of CreateResponse; `"stream": false`
    is dropped, `"stream": true` is a TranslationError (use the stream variant)."""
    return _response_request(responses_pb2.CreateResponseRequest, data, stream=False)


def stream_response_request_from_json(data: Any) -> responses_pb2.StreamResponseRequest:
    """An OpenAI `POST /responses` body as the request of StreamResponse; `"stream": true`
    is dropped, `"stream": false` is a TranslationError."""
    return _response_request(responses_pb2.StreamResponseRequest, data, stream=True)


def response_from_json(data: Any) -> responses_pb2.CreateResponseResponse:
    """A `response` object (the unary Responses API answer)."""
    return from_json(responses_pb2.CreateResponseResponse, data)


def response_event_from_json(data: Any) -> responses_pb2.StreamResponseResponse:
    """One Responses API stream event (the JSON of one server-sent event), by its `type`."""
    return from_json(responses_pb2.StreamResponseResponse, data)


def chat_completion_from_json(data: Any) -> chat_pb2.CreateChatCompletionResponse:
    """A `chat.completion` object (the unary chat response)."""
    return from_json(chat_pb2.CreateChatCompletionResponse, data)


def chat_chunk_from_json(data: Any) -> chat_pb2.StreamChatCompletionResponse:
    """One `chat.completion.chunk` (the JSON of one server-sent event of a chat stream)."""
    return from_json(chat_pb2.StreamChatCompletionResponse, data)


def embeddings_from_json(data: Any) -> embeddings_pb2.CreateEmbeddingsResponse:
    """The `POST /embeddings` response (`{"object": "list", "data": [...]}`)."""
    return from_json(embeddings_pb2.CreateEmbeddingsResponse, data)


def model_list_from_json(data: Any) -> models_pb2.ListModelsResponse:
    """The `GET /models` response."""
    return from_json(models_pb2.ListModelsResponse, data)


def model_from_json(data: Any) -> models_pb2.Model:
    """One model object (`GET /models/{model}`, or an item of the list)."""
    return from_json(models_pb2.Model, data)
