"""Ray nodes on this one machine for tests: find and stop only the processes of one node or
cluster (those naming its own temporary folder), never every Ray on the machine (`ray stop`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["processes_under", "run_ray_start", "stop_processes", "NODE_PORT_FLAGS", "HEAD_PORT_FLAGS"]

# Every port a Ray node listens on, each its own: several nodes or runtimes on one machine
# must not share Ray's fixed defaults (e.g. the dashboard agent's 52365).
NODE_PORT_FLAGS = (
    "node-manager-port",
    "object-manager-port",
    "metrics-export-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
)
# A head's too: its dashboard (the job API) and Ray Client server.
HEAD_PORT_FLAGS = ("dashboard-port", "ray-client-server-port", *NODE_PORT_FLAGS)


def processes_under(folder: Path) -> list[int]:
    """The processes whose command line names `folder` (every Ray process of a node gets its
    temporary folder, or its session folder inside it) and all processes below them."""
    parents: dict[int, int] = {}
    roots: list[int] = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if str(folder) in cmdline and int(proc.name) != os.getpid():
            roots.append(int(proc.name))
    found, todo = set(roots), list(roots)
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return sorted(found)


def stop_processes(folder: Path, *, kill_at_once: bool = False) -> None:
    """SIGTERM (or, with kill_at_once, SIGKILL: a node lost) every process under `folder`,
    then SIGKILL what is left, until none is."""
    steps = ((signal.SIGKILL, 5.0),) if kill_at_once else ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0))
    for sig, wait in steps:
        pids = processes_under(folder)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.5)
            pids = processes_under(folder)
        if not pids:
            return


def run_ray_start(command: list[str], *, env: Mapping[str, str], temp: Path) -> subprocess.CompletedProcess[str]:
    """A `ray start` that returns once its node is up, whose every process names `temp`.

    Ray gives a new node 30 s to register with its GCS and then `ray start` exits non-zero,
    leaving some of its processes running. Under the suite's own load on 2 cores a head can
    miss that window (CI did, in test_cluster_up's fixture): what the failed try left is
    stopped and the node started afresh, up to RMAUNET_RAY_START_TRIES tries (conftest.py: 6),
    as rmaunet.studies.session does for a user's local runtime. Any other failure ends it.
    """
    from rmaunet.studies.session import start_tries  # the product's reading of the knob

    tries = start_tries()
    printed: list[str] = []  # each failed try's output
    while len(printed) < tries:
        started = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=240)
        if started.returncode == 0:
            return started
        printed.append(started.stdout + started.stderr)
        stop_processes(temp)
        if "timed out" not in printed[-1]:
            break  # not Ray's start-up window: the same again would fail the same way
    raise AssertionError(f"ray start failed ({len(printed)} tries); the last printed:\n{printed[-1]}")
