"""The conformance corpus: recorded answers of real OpenAI-compatible servers, replayed.

Each case in tests/conformance/cases.toml names a raw HTTP/1.1 response (OpenAI, the Vercel
AI Gateway, vLLM, Ollama, llama.cpp, LiteLLM, TGI, Azure OpenAI, OpenRouter, and one per
fault kind of issue 11) and what a caller of the bridge must see when the upstream answers
with exactly those bytes: the status, ErrorInfo reason, details, messages, metadata, and how
many requests reached the upstream. The bridge is the real one, called through a real
channel; the upstream is a loopback server writing the recorded bytes (tests/conformance/
replay.py).
"""

from __future__ import annotations

import gzip
import json
import tomllib
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aigateway.v1 import chat_pb2, embeddings_pb2, models_pb2
from aigateway_json import to_json
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from bridge.config import Config
from bridge.server import assembly as server
from tests import richstatus
from tests.conformance.replay import Recorded, Replay, parse_response
from tests.conftest import DEV_KEY, Stubs, stubs_for
from tests.fidelity import spec
from tests.richstatus import RichStatus

CORPUS = Path(__file__).parent / "conformance" / "cases.toml"
CALL_LIMIT = 30.0
"""A bound on a hang (the caller's deadline), not a timing assertion."""

RPCS = (
    "CreateChatCompletion",
    "StreamChatCompletion",
    "CreateEmbeddings",
    "ListModels",
    "RetrieveModel",
)


@dataclass(frozen=True)
class Case:
    """One [[case]] of cases.toml (its header comment documents every key)."""

    id: str
    rpc: str
    code: str
    requests: int
    model: str = "gpt-4o-mini"
    path: str | None = None
    responses: tuple[str, ...] = ()
    reason: str | None = None
    messages: int = 0
    text: str | None = None
    first_role: str | None = None
    fidelity: bool | None = None
    says: tuple[str, ...] = ()
    never_says: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    no_metadata: tuple[str, ...] = ()
    bad_request: tuple[str, ...] = ()
    retry_info: bool | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Case:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        assert not unknown, f"{data.get('id')}: unknown keys {sorted(unknown)}"
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        case = cls(**values)
        assert case.rpc in RPCS, f"{case.id}: unknown rpc {case.rpc}"
        assert hasattr(grpc.StatusCode, case.code), f"{case.id}: unknown code {case.code}"
        return case

    @property
    def files(self) -> tuple[str, ...]:
        return self.responses or (f"{self.id}.http",)

    @property
    def status(self) -> grpc.StatusCode:
        code: grpc.StatusCode = getattr(grpc.StatusCode, self.code)
        return code

    @property
    def streamed(self) -> bool:
        return self.rpc == "StreamChatCompletion"

    @property
    def target(self) -> str:
        """The request target the upstream must see."""
        if self.path is not None:
            return self.path
        return {
            "CreateChatCompletion": "/v1/chat/completions",
            "StreamChatCompletion": "/v1/chat/completions",
            "CreateEmbeddings": "/v1/embeddings",
            "ListModels": "/v1/models",
            "RetrieveModel": f"/v1/models/{self.model}",
        }[self.rpc]

    @property
    def method(self) -> str:
        return "GET" if self.rpc in ("ListModels", "RetrieveModel") else "POST"


def load_cases() -> list[Case]:
    with CORPUS.open("rb") as f:
        return [Case.of(item) for item in tomllib.load(f)["case"]]


CASES = load_cases()


@dataclass
class Seen:
    """Everything the caller saw of one call."""

    code: grpc.StatusCode
    received: list[Message]
    initial: dict[str, str]
    trailing: dict[str, str]
    rich: RichStatus | None

    @property
    def status(self) -> RichStatus:
        assert self.rich is not None, "the call succeeded"
        return self.rich


def _metadata(pairs: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs or ():
        out[key] = value.decode("latin-1") if isinstance(value, bytes) else value
    return out


async def _call(stubs: Stubs, case: Case) -> Seen:
    """One call of the case's RPC, read to its end, however it ends."""
    user = [chat_pb2.ChatMessage(role="user", content_text="hello conformance")]
    received: list[Message] = []
    call: Any
    try:
        if case.rpc == "StreamChatCompletion":
            request = chat_pb2.StreamChatCompletionRequest(model=case.model, messages=user)
            call = stubs.chat.StreamChatCompletion(request, timeout=CALL_LIMIT)
            async for chunk in call:
                received.append(chunk)
        else:
            if case.rpc == "CreateChatCompletion":
                unary = chat_pb2.CreateChatCompletionRequest(model=case.model, messages=user)
                call = stubs.chat.CreateChatCompletion(unary, timeout=CALL_LIMIT)
            elif case.rpc == "CreateEmbeddings":
                emb = embeddings_pb2.CreateEmbeddingsRequest(model=case.model, input_text="hi")
                call = stubs.embeddings.CreateEmbeddings(emb, timeout=CALL_LIMIT)
            elif case.rpc == "ListModels":
                call = stubs.models.ListModels(models_pb2.ListModelsRequest(), timeout=CALL_LIMIT)
            else:
                get = models_pb2.RetrieveModelRequest(model=case.model)
                call = stubs.models.RetrieveModel(get, timeout=CALL_LIMIT)
            received.append(await call)
    except grpc.aio.AioRpcError as error:
        rich = richstatus.of_error(error)  # checks the contract every error status keeps
        initial = _metadata(error.initial_metadata())
        return Seen(error.code(), received, initial, _metadata(error.trailing_metadata()), rich)
    initial = _metadata(await call.initial_metadata())
    trailing = _metadata(await call.trailing_metadata())
    return Seen(grpc.StatusCode.OK, received, initial, trailing, None)


@pytest.fixture
async def replay(request: pytest.FixtureRequest) -> AsyncIterator[Replay]:
    case: Case = request.param
    async with Replay(case.files) as upstream:
        yield upstream


async def _run(case: Case, upstream: Replay) -> Seen:
    config = Config.load(
        environ={},
        listen="127.0.0.1:0",
        upstream_url=upstream.url,
        api_key=DEV_KEY,
        initial_backoff=0.01,
        max_backoff=0.05,
    )
    running = await server.start(config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            return await _call(stubs_for(channel), case)
    finally:
        await running.stop(0)


def _decoded_body(recorded: Recorded) -> Any:
    """The recorded body as JSON, content coding undone (what the bridge should have read)."""
    body = recorded.body
    coding = (recorded.header("content-encoding") or b"").strip().lower()
    if coding == b"gzip":
        body = gzip.decompress(body)
    elif coding == b"deflate":
        body = zlib.decompress(body)
    return json.loads(body)


def _text(case: Case, received: list[Message]) -> str:
    if not case.streamed:
        choices = to_json(received[0]).get("choices") or [{}]
        return str(choices[0].get("message", {}).get("content") or "")
    parts: list[str] = []
    for chunk in received:
        for choice in to_json(chunk).get("choices") or []:
            parts.append(str((choice.get("delta") or {}).get("content") or ""))
    return "".join(parts)


@pytest.mark.parametrize(
    ("case", "replay"), [pytest.param(c, c, id=c.id) for c in CASES], indirect=["replay"]
)
async def test_conformance(case: Case, replay: Replay) -> None:
    seen = await _run(case, replay)
    message = seen.rich.message if seen.rich else ""

    # What reached the upstream: how often, where, with which credential.
    assert len(replay.requests) == case.requests, (
        f"upstream saw {len(replay.requests)} requests, expected {case.requests} "
        f"(the call ended {seen.code.name}: {message!r})"
    )
    for sent in replay.requests:
        assert (sent.method, sent.target) == (case.method, case.target)
        assert sent.header("authorization") == f"Bearer {DEV_KEY}"

    # How the call ended, and what arrived before.
    assert seen.code is case.status, f"{seen.code.name} {message!r}, expected {case.code}"
    assert len(seen.received) == case.messages, f"{len(seen.received)} messages; {message!r}"
    if case.text is not None:
        assert _text(case, seen.received) == case.text
    if case.first_role is not None:
        first = to_json(seen.received[0])["choices"][0]
        assert first["delta"].get("role") == case.first_role

    fidelity = case.fidelity if case.fidelity is not None else not case.streamed
    if seen.code is grpc.StatusCode.OK and fidelity:
        # Nothing lost: the answer converts back to the JSON the upstream sent.
        answer = seen.received[0]
        if isinstance(answer, models_pb2.RetrieveModelResponse):
            answer = answer.model
        expected = _decoded_body(Recorded.load(case.files[-1]))
        assert spec.exact_diff(expected, to_json(answer)) == []

    # Returned headers: initial metadata on success, trailing metadata on an error.
    where = seen.initial if seen.code is grpc.StatusCode.OK else seen.trailing
    for key, value in case.metadata.items():
        assert where.get(key) == value, f"{key}: {where.get(key)!r}, expected {value!r}"
    for key in case.no_metadata:
        assert key not in seen.initial and key not in seen.trailing, key

    if seen.code is grpc.StatusCode.OK:
        return
    status = seen.status
    if case.reason is not None:
        assert status.reason == case.reason, status.info
    for text in case.says:
        assert text in status.message, status.message
    for text in case.never_says:
        assert text not in status.message, status.message
    if case.bad_request:
        fields = {name for name, _ in status.violations}
        assert set(case.bad_request) <= fields, status.violations
    if case.retry_info is not None:
        assert status.has(error_details_pb2.RetryInfo) is case.retry_info, status.details


def test_corpus_is_well_formed() -> None:
    """Every case names a parseable recording, and every recording has a case."""
    cases_dir = CORPUS.parent / "cases"
    named = {name for case in CASES for name in case.files}
    assert named == {path.name for path in cases_dir.glob("*.http")}
    assert len({case.id for case in CASES}) == len(CASES)
    for name in named:
        recorded = parse_response((cases_dir / name).read_bytes())
        assert 200 <= recorded.status < 600, name
    families = {case.id.split("-")[0] for case in CASES}
    assert families >= {
        "openai",
        "vercel",
        "vllm",
        "ollama",
        "llamacpp",
        "litellm",
        "tgi",
        "azure",
        "openrouter",
        "kind",
    }
