"""`make bench-profile`: where the bridge spends its CPU under each benchmark load.

Starts the benchmark upstream and the bridge like `make bench`, drives one load at a time
with bench/load.py, and samples the bridge with py-spy (only while it holds the GIL, so
waiting is not counted). Writes bench/profiles/<load>.txt (collapsed stacks, for flame
graph tools) and prints the functions with the most samples, self and inclusive.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import time
from pathlib import Path

from run import BIN, HERE, ROOT, load_command, process, start_bridge

LOADS = [("unary", 32), ("stream", 8), ("embed", 4), ("paced", 150)]
"""(scenario, concurrency); `paced` is bench/capacity.py's client: streams at a model's pace
(20 chunks/s each), where every chunk arrives, and is written, on its own."""
OUT = HERE / "profiles"


def summarize(path: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "  self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    with contextlib.ExitStack() as stack:
        _, up = stack.enter_context(
            process([str(BIN / "upstream")], "listening on ", OUT / "upstream.log")
        )
        bridge, br = stack.enter_context(start_bridge(up, OUT / "bridge.log"))
        wanted = set(sys.argv[1:]) or {scenario for scenario, _ in LOADS}
        for scenario, concurrency in LOADS:
            if scenario not in wanted:
                continue
            if scenario == "paced":
                command = [
                    sys.executable,
                    str(HERE / "capacity.py"),
                    "--client",
                    "--target",
                    br,
                    "--streams",
                    str(concurrency),
                    "--seconds",
                    "7",
                    "--warmup",
                    "1",
                ]
            else:
                command = load_command("grpc", scenario, br, concurrency, 1, 7)
            client = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=ROOT)
            time.sleep(1.5)
            out = OUT / f"{scenario}-c{concurrency}.txt"
            subprocess.run(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(bridge.pid),
                    "--gil",
                    "--rate",
                    "250",
                    "--duration",
                    "5",
                    "--format",
                    "raw",
                    "-o",
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            client.wait()
            print(f"== {scenario} c={concurrency}: {out.relative_to(ROOT)}")
            print(summarize(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
