"""A/B: the bridge's CPU per call for several variants, measured alternately in one run.

Throughput on a shared 2-core machine swings with whatever else runs; CPU seconds the
bridge process spends per call (from /proc) swing much less, and alternating the variants
round by round spreads the remaining noise evenly. Each variant is a source tree (e.g. a
`git archive` of an older commit) plus optional monkeypatches applied before the bridge
starts, so one change can be switched off at a time:

    python bench/ab.py new=. base=/tmp/base no-orjson=.:no-orjson floor=floor

The tree name `floor` runs bench/floor.py (the bare grpc.aio server, chat only) in place of
the bridge, so a ratio to the floor is measured in the same run; its embeddings stay empty.
The tree name `relay` runs bench/floor.py --relay (the same server making the bridge's
upstream exchange with aiohttp, and nothing else): what gRPC and the HTTP client alone cost,
the least a bridge on these two libraries can. Of the patches only the event loop ones
(`uvloop`) change the floor and the relay (`relay=relay:uvloop`, on the bridge's loop); the
bridge's probes do nothing there. Ratios are to the first `floor` tree of the command line
(`floor=floor`: asyncio's loop, as issue 16 states its targets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import BIN, HERE, ROOT, cpu_seconds, ghz_command, load_command, process

PATCHES = {
    # Undo one change each, to see what it bought.
    "httpx-info": "import logging, bridge.telemetry.logs as L\n"
    "_c = L.configure\n"
    "def configure(*a, **k):\n"
    "    h = _c(*a, **k); logging.getLogger('httpx').setLevel(logging.INFO); return h\n"
    "L.configure = configure\n",
    "no-orjson": "import json, bridge.upstream.body as U\nU.loads = json.loads\n",
    # uvloop's event loop instead of asyncio's (the bridge's default now: --event-loop auto).
    "uvloop": "import uvloop\nuvloop.install()\n",
    "asyncio-loop": "import os\nos.environ['BRIDGE_EVENT_LOOP'] = 'asyncio'\n",
    # Try: the upstream's headers as trailing metadata on unary calls (a contract change: the
    # README documents them as initial metadata), which saves gRPC's separate HEADERS batch.
    "headers-trailing": "import bridge.grpc_api.base as S\n"
    "_u = S._Base.unary\n"
    "class _Context:\n"
    "    def __init__(self, c): self.c = c\n"
    "    def __getattr__(self, n): return getattr(self.c, n)\n"
    "    async def send_initial_metadata(self, m): self.c.set_trailing_metadata(m)\n"
    "async def unary(self, context, *a, **k):\n"
    "    return await _u(self, _Context(context), *a, **k)\n"
    "S._Base.unary = unary\n",
    # Try: gRPC core's optimisation hint and a larger HTTP/2 write buffer.
    "grpc-throughput": "import bridge.server.assembly as S\n_o = S.server_options\n"
    "S.server_options = lambda c: [*_o(c), ('grpc.optimization_target', 'throughput'), "
    "('grpc.http2.write_buffer_size', 1 << 20)]\n",
    # Probes (what a part costs, not changes to keep): every answer translated once per
    # message type and then reused; no guard or decoding interceptor; no observation
    # interceptor (metrics, access log, spans); the access log at WARNING.
    "no-translate": "import bridge.grpc_api.base as B\n_p = B._Base.parse\n_c = {}\n"
    "def parse(self, t, data, rid):\n"
    "    c = data.get('choices') or [{}]\n"
    "    k = (t, c[0].get('finish_reason'), 'usage' in data)\n"
    "    if k not in _c:\n        _c[k] = _p(self, t, data, rid)\n"
    "    m = _c[k]\n    if 'id' in data:\n        m.id = data['id']\n    return m\n"
    "B._Base.parse = parse\n",
    "no-guard": "import bridge.server.assembly as A\nA.interceptors = lambda c, t: []\n",
    "no-observation": "import bridge.telemetry.observability as O\n"
    "O.Observability.interceptors = property(lambda self: [])\n",
    "quiet-log": "import os\nos.environ['BRIDGE_LOG_LEVEL'] = 'WARNING'\n",
    # Try: fewer young-generation collections (the default threshold is 700 objects).
    "gc-threshold": "import gc\ngc.set_threshold(10000, 20, 20)\n",
}

LAUNCH = """
import runpy, sys
{patches}
sys.argv = ["bridge", *sys.argv[1:]]
runpy.run_module("bridge", run_name="__main__")
"""

FLOOR = """
import runpy, sys
{patches}
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def bridge_command(
    tree: str, patches: list[str], upstream: str
) -> tuple[list[str], dict[str, str]]:
    patched = "\n".join(PATCHES[p] for p in patches)
    if tree in ("floor", "relay"):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-c", FLOOR.format(patches=patched), str(HERE / "floor.py")]
        if tree == "relay":
            args += ["--relay", f"http://{upstream}/v1"]
        return args, env
    code = LAUNCH.format(patches=patched)
    # The tree's own client package (translation, stubs) too, ahead of the installed one.
    root = Path(tree).resolve()
    paths = [root, root / "client", root / "generated"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths if p.exists())}
    args = [
        sys.executable,
        "-c",
        code,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        f"http://{upstream}/v1",
    ]
    return args, env


def measure(
    pid: int, target: str, seconds: float, *, embed: bool = True, paced: int = 0
) -> dict[str, float]:
    out: dict[str, float] = {}
    before = cpu_seconds(pid)
    ghz = subprocess.run(
        ghz_command(target, 32, seconds), capture_output=True, text=True, check=True
    )
    report = json.loads(ghz.stdout)
    # Calls that ended OK: ghz's `count` also holds failed ones (and those it cancels at
    # the end of its run), which would flatter a server whose calls fail.
    count = report.get("statusCodeDistribution", {}).get("OK", 0)
    if count < report["count"] / 2:
        raise RuntimeError(f"most unary calls failed: {report.get('errorDistribution')}")
    out["unary_cpu_ms"] = 1000 * (cpu_seconds(pid) - before) / count
    for scenario, concurrency, key in (
        ("stream", 8, "stream_cpu_ms"),
        ("embed", 2, "embed_cpu_ms"),
    ):
        if not embed and scenario == "embed":
            out[key] = float("nan")
            continue
        before = cpu_seconds(pid)
        result = subprocess.run(
            load_command("grpc", scenario, target, concurrency, 0.5, seconds),
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        total = json.loads(result.stdout.splitlines()[-1])["total_requests"]
        out[key] = 1000 * (cpu_seconds(pid) - before) / total
    if paced:
        # Streams at a model's pace (bench/capacity.py's client): every chunk arrives on its
        # own, so this is the per-chunk cost with a wake-up per chunk, in µs.
        before = cpu_seconds(pid)
        result = subprocess.run(
            [
                sys.executable,
                str(HERE / "capacity.py"),
                "--client",
                "--target",
                target,
                "--streams",
                str(paced),
                "--seconds",
                str(seconds),
                "--warmup",
                "0.5",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        report = json.loads(result.stdout.splitlines()[-1])
        chunks = report["chunks_total"]
        out["paced_cpu_us"] = 1e6 * (cpu_seconds(pid) - before) / max(chunks, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="+", help="NAME=TREE[:PATCH[,PATCH]]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--paced", type=int, default=0, help="also N streams at 20 chunks/s: CPU per chunk"
    )
    opts = parser.parse_args()
    variants: list[tuple[str, str, list[str]]] = []
    for spec in opts.variants:
        name, _, rest = spec.partition("=")
        tree, _, patches = rest.partition(":")
        variants.append((name, tree, [p for p in patches.split(",") if p]))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with process([str(BIN / "upstream")], "listening on ", logs / "ab-upstream.log") as (_, up):
        for round_no in range(opts.rounds):
            for name, tree, patches in variants:
                args, env = bridge_command(tree, patches, up)
                proc = subprocess.Popen(
                    args,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                    cwd="/",
                )
                try:
                    assert proc.stdout is not None
                    line = proc.stdout.readline()
                    target = line.split("listening on ", 1)[1].split(",")[0].strip()
                    time.sleep(0.5)
                    result = measure(
                        proc.pid,
                        target,
                        opts.seconds,
                        embed=tree not in ("floor", "relay"),
                        paced=opts.paced,
                    )
                finally:
                    proc.terminate()
                    proc.wait(15)
                results[name].append(result)
                print(
                    f"round {round_no + 1} {name}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in result.items()),
                    flush=True,
                )
    print()
    keys = ["unary_cpu_ms", "stream_cpu_ms", "embed_cpu_ms"]
    if opts.paced:
        keys.append("paced_cpu_us")
    print("| variant | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, runs in results.items():
        medians: list[Any] = [statistics.median(r[k] for r in runs) for k in keys]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in medians) + " |")
    floors = [name for name, tree, _ in variants if tree == "floor"]
    if floors:
        # Ratios to the floor, round by round (each round's variants ran minutes apart at
        # most), then the median: the figure issue 16's targets are stated in.
        base = results[floors[0]]
        print()
        paced_head = f" paced ÷ {floors[0]} |" if opts.paced else ""
        print(f"| variant | unary ÷ {floors[0]} | stream ÷ {floors[0]} |{paced_head}")
        print("|---|---:|---:|" + ("---:|" if opts.paced else ""))
        for name, runs in results.items():
            ratios = [
                statistics.median(r[k] / f[k] for r, f in zip(runs, base, strict=True))
                for k in ("unary_cpu_ms", "stream_cpu_ms", "paced_cpu_us")
                if k in keys
            ]
            print(f"| {name} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
