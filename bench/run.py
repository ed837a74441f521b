"""`make bench`: the bridge next to direct REST and the openai SDK, measured in one run.

Starts the Go upstream (bench/upstream, canned answers from memory), the bridge as its own
process (`python -m bridge serve`), then one load-client process (bench/load.py, or ghz)
per measurement, on loopback. Every scenario runs for every path in each round, rounds
interleave the paths, and the report takes each value's median over the rounds, so the
ratios compare numbers measured side by side under the same background load.

Writes bench/results/latest.md, a timestamped copy, latest.json and latest.png, and prints
the table with PASS/FAIL per target.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = HERE / "bin"
RESULTS = HERE / "results"
DESCRIPTOR = ROOT / "build" / "aigateway.binpb"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_STREAMS = 1000
"""Idle streams held for the RSS target of the first benchmark issue (<= 300 MB)."""
MANY_IDLE_STREAMS = 10_000
"""Idle streams held for issue 16's scale target: held, with RSS per stream reported."""
KIB_PER_IDLE_STREAM = 64
"""The per-stream memory target at MANY_IDLE_STREAMS, KiB of bridge RSS per open stream."""

UNARY = "aigateway.v1.ChatService/CreateChatCompletion"
GHZ_BODY = {
    "model": "openai/gpt-4o-mini",
    "messages": [
        {"role": "system", "content_text": "You are a terse assistant."},
        {"role": "user", "content_text": "Count from one to fifty."},
    ],
    "temperature": 0.0,
}

# (scenario, concurrency): what each path runs in every round.
SCENARIOS = [
    ("unary", 1),
    ("unary", 32),
    ("stream", 8),
    ("responses-stream", 8),
    ("embed", 4),
    ("embed64", 4),
]
PATHS = ["httpx", "openai", "grpc"]


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def process(args: list[str], marker: str, log: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a server, wait for the stdout line starting with `marker`, stop it on exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            line = ""
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{args[0]} exited: see {log}")
                if line.startswith(marker):
                    break
            # The address is the first word after the marker ("HOST:PORT, upstream ...").
            yield proc, line[len(marker) :].split(",")[0].strip()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_bridge(
    upstream: str, log: Path
) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    # The pool must hold one upstream connection per open stream for the idle-stream test.
    return process(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            f"http://{upstream}/v1",
            "--max-connections",
            str(MANY_IDLE_STREAMS + 100),
        ],
        "aigateway bridge listening on ",
        log,
    )


def load_command(
    path: str, scenario: str, target: str, concurrency: int, warmup: float, seconds: float
) -> list[str]:
    """The bench/load.py client process for one path and scenario (see its --help)."""
    return [
        sys.executable,
        str(HERE / "load.py"),
        "--path",
        path,
        "--scenario",
        scenario,
        "--target",
        target,
        "-c",
        str(concurrency),
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    ]


def ghz_command(
    target: str, concurrency: int, seconds: float, *, connections: int | None = None
) -> list[str]:
    """ghz calling the unary chat RPC on one CPU for `seconds`, JSON report on stdout."""
    args = [
        str(BIN / "ghz"),
        "--insecure",
        "--protoset",
        str(DESCRIPTOR),
        "--call",
        UNARY,
        "-d",
        json.dumps(GHZ_BODY),
        "-m",
        json.dumps({"authorization": "Bearer bench"}),
        "-c",
        str(concurrency),
    ]
    if connections is not None:
        args += ["--connections", str(connections)]
    return [*args, "--cpus", "1", "-z", f"{seconds}s", "--format", "json", target]


def load(
    path: str,
    scenario: str,
    target: str,
    concurrency: int,
    opts: argparse.Namespace,
) -> dict[str, Any]:
    args = load_command(path, scenario, target, concurrency, opts.warmup, opts.seconds)
    out = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{path} {scenario} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def ghz(target: str, concurrency: int, opts: argparse.Namespace) -> dict[str, Any] | None:
    exe = BIN / "ghz"
    if not exe.exists() or not DESCRIPTOR.exists():
        return None
    args = ghz_command(target, concurrency, opts.seconds + opts.warmup, connections=1)
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"ghz failed: {out.stderr[-500:]}", file=sys.stderr)
        return None
    report = json.loads(out.stdout)
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"] or []}
    ok = report.get("statusCodeDistribution", {}).get("OK", 0)
    return {
        "rps": report["rps"] * ok / max(report["count"], 1),
        "p50_ms": latency.get(50),
        "p99_ms": latency.get(99),
        "total_requests": report["count"],
        "ok": ok,
    }


# --------------------------------------------------------------------------- measuring


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(old_soft, min(hard, 65536)), hard))
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}

    def record(key: str, value: dict[str, Any] | None) -> None:
        if value is not None:
            runs.setdefault(key, []).append(value)

    floor_server = [sys.executable, str(HERE / "floor.py")]
    with process([str(BIN / "upstream")], "listening on ", logs / "upstream.log") as (_, up):
        with (
            start_bridge(up, logs / "bridge.log") as (bridge, br),
            process(floor_server, "floor listening on ", logs / "floor.log") as (_, floor),
        ):
            for round_no in range(1, opts.rounds + 1):
                for scenario, concurrency in SCENARIOS:
                    if opts.only and scenario not in opts.only:
                        continue
                    for path in PATHS:
                        target = br if path == "grpc" else up
                        before = cpu_seconds(bridge.pid)
                        result = load(path, scenario, target, concurrency, opts)
                        if path == "grpc":
                            spent = cpu_seconds(bridge.pid) - before
                            result["bridge_cpu_ms_per_request"] = (
                                1000 * spent / max(result["total_requests"], 1)
                            )
                        record(f"{scenario}/c{concurrency}/{path}", result)
                        print(
                            f"round {round_no} {scenario} c={concurrency} {path}: "
                            f"{summary(result)}",
                            flush=True,
                        )
                    if scenario == "unary":
                        before = cpu_seconds(bridge.pid)
                        measured = ghz(br, concurrency, opts)
                        if measured is not None:
                            spent = cpu_seconds(bridge.pid) - before
                            measured["bridge_cpu_ms_per_request"] = (
                                1000 * spent / max(measured["total_requests"], 1)
                            )
                            print(
                                f"round {round_no} unary c={concurrency} ghz: {summary(measured)}",
                                flush=True,
                            )
                        record(f"unary/c{concurrency}/ghz", measured)
                    if scenario in ("unary", "stream"):
                        # The same client against bare gRPC: what the bridge adds is the rest.
                        result = load("grpc", scenario, floor, concurrency, opts)
                        record(f"{scenario}/c{concurrency}/floor", result)
                        print(
                            f"round {round_no} {scenario} c={concurrency} floor: {summary(result)}",
                            flush=True,
                        )
            wire = load("httpx", "wire", up, 1, opts) | load("grpc", "wire", br, 1, opts)
        # A fresh bridge for memory: RSS after the load above would include its high water.
        with start_bridge(up, logs / "bridge-idle.log") as (bridge, br):
            idle = idle_streams(bridge.pid, br, IDLE_STREAMS)
        with start_bridge(up, logs / "bridge-idle-many.log") as (bridge, br):
            many = idle_streams(bridge.pid, br, MANY_IDLE_STREAMS)
    return {"runs": runs, "wire": wire, "idle": idle, "idle_many": many}


def idle_streams(pid: int, target: str, count: int) -> dict[str, Any]:
    """Open `count` streams that stay idle after their first chunk (model `bench-idle`) and
    read the bridge's RSS before and while they are held, in MB."""
    time.sleep(0.5)
    baseline = rss_mb(pid)
    args = [
        sys.executable,
        str(HERE / "load.py"),
        "--path",
        "grpc",
        "--scenario",
        "idle",
        "--target",
        target,
        "-c",
        str(count),
    ]
    client = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert client.stdout is not None and client.stdin is not None
    ready = json.loads(client.stdout.readline())
    time.sleep(1.0)
    loaded = rss_mb(pid)
    client.stdin.write("stop\n")
    client.stdin.close()
    client.wait(120)
    print(
        f"idle streams: {ready['ready']} open, bridge RSS {baseline:.0f} MB -> {loaded:.0f} MB "
        f"({1024 * (loaded - baseline) / max(ready['ready'], 1):.0f} KiB per stream)",
        flush=True,
    )
    return {
        "streams": ready["ready"],
        "rss_baseline_mb": baseline,
        "rss_mb": loaded,
        "open_seconds": ready["open_seconds"],
    }


def summary(result: dict[str, Any]) -> str:
    parts = [f"{result['rps']:.0f} req/s"]
    if result.get("p50_ms") is not None:
        parts.append(f"p50 {result['p50_ms']:.2f} ms")
    if "ttfc_p50_ms" in result:
        parts.append(f"{result['chunks_per_s']:.0f} chunks/s, TTFC {result['ttfc_p50_ms']:.1f} ms")
    if "bridge_cpu_ms_per_request" in result:
        parts.append(f"bridge CPU {result['bridge_cpu_ms_per_request']:.3f} ms/req")
    return ", ".join(parts)


# --------------------------------------------------------------------------- reporting


def med(runs: dict[str, list[dict[str, Any]]], key: str, field: str) -> float | None:
    values = [r[field] for r in runs.get(key, []) if r.get(field) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "—"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def source() -> str:
    """The bridge code measured: the commit, and bridge/ files changed since, if any."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "bridge"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "source: not a git checkout"
    files = sorted(line[3:] for line in changed if line.strip())
    return f"bridge source: commit {commit}" + (
        f" with uncommitted changes to {', '.join(files)}" if files else ""
    )


def report(data: dict[str, Any], opts: argparse.Namespace) -> tuple[str, list[bool]]:
    runs, wire, idle, many = data["runs"], data["wire"], data["idle"], data["idle_many"]

    def m(key: str, field: str) -> float | None:
        return med(runs, key, field)

    rows: list[list[str]] = []

    def row(label: str, key: str, field: str, digits: int, better: str = "higher") -> None:
        h, o, g = (m(f"{key}/{p}", field) for p in ("httpx", "openai", "grpc"))
        z = m(f"{key}/ghz", field)
        f = m(f"{key}/floor", field)
        rows.append(
            [
                label,
                fmt(h, digits),
                fmt(o, digits),
                fmt(g, digits),
                fmt(z, digits),
                fmt(f, digits),
                ratio(g, o),
                ratio(g, h),
            ]
        )

    row("unary c=1: requests/s", "unary/c1", "rps", 0)
    row("unary c=1: p50 latency, ms", "unary/c1", "p50_ms", 2)
    row("unary c=1: p99 latency, ms", "unary/c1", "p99_ms", 2)
    row("unary c=32: requests/s", "unary/c32", "rps", 0)
    row("unary c=32: p50 latency, ms", "unary/c32", "p50_ms", 2)
    row("unary c=32: p99 latency, ms", "unary/c32", "p99_ms", 2)
    row("stream c=8 (100 chunks): chunks/s", "stream/c8", "chunks_per_s", 0)
    row("stream c=8: time to first chunk p50, ms", "stream/c8", "ttfc_p50_ms", 2)
    row(
        "responses stream c=8 (100 text deltas): deltas/s",
        "responses-stream/c8",
        "chunks_per_s",
        0,
    )
    row(
        "responses stream c=8: time to first delta p50, ms", "responses-stream/c8", "ttfc_p50_ms", 2
    )
    row("unary c=32: client CPU per call, ms", "unary/c32", "client_cpu_ms_per_request", 3)
    row("stream c=8: client CPU per stream, ms", "stream/c8", "client_cpu_ms_per_request", 2)
    row(
        "responses stream c=8: client CPU per stream, ms",
        "responses-stream/c8",
        "client_cpu_ms_per_request",
        2,
    )
    row("embeddings 256x1536 as floats, c=4: requests/s", "embed/c4", "rps", 1)
    row("embeddings as floats: client CPU per call, ms", "embed/c4", "client_cpu_ms_per_request", 1)
    row("embeddings as base64, c=4: requests/s", "embed64/c4", "rps", 1)
    row(
        "embeddings as base64: client CPU per call, ms",
        "embed64/c4",
        "client_cpu_ms_per_request",
        1,
    )
    rows.append(
        [
            "embeddings: response bytes on the wire (float)",
            fmt(wire["json_float_bytes"]),
            "—",
            fmt(wire["proto_float_bytes"]),
            "—",
            "—",
            "—",
            ratio(wire["proto_float_bytes"], wire["json_float_bytes"]),
        ]
    )
    rows.append(
        [
            "embeddings: response bytes on the wire (base64)",
            fmt(wire["json_base64_bytes"]),
            "—",
            fmt(wire["proto_base64_bytes"]),
            "—",
            "—",
            "—",
            ratio(wire["proto_base64_bytes"], wire["json_base64_bytes"]),
        ]
    )
    cpu = {
        k: m(k, "bridge_cpu_ms_per_request")
        for k in (
            "unary/c1/grpc",
            "unary/c32/grpc",
            "unary/c32/ghz",
            "stream/c8/grpc",
            "responses-stream/c8/grpc",
            "embed/c4/grpc",
            "embed64/c4/grpc",
        )
    }

    lines = [
        f"# Benchmark results, {opts.stamp}",
        "",
        f"Machine: {machine()}. Median of {opts.rounds} rounds of {opts.seconds:g} s "
        f"(after {opts.warmup:g} s warm-up) per measurement; every client in its own process;",
        "upstream: bench/upstream (Go net/http, canned answers); bridge: `python -m bridge serve`;",
        f"{source()}.",
        "",
        "| measurement | httpx direct | openai SDK | bridge (grpc.aio) | bridge (ghz) "
        "| gRPC floor | bridge ÷ SDK | bridge ÷ httpx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "| bridge resources | value |",
        "|---|---:|",
        f"| RSS idle (fresh process), MB | {idle['rss_baseline_mb']:.0f} |",
        f"| RSS with {idle['streams']:,} open idle streams, MB | {idle['rss_mb']:.0f} |",
        f"| RSS with {many['streams']:,} open idle streams, MB (KiB per stream) | "
        f"{many['rss_mb']:.0f} ({per_stream_kib(many):.0f}) |",
        f"| CPU per unary call at c=1, ms | {fmt(cpu['unary/c1/grpc'], 3)} |",
        f"| CPU per unary call at c=32 (grpc.aio client), ms | {fmt(cpu['unary/c32/grpc'], 3)} |",
        f"| CPU per unary call at c=32 (ghz), ms | {fmt(cpu['unary/c32/ghz'], 3)} |",
        f"| CPU per streamed call (100 chunks), ms | {fmt(cpu['stream/c8/grpc'], 3)} |",
        "| CPU per streamed Response (100 deltas, 108 events), ms | "
        f"{fmt(cpu['responses-stream/c8/grpc'], 3)} |",
        f"| CPU per embeddings call (256x1536 floats), ms | {fmt(cpu['embed/c4/grpc'], 3)} |",
        f"| CPU per embeddings call (base64), ms | {fmt(cpu['embed64/c4/grpc'], 3)} |",
        "",
    ]

    targets: list[tuple[str, str, bool | None]] = []
    u32 = ratio_value(m("unary/c32/grpc", "rps"), m("unary/c32/openai", "rps"))
    targets.append(
        (
            "unary c=32 throughput ≥ 1.2x the openai SDK's",
            f"{u32:.2f}x" if u32 else "—",
            u32 is not None and u32 >= 1.2,
        )
    )
    g1, h1 = m("unary/c1/grpc", "p50_ms"), m("unary/c1/httpx", "p50_ms")
    added = g1 - h1 if g1 is not None and h1 is not None else None
    targets.append(
        (
            "added p50 latency at c=1 ≤ 1 ms over direct httpx",
            f"{added:+.2f} ms" if added is not None else "—",
            added is not None and added <= 1.0,
        )
    )
    st = ratio_value(m("stream/c8/grpc", "chunks_per_s"), m("stream/c8/openai", "chunks_per_s"))
    targets.append(
        (
            "streamed chunks/s ≥ 1.5x the openai SDK's",
            f"{st:.2f}x" if st else "—",
            st is not None and st >= 1.5,
        )
    )
    targets.append(
        (
            f"{idle['streams']:,} idle streams ≤ 300 MB RSS",
            f"{idle['rss_mb']:.0f} MB",
            idle["streams"] >= IDLE_STREAMS and idle["rss_mb"] <= 300,
        )
    )
    targets.append(
        (
            f"{MANY_IDLE_STREAMS:,} idle streams held, ≤ {KIB_PER_IDLE_STREAM} KiB RSS each",
            f"{many['streams']:,} at {per_stream_kib(many):.0f} KiB",
            many["streams"] >= MANY_IDLE_STREAMS and per_stream_kib(many) <= KIB_PER_IDLE_STREAM,
        )
    )
    targets.append(
        (
            "embeddings smaller on the wire than their JSON",
            f"{wire['proto_float_bytes']:,} vs {wire['json_float_bytes']:,} bytes",
            wire["proto_float_bytes"] < wire["json_float_bytes"],
        )
    )
    lines += ["| target | measured | result |", "|---|---:|---|"]
    lines += [f"| {t} | {v} | {'PASS' if ok else 'FAIL'} |" for t, v, ok in targets]
    lines += [
        "",
        "Notes: the float embeddings rows ask every path for `encoding_format` float (the SDK "
        "too); the base64 rows ask for base64 and decode it into Python floats (the SDK's "
        "default, which it decodes itself). The responses stream rows: POST /responses with "
        "`stream: true`, 108 named events of which 100 `response.output_text.delta` (counted); "
        "the SDK path is `client.responses.stream(...)` (typed events plus its accumulated "
        "snapshot), httpx decodes every event's JSON, gRPC is `StreamResponse`. "
        "ghz runs with one connection and one CPU; "
        + ("" if "unary/c1/ghz" in runs else "it could not be installed, so its column is empty. ")
        + "gRPC floor: the same grpc.aio client against a bare grpc.aio server with prebuilt "
        "answers and no upstream (bench/floor.py), i.e. what gRPC in Python costs here by "
        "itself. "
        + "Bytes on the wire are response bodies: the JSON as the upstream sent it, the gRPC "
        "message with its 5-byte frame.",
        "",
    ]
    return "\n".join(lines), [bool(ok) for _, _, ok in targets]


def ratio_value(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def per_stream_kib(idle: dict[str, Any]) -> float:
    """KiB of bridge RSS per held stream, over the fresh process's own RSS."""
    return 1024 * (idle["rss_mb"] - idle["rss_baseline_mb"]) / max(idle["streams"], 1)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, wire, idle = data["runs"], data["wire"], data["idle"]
    names = ["httpx", "openai", "grpc", "ghz"]
    labels = ["httpx direct", "openai SDK", "bridge (grpc.aio)", "bridge (ghz)"]
    colors = ["#888888", "#d62728", "#1f77b4", "#17becf"]
    panels = [
        ("unary c=1: p50 latency (ms, lower is better)", "unary/c1", "p50_ms"),
        ("unary c=32: requests/s", "unary/c32", "rps"),
        ("stream c=8: chunks/s", "stream/c8", "chunks_per_s"),
        ("stream c=8: time to first chunk p50 (ms)", "stream/c8", "ttfc_p50_ms"),
        ("embeddings c=4: requests/s", "embed/c4", "rps"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    flat = list(axes.flat)
    for ax, (title, key, field) in zip(flat, panels, strict=False):
        values = [med(runs, f"{key}/{n}", field) for n in names]
        shown = [
            (lab, v, c) for lab, v, c in zip(labels, values, colors, strict=True) if v is not None
        ]
        ax.bar([s[0] for s in shown], [s[1] for s in shown], color=[s[2] for s in shown])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax = flat[5]
    ax.bar(
        ["JSON float", "protobuf float", "JSON base64", "protobuf base64"],
        [
            wire["json_float_bytes"] / 1e6,
            wire["proto_float_bytes"] / 1e6,
            wire["json_base64_bytes"] / 1e6,
            wire["proto_base64_bytes"] / 1e6,
        ],
        color=["#888888", "#1f77b4", "#888888", "#1f77b4"],
    )
    ax.set_title("embeddings response size (MB)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax = flat[6]
    ax.bar(
        ["idle bridge", f"{idle['streams']} idle streams"],
        [idle["rss_baseline_mb"], idle["rss_mb"]],
        color=["#888888", "#1f77b4"],
    )
    ax.axhline(300, color="#d62728", linestyle="--", label="target 300 MB")
    ax.legend(fontsize=8)
    ax.set_title("bridge RSS (MB)", fontsize=10)
    ax = flat[7]
    cpu_keys = [
        ("unary c=1", "unary/c1/grpc"),
        ("unary c=32", "unary/c32/grpc"),
        ("stream (100 chunks)", "stream/c8/grpc"),
        ("embeddings", "embed/c4/grpc"),
    ]
    ax.bar(
        [k for k, _ in cpu_keys],
        [med(runs, key, "bridge_cpu_ms_per_request") or 0 for _, key in cpu_keys],
        color="#1f77b4",
    )
    ax.set_yscale("log")
    ax.set_title("bridge CPU per call (ms, log)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle("aigateway bridge vs direct REST and the openai SDK (loopback, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 4)))
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted({s for s, _ in SCENARIOS}),
        help="run only these scenarios (the rest of the table stays empty)",
    )
    opts = parser.parse_args()
    if not (BIN / "upstream").exists():
        print("bench/bin/upstream is missing: run `make bench`", file=sys.stderr)
        return 2
    if not (BIN / "ghz").exists():
        print(
            "note: bench/bin/ghz is missing (go install failed?): the ghz column stays empty",
            file=sys.stderr,
        )
    now = dt.datetime.now(dt.UTC)
    opts.stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    began = time.monotonic()
    data = measure(opts)
    text, verdicts = report(data, opts)
    text += f"Total benchmark time: {time.monotonic() - began:.0f} s.\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / f"{stamp}.md").write_text(text)
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=1))
    plot(data, RESULTS / "latest.png")
    shutil.copyfile(RESULTS / "latest.png", RESULTS / f"{stamp}.png")
    print()
    print(text)
    print(
        f"{sum(verdicts)} of {len(verdicts)} targets met; written to "
        f"{(RESULTS / 'latest.md').relative_to(ROOT)} and latest.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
