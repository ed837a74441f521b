"""The spec's Responses API examples as test data (see tests/fidelity/spec.py for the rest).

`response_examples()` gives every response object and stream event the spec shows for
`/responses` (the create examples, streamed or not, retrieval and cancellation, and the
example of each stream event schema); `request_examples()` the create request bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

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
