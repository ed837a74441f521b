"""`make interop`: the bridge in front of real OpenAI-compatible servers, compared with them.

Starts on loopback (ports chosen by the OS):

* the LiteLLM proxy (`litellm[proxy]`, from .venv-interop) with `mock_response` models, and
* Prism (`@stoplight/prism-cli`, from build/interop/node_modules) serving the vendored OpenAI
  spec in static mode (no `-d`: its answers are the spec's examples, the same every call),

then a real bridge in front of each. Every RPC is sent twice: once to the server's REST API
directly (httpx) and once through the bridge (a grpc.aio channel). The bridge's answer,
converted back to JSON (aigateway_json.to_json), must equal the server's own JSON except
for the keys that legitimately differ per call (`id`, `created`); streamed chunks one by one.
When the server answers with an error, the bridge's status must carry the code DESIGN.md maps
the HTTP status to, and the server's message. Prints a table; exits 1 on any mismatch.

Not part of `make test`: it installs a lot (LiteLLM imports for ~15 s before it listens).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from aigateway.v1 import models_pb2
from aigateway_json import (
    chat_request_from_json,
    embeddings_request_from_json,
    stream_chat_request_from_json,
    to_json,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from bridge.config import Config
from bridge.server import assembly as server
from tests.conftest import Stubs, stubs_for

ROOT = Path(__file__).resolve().parents[2]
VOLATILE = frozenset({"id", "created"})
"""Keys whose values differ between two calls of the same request (a fresh id, a timestamp)."""
NOTE = "note: "
"""A difference that is none in JSON's number model, reported but not a mismatch."""
START_LIMIT = 240.0
CALL_LIMIT = 60.0

# DESIGN.md's error mapping, for the statuses these servers answer with.
HTTP_TO_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.UNAVAILABLE,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

LITELLM_KEY = "sk-interop-master"
LITELLM_CONFIG = textwrap.dedent(
    """\
    model_list:
      - model_name: mock-chat
        litellm_params:
          model: openai/gpt-4o-mini
          api_key: sk-not-used
          mock_response: "Hello from the LiteLLM mock"
      - model_name: mock-embedding
        litellm_params:
          model: openai/text-embedding-3-small
          api_key: sk-not-used
          mock_response: [0.25, -0.5, 0.125]
      - model_name: mock-rate-limited
        litellm_params:
          model: openai/gpt-4o-mini
          api_key: sk-not-used
          mock_response: "litellm.RateLimitError"
    router_settings:
      num_retries: 0
    general_settings:
      master_key: {key}
    litellm_settings:
      telemetry: false
      num_retries: 0
    """
)


# ------------------------------------------------------------------------------ comparing


def diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Differences between the server's JSON and the bridge's, `VOLATILE` keys left out.

    Numbers compare as JSON numbers: floats at float32 precision (the precision of the
    embedding vectors the protos carry), and an integer that comes back as the same float
    (`0` as `0.0`, which a field the protos type as `double` does) is a note, not a
    mismatch. Integers in free-form JSON must stay integers; tests/test_fidelity_bridge.py
    holds the bridge to that exactly.
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            if key in VOLATILE and path.count(".") <= 1:
                continue
            if key not in actual:
                out.append(f"{path}.{key}: missing from the bridge's answer")
            elif key not in expected:
                out.append(f"{path}.{key}: added by the bridge ({actual[key]!r})")
            else:
                out += diff(expected[key], actual[key], f"{path}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items, the bridge has {len(actual)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in diff(e, a, f"{path}[{i}]")
        ]
    if isinstance(expected, bool) or isinstance(actual, bool):
        return [] if expected is actual else [f"{path}: {expected!r} != {actual!r}"]
    if isinstance(expected, int) and isinstance(actual, int):
        return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        if isinstance(expected, int) and not isinstance(actual, int) and expected == actual:
            return [f"{NOTE}{path}: {expected!r} came back as {actual!r}"]
        close = math.isclose(float(expected), float(actual), rel_tol=1e-6, abs_tol=1e-30)
        return [] if close else [f"{path}: {expected!r} != {actual!r}"]
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


@dataclass
class Row:
    server: str
    rpc: str
    case: str
    direct: str
    bridge: str
    findings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f for f in self.findings if not f.startswith(NOTE)]

    @property
    def notes(self) -> list[str]:
        return [f for f in self.findings if f.startswith(NOTE)]

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------------------ calling


@dataclass
class Direct:
    """The server's own answer: status, JSON (or SSE events), headers."""

    status: int
    data: Any
    events: list[Any] | None = None

    @property
    def summary(self) -> str:
        if self.events is not None:
            return f"{self.status} {len(self.events)} events"
        return str(self.status)


async def rest(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> Direct:
    if body is not None and body.get("stream"):
        async with client.stream(
            method, path, json=body, headers={"accept": "text/event-stream"}
        ) as response:
            if response.status_code != 200:
                raw = await response.aread()
                return Direct(response.status_code, _json_or_text(raw))
            events: list[Any] = []
            data_lines: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data_lines.append(line[5:].removeprefix(" "))
                elif not line and data_lines:
                    data = "\n".join(data_lines)
                    data_lines = []
                    if data.strip() == "[DONE]":
                        break
                    events.append(json.loads(data))
            return Direct(200, None, events)
    response = await client.request(method, path, json=body)
    return Direct(response.status_code, _json_or_text(response.content))


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _upstream_message(data: Any) -> str | None:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail", "title"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return None


@dataclass
class Bridged:
    code: grpc.StatusCode
    messages: list[Message]
    message: str = ""
    reason: str = ""

    @property
    def summary(self) -> str:
        if self.code is grpc.StatusCode.OK:
            return f"OK {len(self.messages)} msg"
        return f"{self.code.name} {self.reason}"


async def through_bridge(call: Callable[[], Any], streamed: bool) -> Bridged:
    messages: list[Message] = []
    try:
        if streamed:
            async for chunk in call():
                messages.append(chunk)
        else:
            messages.append(await call())
    except grpc.aio.AioRpcError as error:
        reason = ""
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                for detail in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        reason = str(info.reason)
        return Bridged(error.code(), messages, error.details() or "", reason)
    return Bridged(grpc.StatusCode.OK, messages)


@dataclass(frozen=True)
class Check:
    """One request, sent directly and through the bridge."""

    rpc: str
    case: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    model: str = ""


def _bridge_call(stubs: Stubs, check: Check) -> Callable[[], Any]:
    limit = CALL_LIMIT
    if check.rpc == "ListModels":
        return lambda: stubs.models.ListModels(models_pb2.ListModelsRequest(), timeout=limit)
    if check.rpc == "RetrieveModel":
        request = models_pb2.RetrieveModelRequest(model=check.model)
        return lambda: stubs.models.RetrieveModel(request, timeout=limit)
    assert check.body is not None
    if check.rpc == "CreateEmbeddings":
        emb = embeddings_request_from_json(check.body)
        return lambda: stubs.embeddings.CreateEmbeddings(emb, timeout=limit)
    if check.rpc == "StreamChatCompletion":
        body = {k: v for k, v in check.body.items() if k != "stream"}
        streamed = stream_chat_request_from_json(body)
        return lambda: stubs.chat.StreamChatCompletion(streamed, timeout=limit)
    unary = chat_request_from_json(check.body)
    return lambda: stubs.chat.CreateChatCompletion(unary, timeout=limit)


def compare(check: Check, direct: Direct, bridged: Bridged) -> list[str]:
    if direct.status >= 400:
        want = HTTP_TO_CODE.get(
            direct.status,
            grpc.StatusCode.INVALID_ARGUMENT if direct.status < 500 else grpc.StatusCode.INTERNAL,
        )
        problems = []
        if bridged.code is not want:
            problems.append(
                f"code {bridged.code.name}, DESIGN.md maps {direct.status} to {want.name}"
            )
        text = _upstream_message(direct.data)
        if text and text[:60] not in bridged.message:
            problems.append(f"the server's message {text[:60]!r} is not in {bridged.message!r}")
        return problems
    if bridged.code is not grpc.StatusCode.OK:
        return [
            f"the server answered {direct.status}, the bridge {bridged.code.name}: "
            f"{bridged.message}"
        ]
    if direct.events is not None:
        got = [to_json(m) for m in bridged.messages]
        if len(got) != len(direct.events):
            return [f"{len(direct.events)} events, the bridge sent {len(got)} messages"]
        return [
            d
            for i, (e, g) in enumerate(zip(direct.events, got, strict=True))
            for d in diff(e, g, f"chunk[{i}]")
        ]
    answer = bridged.messages[0]
    if isinstance(answer, models_pb2.RetrieveModelResponse):
        answer = answer.model
    return diff(direct.data, to_json(answer))


async def run_checks(
    name: str, base_url: str, key: str, checks: list[Check], rest_prefix: str
) -> list[Row]:
    config = Config.load(
        environ={},
        listen="127.0.0.1:0",
        upstream_url=base_url,
        api_key=key,
        initial_backoff=0.05,
        max_backoff=0.2,
    )
    running = await server.start(config)
    rows: list[Row] = []
    try:
        headers = {"authorization": f"Bearer {key}"}
        async with (
            httpx.AsyncClient(base_url=base_url, headers=headers, timeout=CALL_LIMIT) as client,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            stubs = stubs_for(channel)
            for check in checks:
                direct = await rest(client, check.method, rest_prefix + check.path, check.body)
                streamed = check.rpc == "StreamChatCompletion"
                bridged = await through_bridge(_bridge_call(stubs, check), streamed)
                problems = compare(check, direct, bridged)
                rows.append(
                    Row(name, check.rpc, check.case, direct.summary, bridged.summary, problems)
                )
    finally:
        await running.stop(0)
    return rows


# ------------------------------------------------------------------------------ servers


def free_port() -> int:
    """A loopback port the OS has just handed out (the servers take no already-bound socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def process(
    argv: list[str], ready_url: str, headers: dict[str, str], log: Path, env: dict[str, str]
) -> AsyncIterator[None]:
    """A server process, ready once `ready_url` answers 200; ended (by its id) on exit."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + START_LIMIT
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(ready_url, headers=headers)).status_code == 200:
                        break
                if loop.time() > end:
                    raise RuntimeError(f"{argv[0]} not ready after {START_LIMIT:.0f} s; see {log}")
                await asyncio.sleep(0.5)
        yield
    finally:
        # Its own session: the server and any workers it started, by its process group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _loopback_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hello interop"}]}


def litellm_checks() -> list[Check]:
    return [
        Check("ListModels", "catalogue", "GET", "/models"),
        Check("RetrieveModel", "chat model", "GET", "/models/mock-chat", model="mock-chat"),
        Check("CreateChatCompletion", "mock_response", "POST", "/chat/completions", CHAT),
        Check(
            "StreamChatCompletion",
            "mock_response",
            "POST",
            "/chat/completions",
            {**CHAT, "stream": True},
        ),
        Check(
            "CreateEmbeddings",
            "mock_response",
            "POST",
            "/embeddings",
            {"model": "mock-embedding", "input": "hello interop"},
        ),
        Check(
            "CreateChatCompletion",
            "unknown model (400)",
            "POST",
            "/chat/completions",
            {**CHAT, "model": "no-such-model"},
        ),
        Check(
            "StreamChatCompletion",
            "unknown model (400)",
            "POST",
            "/chat/completions",
            {**CHAT, "model": "no-such-model", "stream": True},
        ),
        Check(
            "CreateChatCompletion",
            "mocked rate limit",
            "POST",
            "/chat/completions",
            {**CHAT, "model": "mock-rate-limited"},
        ),
    ]


def prism_checks() -> list[Check]:
    chat = {**CHAT, "model": "gpt-4o-mini"}
    return [
        Check("ListModels", "spec example", "GET", "/models"),
        Check("RetrieveModel", "spec example", "GET", "/models/gpt-4o-mini", model="gpt-4o-mini"),
        Check("CreateChatCompletion", "spec example", "POST", "/chat/completions", chat),
        Check(
            "StreamChatCompletion",
            "no SSE in static mode (500)",
            "POST",
            "/chat/completions",
            {**chat, "stream": True},
        ),
        Check(
            "CreateEmbeddings",
            "spec example",
            "POST",
            "/embeddings",
            {"model": "text-embedding-3-small", "input": "hello interop"},
        ),
    ]


async def with_litellm(args: argparse.Namespace, work: Path) -> list[Row]:
    config = work / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(key=LITELLM_KEY))
    port = free_port()
    env = _loopback_env()
    # Offline: the model cost map ships with the package; no telemetry.
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
    argv = [args.litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    ready = f"{base}/health/liveliness"
    async with process(argv, ready, {}, work / "litellm.log", env):
        return await run_checks("litellm", f"{base}/v1", LITELLM_KEY, litellm_checks(), "")


async def with_prism(args: argparse.Namespace, work: Path) -> list[Row]:
    port = free_port()
    # Static mode (no -d): every answer is the spec's example, the same for both calls.
    argv = [args.prism, "mock", "-h", "127.0.0.1", "-p", str(port), str(args.spec)]
    base = f"http://127.0.0.1:{port}"
    key = "sk-interop-prism"
    auth = {"authorization": f"Bearer {key}"}
    async with process(argv, f"{base}/models", auth, work / "prism.log", _loopback_env()):
        return await run_checks("prism", base, key, prism_checks(), "")


def _result(row: Row) -> str:
    if not row.ok:
        return "MISMATCH"
    return f"ok ({len(row.notes)} notes)" if row.notes else "ok"


def table(rows: list[Row]) -> str:
    head = ("server", "rpc", "case", "server said", "bridge said", "result")
    cells = [head] + [(r.server, r.rpc, r.case, r.direct, r.bridge, _result(r)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for row in rows:
        shown = row.problems + row.notes
        for finding in shown[:8]:
            lines.append(f"  {row.server} {row.rpc} {row.case}: {finding}")
        if len(shown) > 8:
            lines.append(f"  ... and {len(shown) - 8} more")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="interop-") as tmp:
        work = Path(args.logs) if args.logs else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runners: list[tuple[str, Callable[[argparse.Namespace, Path], Awaitable[list[Row]]]]] = [
            ("litellm", with_litellm),
            ("prism", with_prism),
        ]
        failed_to_start: list[str] = []
        for name, runner in runners:
            if name not in args.only:
                continue
            try:
                rows += await runner(args, work)
            except RuntimeError as exc:
                failed_to_start.append(f"{name}: {exc}")
    print(table(rows))
    for failure in failed_to_start:
        print(f"could not start {failure}", file=sys.stderr)
    mismatches = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - mismatches} matched, {mismatches} mismatched")
    return 1 if mismatches or failed_to_start else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litellm", default=str(ROOT / ".venv-interop/bin/litellm"))
    parser.add_argument("--prism", default=str(ROOT / "build/interop/node_modules/.bin/prism"))
    parser.add_argument("--spec", default=str(ROOT / "third_party/openai-openapi/openapi.yaml"))
    parser.add_argument("--only", nargs="+", default=["litellm", "prism"])
    parser.add_argument("--logs", help="keep the servers' logs in this directory")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
