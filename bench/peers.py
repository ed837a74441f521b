"""`make bench-peers`: the bridge next to a peer a user could pick instead, the LiteLLM proxy.

Both sit in front of the same upstream (bench/upstream, canned answers): LiteLLM as an
OpenAI-compatible REST proxy (its `openai/` provider with `api_base` set to the upstream), the
bridge as gRPC. The same load client (bench/load.py) calls the upstream directly (httpx), the
LiteLLM proxy's REST API (httpx) and the bridge (grpc.aio); LiteLLM's `mock_response` model
(answers without any upstream) is measured too, as what LiteLLM costs by itself. Reports the
added latency p50/p99 at c=1 over direct, and throughput at c=32.

LiteLLM runs from its own venv (.venv-peers, `litellm[proxy]==1.106.12`, the newest whose
proxy extra installs from PyPI alone), offline: the model cost map that ships with it, no
telemetry. It imports for ~15 s before it listens. Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from run import BIN, RESULTS, ROOT, load, machine, process, source, start_bridge

LITELLM = ROOT / ".venv-peers" / "bin" / "litellm"
CONFIG = textwrap.dedent(
    """\
    model_list:
      - model_name: openai/gpt-4o-mini
        litellm_params:
          model: openai/gpt-4o-mini
          api_base: http://{upstream}/v1
          api_key: bench
      - model_name: mock-chat
        litellm_params:
          model: openai/gpt-4o-mini
          api_key: bench
          mock_response: "Hello from the LiteLLM mock"
    router_settings:
      num_retries: 0
    general_settings:
      # The load client's key ("Bearer bench"): checked on every call, as a deployment would,
      # though too weak for anything but a loopback benchmark.
      master_key: bench
      dangerously_permit_weak_or_unset_master_key: true
    litellm_settings:
      telemetry: false
      num_retries: 0
      drop_params: true
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def litellm(upstream: str, log: Path) -> Iterator[str]:
    import httpx

    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    config = work / "litellm.yaml"
    config.write_text(CONFIG.format(upstream=upstream))
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    args = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
        try:
            deadline = time.monotonic() + 240
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"litellm exited: see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health/liveliness").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"litellm did not start: see {log}")
                time.sleep(0.5)
            yield f"127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def mock_load(target: str, concurrency: int, opts: argparse.Namespace) -> dict[str, Any]:
    """bench/load.py's httpx unary client against LiteLLM's mock model."""
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; import load; "
        "load.CHAT_BODY['model'] = 'mock-chat'; load.main()"
    )
    args = [
        sys.executable,
        "-c",
        code,
        "load.py",
        "--path",
        "httpx",
        "--scenario",
        "unary",
        "--target",
        target,
        "-c",
        str(concurrency),
        "--warmup",
        str(opts.warmup),
        "--seconds",
        str(opts.seconds),
    ]
    out = subprocess.run(
        args, capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    opts = parser.parse_args()
    if not LITELLM.exists():
        print("missing .venv-peers/bin/litellm: run `make bench-peers`", file=sys.stderr)
        return 2
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    with (
        process([str(BIN / "upstream")], "listening on ", logs / "peers-upstream.log") as (
            _,
            up,
        ),
        litellm(up, logs / "peers-litellm.log") as (lite, _),
        start_bridge(up, logs / "peers-bridge.log") as (_, br),
    ):
        for round_no in range(1, opts.rounds + 1):
            for concurrency in (1, 32):
                for name, path, target in (
                    ("direct", "httpx", up),
                    ("litellm", "httpx", lite),
                    ("bridge", "grpc", br),
                ):
                    result = load(path, "unary", target, concurrency, opts)
                    runs.setdefault(f"{name}/c{concurrency}", []).append(result)
                    print(
                        f"round {round_no} c={concurrency} {name}: {result['rps']:.0f} "
                        f"req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms",
                        flush=True,
                    )
                result = mock_load(lite, concurrency, opts)
                runs.setdefault(f"litellm-mock/c{concurrency}", []).append(result)
                print(
                    f"round {round_no} c={concurrency} litellm mock_response: "
                    f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms",
                    flush=True,
                )

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    d50, d99 = med("direct/c1", "p50_ms"), med("direct/c1", "p99_ms")
    lines = [
        f"# Peers: the bridge next to the LiteLLM proxy, {time.strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {machine()}; {source()}. Median of {opts.rounds} rounds of "
        f"{opts.seconds:g} s; unary chat completions; every client its own process "
        "(bench/load.py: httpx for REST, grpc.aio for the bridge).",
        "",
        "| path | c=1 p50, ms | c=1 p99, ms | added p50 | added p99 | c=32 requests/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("direct", "upstream directly (httpx)"),
        ("litellm", "LiteLLM proxy -> upstream (REST)"),
        ("bridge", "bridge -> upstream (gRPC)"),
        ("litellm-mock", "LiteLLM mock_response (no upstream)"),
    ):
        p50, p99 = med(f"{name}/c1", "p50_ms"), med(f"{name}/c1", "p99_ms")
        lines.append(
            f"| {label} | {p50:.2f} | {p99:.2f} | {p50 - d50:+.2f} | {p99 - d99:+.2f} | "
            f"{med(f'{name}/c32', 'rps'):,.0f} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "peers.md").write_text(text)
    (RESULTS / "peers.json").write_text(json.dumps(runs, indent=1))
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
