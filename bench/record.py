"""Run one benchmark and keep its figures with the machine they were measured on.

    python bench/record.py predict [ARGS…]    # runs bench/predict.py ARGS…

writes `bench/results/predict.json`: the command, the benchmark's last-line JSON, and what
the figures depend on (CPU model and cores, memory, GPUs, the load average before and after,
the commit, the date, the wall time). The README's benchmark table links these files, so a
figure quoted there can be checked against the run that produced it. The machines the
project is developed on are shared: the load average says how quiet the run was.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def machine() -> dict[str, object]:
    """What a benchmark's figures depend on, read from this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        gpus = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        gpus = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpus": [g.strip() for g in gpus if g.strip()],
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def commit() -> str | None:
    out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=BENCH)
    return out.stdout.strip() or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the benchmark: bench/NAME.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    script = BENCH / f"{args.name}.py"
    if not script.is_file() or script.name == Path(__file__).name:
        parser.error(f"no benchmark {script}")
    command = [sys.executable, str(script), *args.args]
    load_before = os.getloadavg()
    started = time.monotonic()
    run = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    wall = time.monotonic() - started
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0 or not lines:
        print(f"bench/record.py: {script.name} exited {run.returncode} without figures", file=sys.stderr)
        return 1
    try:
        figures = json.loads(lines[-1])
    except json.JSONDecodeError:
        print(f"bench/record.py: {script.name}'s last line is not JSON: {lines[-1][:200]}", file=sys.stderr)
        return 1
    record = {
        "benchmark": script.name,
        "command": shlex.join(["python", f"bench/{script.name}", *args.args]),
        "result": figures,
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(wall, 1),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"written": str(out.relative_to(BENCH.parent)), **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
