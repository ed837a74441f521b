"""The development upstream's Responses API (`POST /v1/responses`), whole or streamed.

Deterministic, like the chat answers in dev.upstream.api: the reply echoes the last user text.
A request with tools calls the first function tool when the user mentions the weather or
`tool_choice` forces a call; `reasoning` adds a reasoning item with a summary (and
`encrypted_content` when `include` asks for it); `max_output_tokens` below the reply's length
gives an `incomplete` response; a user text with the word `fail` gives a failed response (a
`response.failed` event after two text deltas when streamed). Streams name each event by its
type and end after the terminal event, without `[DONE]`, as OpenAI's do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dev.upstream.replies import CREATED, FullReply, Json, Reply, StreamReply, encode_json
from dev.upstream.validation import BadRequest

__all__ = ["FAILURE_MESSAGE", "TOOL_ARGUMENTS", "BadRequest", "responses"]

TOOL_ARGUMENTS = '{"city":"Paris"}'
FAILURE_MESSAGE = "The model failed while generating the response (development upstream)."
_FRAGMENT = 4


@dataclass(frozen=True)
class _Plan:
    """A validated request and the reply it determines."""

    body: Json
    model: str
    words: list[str]
    count: int
    tool: str | None
    reasoning: bool
    encrypted: bool
    fail: bool
    response_id: str
    input_tokens: int

    @property
    def incomplete(self) -> bool:
        return self.count < len(self.words) and self.tool is None

    def tokens(self) -> list[str]:
        kept = self.words[: self.count]
        return [w if i == len(kept) - 1 else w + " " for i, w in enumerate(kept)]

    def item_id(self, kind: str) -> str:
        return f"{kind}_{self.response_id[5:29]}"


def responses(body: Json, stream_interval: float) -> Reply:
    plan = _parse(body)
    if body.get("stream") is True:
        return StreamReply(plan.response_id, plan.model, _events(plan), stream_interval, named=True)
    return FullReply(200, encode_json(_response(plan, _final_status(plan), _output(plan))))


def _parse(body: Json) -> _Plan:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    given = body.get("input")
    if not isinstance(given, str | list) or not given:
        raise BadRequest("'input' must be a non-empty string or array", "input")
    text = given if isinstance(given, str) else _last_user_text(given)
    words = ("Echo: " + text).split()
    limit = body.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise BadRequest("'max_output_tokens' must be a positive integer", "max_output_tokens")
    include = body.get("include")
    digest = hashlib.sha256(encode_json([model, given, body.get("tools")])).hexdigest()
    return _Plan(
        body=body,
        model=model,
        words=words,
        count=min(len(words), limit or len(words)),
        tool=_tool_name(body, text),
        reasoning=isinstance(body.get("reasoning"), dict),
        encrypted=isinstance(include, list) and "reasoning.encrypted_content" in include,
        fail="fail" in text.lower().split(),
        response_id="resp_" + digest[:48],
        input_tokens=max(1, len(text.split())),
    )


def _last_user_text(items: list[Any]) -> str:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = (p.get("text") for p in content if isinstance(p, dict))
                return "".join(t for t in texts if isinstance(t, str))
    return ""


def _tool_name(body: Json, text: str) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    functions = [t for t in tools or [] if isinstance(t, dict) and t.get("type") == "function"]
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    if choice != "required" and "weather" not in text.lower():
        return None
    name = functions[0].get("name")
    return name if isinstance(name, str) else "tool"


def _final_status(plan: _Plan) -> str:
    return "failed" if plan.fail else "incomplete" if plan.incomplete else "completed"


def _usage(plan: _Plan) -> Json:
    reasoning = 8 if plan.reasoning else 0
    output = (len(_fragments()) if plan.tool else plan.count) + reasoning
    return {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": plan.input_tokens + output,
    }


def _response(plan: _Plan, status: str, output: list[Json]) -> Json:
    body = plan.body
    done = status in ("completed", "incomplete", "failed")
    return {
        "id": plan.response_id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": {"code": "server_error", "message": FAILURE_MESSAGE}
        if status == "failed"
        else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text", {"format": {"type": "text"}}),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _usage(plan) if done and status != "failed" else None,
        "metadata": body.get("metadata", {}),
    }


def _fragments() -> list[str]:
    return [TOOL_ARGUMENTS[i : i + _FRAGMENT] for i in range(0, len(TOOL_ARGUMENTS), _FRAGMENT)]


def _summary(plan: _Plan) -> str:
    return f"Thinking about how to answer {len(plan.words) - 1} words."


def _reasoning_item(plan: _Plan, done: bool) -> Json:
    item: Json = {
        "id": plan.item_id("rs"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": _summary(plan)}] if done else [],
    }
    if plan.encrypted:
        item["encrypted_content"] = "gAAAA" + plan.response_id[5:37]
    return item


def _message_item(plan: _Plan, text: str | None) -> Json:
    content = [] if text is None else [_text_part(text)]
    status = "in_progress" if text is None else "incomplete" if plan.incomplete else "completed"
    return {
        "id": plan.item_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(plan: _Plan, arguments: str, status: str) -> Json:
    return {
        "id": plan.item_id("fc"),
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": plan.item_id("call"),
        "name": plan.tool,
    }


def _output(plan: _Plan) -> list[Json]:
    items = [_reasoning_item(plan, done=True)] if plan.reasoning else []
    if plan.tool:
        items.append(_call_item(plan, TOOL_ARGUMENTS, "completed"))
    elif not plan.fail:
        items.append(_message_item(plan, "".join(plan.tokens())))
    return items


def _events(plan: _Plan) -> Iterator[Json]:
    """The stream: created, in_progress, each item's events, then the terminal event."""
    sequence = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> Json:
        return {"type": kind, "sequence_number": next(sequence), **fields}

    yield event("response.created", response=_response(plan, "in_progress", []))
    yield event("response.in_progress", response=_response(plan, "in_progress", []))
    output: list[Json] = []
    if plan.reasoning:
        index, item_id, text = len(output), plan.item_id("rs"), _summary(plan)
        where = {"item_id": item_id, "output_index": index, "summary_index": 0}
        yield event(
            "response.output_item.added", output_index=index, item=_reasoning_item(plan, False)
        )
        yield event("response.reasoning_summary_part.added", **where, part=_summary_part(""))
        yield event("response.reasoning_summary_text.delta", **where, delta=text)
        yield event("response.reasoning_summary_text.done", **where, text=text)
        yield event("response.reasoning_summary_part.done", **where, part=_summary_part(text))
        output.append(_reasoning_item(plan, True))
        yield event("response.output_item.done", output_index=index, item=output[-1])
    index = len(output)
    if plan.tool:
        where = {"item_id": plan.item_id("fc"), "output_index": index}
        yield event(
            "response.output_item.added",
            output_index=index,
            item=_call_item(plan, "", "in_progress"),
        )
        for piece in _fragments():
            yield event("response.function_call_arguments.delta", **where, delta=piece)
        yield event(
            "response.function_call_arguments.done",
            **where,
            name=plan.tool,
            arguments=TOOL_ARGUMENTS,
        )
        output.append(_call_item(plan, TOOL_ARGUMENTS, "completed"))
        yield event("response.output_item.done", output_index=index, item=output[-1])
    else:
        where = {"item_id": plan.item_id("msg"), "output_index": index, "content_index": 0}
        yield event(
            "response.output_item.added", output_index=index, item=_message_item(plan, None)
        )
        yield event("response.content_part.added", **where, part=_text_part(""))
        tokens = plan.tokens()
        for token in tokens[:2] if plan.fail else tokens:
            yield event("response.output_text.delta", **where, delta=token, logprobs=[])
        if plan.fail:
            yield event("response.failed", response=_response(plan, "failed", output))
            return
        text = "".join(plan.tokens())
        yield event("response.output_text.done", **where, text=text, logprobs=[])
        yield event("response.content_part.done", **where, part=_text_part(text))
        output.append(_message_item(plan, text))
        yield event("response.output_item.done", output_index=index, item=output[-1])
    status = _final_status(plan)
    yield event(f"response.{status}", response=_response(plan, status, output))


def _summary_part(text: str) -> Json:
    return {"type": "summary_text", "text": text}
