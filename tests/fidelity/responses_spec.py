"""The spec's Responses API examples as test data (see tests/fidelity/spec.py for the rest).

`response_examples()` gives every response object and stream event the spec shows for
`/responses` (the create examples, streamed or not, retrieval and cancellation, and the
example of each stream event schema); `request_examples()` the create request bodies.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.fidelity import spec

Json = Any

EVENT_SCHEMA = re.compile(r"^Response\w*Event$")


def _sse_events(text: str) -> list[Json]:
    """A streaming example: `event:` / `data:` blocks; the JSON of each `data:` line."""
    return [
        spec._lenient_json(line.removeprefix("data:").strip())
        for line in text.splitlines()
        if line.startswith("data:")
    ]


def _repaired(text: str) -> str:
    """One event example lacks a comma between two members (a string value ending a line,
    a key starting the next): JSON never allows that, so the comma is put back."""
    return re.sub(r'"\n(\s*")', r'",\n\1', text)


def response_examples() -> Iterator[tuple[str, str, Json]]:
    """(id, kind, JSON): kind `response` (a response object) or `event` (a stream event)."""
    doc = spec._load()
    paths = doc["paths"]
    for example in paths["/responses"]["post"]["x-oaiMeta"]["examples"]:
        title = example["title"]
        text = example["response"]
        if text.lstrip().startswith("event:"):
            for i, event in enumerate(_sse_events(text)):
                yield f"responses-post-{title}-{i}", "event", event
        else:
            yield f"responses-post-{title}", "response", spec._lenient_json(text)
    for path, method in (
        ("/responses/{response_id}", "get"),
        ("/responses/{response_id}/cancel", "post"),
    ):
        text = paths[path][method]["x-oaiMeta"]["examples"]["response"]
        yield f"{path}-{method}", "response", spec._lenient_json(text)
    for name, schema in doc["components"]["schemas"].items():
        meta = schema.get("x-oaiMeta") if isinstance(schema, dict) else None
        if EVENT_SCHEMA.match(name) and meta and "example" in meta:
            yield name, "event", spec._lenient_json(_repaired(meta["example"]))


def request_examples() -> Iterator[tuple[str, Json]]:
    """(id, JSON body) of the spec's curl examples of `POST /responses`."""
    for example in spec._load()["paths"]["/responses"]["post"]["x-oaiMeta"]["examples"]:
        curl = example["request"]["curl"]
        body = re.search(r"-d '(.*)'", curl, re.DOTALL)
        assert body is not None, f"no JSON body in the {example['title']} curl example"
        yield example["title"], spec._lenient_json(body.group(1))


def _any_of(node: Any) -> Any:
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    if not isinstance(node, dict):
        return node
    return {("anyOf" if k == "oneOf" else k): _any_of(v) for k, v in node.items()}


@functools.cache
def _validator() -> Draft202012Validator:
    """A validator of `CreateResponse` that reads the spec's `oneOf`s as `anyOf`s.

    The spec's input item union is not exclusive: `{"role": "user", "content": [...]}` is
    both an EasyInputMessage and an InputMessage, so under `oneOf` even the spec's own
    examples are invalid. Which branch matches is the translation's business, not the
    validator's. The validator works on a copy: spec.document() is shared."""
    document = copy.deepcopy(_any_of(spec.document()))
    # `detail` of an input image "defaults to `auto`", yet the schema requires it and the
    # spec's own Image input example leaves it out: the prose and the example win.
    image = document["components"]["schemas"]["InputImageContent"]
    image["required"] = [r for r in image["required"] if r != "detail"]
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(spec.SPEC_URI, resource)
    return Draft202012Validator(
        {"$ref": f"{spec.SPEC_URI}#/components/schemas/CreateResponse"}, registry=registry
    )


def request_errors(instance: Json) -> list[str]:
    """Readable errors of a `POST /responses` body; empty when it is valid."""
    errors = sorted(_validator().iter_errors(instance), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors]


def request_error_places(instance: Json) -> list[tuple[str, str]]:
    """Where a body breaks the schema and which keyword it breaks, without the message (which
    quotes the instance, whose key order a Struct does not keep)."""
    errors = _validator().iter_errors(instance)
    return sorted({("/".join(map(str, e.path)), str(e.validator)) for e in errors})
