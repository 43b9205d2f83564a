"""How busy does a study keep a cluster? A 12-trial table study on a simulated 3-node cluster.

The cluster is three Ray nodes on this machine, each its own `ray start` (its own raylet,
temp folder and ports, token authentication on): a head and two workers, each with one
logical CPU, and the study asks one CPU per trial, so every node (the head included)
holds exactly one trial at a time. The study (4 learning rates x 3 seeds on synthetic
data) runs through the real engine, `rmaunet.studies.runner.run_study(address=...)`,
with a Tune callback that notes when Tune starts and ends each trial.

Definitions (all times wall clock, in seconds):
- a trial's span: from Tune's `on_trial_start` (its actor is up on its node) to Tune's
  `on_trial_complete`, as the driver sees them;
- a trial's training seconds (`training_s`): the trial's own `wall_s` in result.json, what
  the training loop measured from the start of epoch 1 to the end of the last epoch
  (every epoch's training, validation and checkpoint; not data loading, model building
  or the final test scoring);
- node-seconds: nodes x the study's wall time, measured two ways: `span` from the first
  trial start to the last trial end, `driver` the whole `run_study` call (planning,
  connecting, Tune's set-up and teardown included);
- utilisation: sum of training seconds / node-seconds (goal: span figure >= 0.85);
- per-trial scheduling overhead: the median over trials of (span - training_s), and,
  beside it, the median gap between one trial ending and the next starting on the same
  node (the new trial process's start is paid there, before Tune calls it started).

The overhead is split with Tune's own clock in each result (`time_total_s`, counted from
the trial function's start) and each epoch's `epoch_s`: `setup_s` (function start to the
first epoch: TensorFlow import, data loading and splitting, model build), `finish_s`
(after the last epoch: test scoring, probability maps, the final report and checkpoint)
and `tune_s` (the rest of the span: Tune's start of the function and its bookkeeping).
`first_epoch_extra_s` is how much longer epoch 1 took than the later epochs' median (it
traces the train step and the predictor): inside training_s, but a fixed cost too.

Prints one JSON object on its last line, with `cpus` and the load average: on a machine
with fewer cores than nodes the trials compete for cores, and start-up, tracing and
training all slow down with the load (on 2 shared cores, two runs at load ~30 and ~8 took
1404 s and 736 s and gave the same share, 0.78, when every trial started a new process; since
Tune reuses a node's trial process, only a node's first trial pays the process start and
the imports: 0.90 at load ~2, 4.6 s median overhead per trial, 0.02 s between trials).

    python bench/cluster_utilisation.py                 # 24 epochs: ~30 s per training on an idle core
    python bench/cluster_utilisation.py --epochs 40 --tiles 240
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/ray_nodes.py: one node's processes, found and stopped

__all__ = ["TrialSpan", "utilisation", "node_gaps", "LocalCluster", "main"]

# Ports each `ray start` would otherwise take at Ray's fixed defaults, colliding with any
# other Ray runtime on the machine.
NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port", *NODE_PORTS)


@dataclass(frozen=True)
class TrialSpan:
    """One trial as the utilisation figures need it: where it ran, when Tune started and
    ended it, and how many of those seconds it spent training."""

    node: str
    start: float
    end: float
    training_s: float


def node_gaps(spans: Iterable[TrialSpan]) -> list[float]:
    """On each node, the idle time between one trial's end and the next one's start."""
    by_node: dict[str, list[TrialSpan]] = {}
    for span in spans:
        by_node.setdefault(span.node, []).append(span)
    gaps: list[float] = []
    for runs in by_node.values():
        runs.sort(key=lambda s: s.start)
        gaps.extend(later.start - earlier.end for earlier, later in zip(runs, runs[1:]))
    return gaps


def utilisation(spans: Sequence[TrialSpan], nodes: int, driver_wall_s: float) -> dict[str, Any]:
    """The share of node-seconds spent training and the per-trial scheduling overhead
    (definitions in the module docstring)."""
    if not spans:
        raise ValueError("no trials: utilisation needs at least one finished trial")
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    for span in spans:
        if span.end < span.start or span.training_s < 0:
            raise ValueError(f"trial on {span.node}: end before start or negative training time ({span})")
    study_s = max(s.end for s in spans) - min(s.start for s in spans)
    if driver_wall_s < study_s:
        raise ValueError(f"driver wall time {driver_wall_s:.1f} s is shorter than the trials' span {study_s:.1f} s")
    training_s = sum(s.training_s for s in spans)
    gaps = node_gaps(spans)
    return {
        "utilisation_span": training_s / (nodes * study_s) if study_s > 0 else 0.0,
        "utilisation_driver": training_s / (nodes * driver_wall_s) if driver_wall_s > 0 else 0.0,
        "overhead_per_trial_s": statistics.median(s.end - s.start - s.training_s for s in spans),
        "node_gap_s": statistics.median(gaps) if gaps else None,
        "training_s": training_s,
        "study_span_s": study_s,
        "driver_wall_s": driver_wall_s,
        "node_seconds_span": nodes * study_s,
        "node_seconds_driver": nodes * driver_wall_s,
        "trials": len(spans),
        "trials_per_node": {n: sum(s.node == n for s in spans) for n in sorted({s.node for s in spans})},
        "nodes": nodes,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`nodes` Ray nodes on this machine (one head, the rest workers), `cpus` logical CPUs
    each, every node with its own temp folder and ports under `folder`, token
    authentication on with a token of its own. Stopping it stops only its own processes
    (`ray stop` would stop every Ray runtime on the machine). Make it before this process
    imports Ray: Ray reads the authentication settings once, at its first use."""

    def __init__(self, folder: Path, nodes: int, cpus: int) -> None:
        self.folder, self.nodes, self.cpus = folder, nodes, cpus
        token = folder / "auth_token"
        token.write_text(secrets.token_hex(32))
        # This process's driver needs the token too, so it goes into our own environment.
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.address = f"127.0.0.1:{_free_port()}"

    def _start(self, name: str, extra: list[str], ports: Sequence[str]) -> None:
        ray = Path(sys.executable).parent / "ray"
        command = [
            str(ray),
            "start",
            *extra,
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.folder / name}",
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            "--disable-usage-stats",
            *(f"--{port}={_free_port()}" for port in ports if port != "port"),
        ]
        started = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n{started.stdout}\n{started.stderr}")

    def __enter__(self) -> LocalCluster:
        try:
            port = self.address.rsplit(":", 1)[1]
            self._start("head", ["--head", f"--port={port}", "--include-dashboard=false"], HEAD_PORTS)
            for i in range(1, self.nodes):
                self._start(f"worker{i}", [f"--address={self.address}"], NODE_PORTS)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Only this cluster's processes (those naming its folder, and their children): `ray stop`
        would stop every Ray runtime on the machine."""
        from ray_nodes import stop_processes

        stop_processes(self.folder)


def timeline_callback(path: Path) -> Any:
    """A Tune callback that appends each trial's start, results and end (driver clock) to
    `path` as JSON lines: a file, so nothing depends on Tune keeping this object in memory."""
    from ray import tune

    from rmaunet.studies.grid import TRIAL_KEY

    class Timeline(tune.Callback):
        def _note(self, event: str, trial: Any, **fields: Any) -> None:
            line = {"event": event, "time": time.time(), "trial": trial.config.get(TRIAL_KEY), **fields}
            with open(path, "a") as f:
                f.write(json.dumps(line) + "\n")

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._note("start", trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            keep = ("time_total_s", "epoch", "epoch_s")
            self._note("result", trial, **{k: result[k] for k in keep if k in result})

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._note("end", trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._note("error", trial)

    return Timeline()


def read_timeline(path: Path, results: dict[str, dict[str, Any]]) -> tuple[list[TrialSpan], dict[str, float]]:
    """Each finished trial's TrialSpan (node and training time from its result.json) and
    the medians of where its overhead went (see the module docstring)."""
    events: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        events.setdefault(event["trial"], []).append(event)
    spans: list[TrialSpan] = []
    parts: dict[str, list[float]] = {"setup_s": [], "finish_s": [], "tune_s": []}
    for tid, trail in events.items():
        starts = [e["time"] for e in trail if e["event"] == "start"]
        ends = [e["time"] for e in trail if e["event"] == "end"]
        result = results.get(tid)
        if len(starts) != 1 or len(ends) != 1 or result is None:
            continue  # retried or failed: not a clean measurement
        span = TrialSpan(str(result["node"]), starts[0], ends[0], float(result["wall_s"]))
        spans.append(span)
        epochs = [e for e in trail if e["event"] == "result" and "epoch_s" in e]
        reports = [e for e in trail if e["event"] == "result" and "time_total_s" in e]
        if epochs and reports:
            setup = epochs[0]["time_total_s"] - epochs[0]["epoch_s"]
            function_s = reports[-1]["time_total_s"]
            parts["setup_s"].append(setup)
            parts["finish_s"].append(function_s - setup - span.training_s)
            parts["tune_s"].append(span.end - span.start - function_s)
    return spans, {name: statistics.median(values) for name, values in parts.items() if values}


def _table_spec(folder: Path, epochs: int, seeds: int) -> Path:
    """Four rows that cost the same (only the learning rate differs) x `seeds` seeds."""
    import yaml

    doc = {
        "name": "cluster_utilisation",
        "kind": "table",
        "dataset": "landslide4sense",
        "base": {"preset": "baseline", "base_filters": 8, "depth": 3, "epochs": epochs, "batch_size": 8, "augment": []},
        "seeds": list(range(seeds)),
        "resources": {"cpu": 1},
        "rows": [{"label": f"lr {lr:g}", "set": {"learning_rate": lr}} for lr in (2e-4, 4e-4, 1e-3, 2e-3)],
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="Ray nodes, the head included, one trial each")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (4 rows): 3 makes 12 trials")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--tiles", type=int, default=160, help="synthetic 64x64 scenes")
    parser.add_argument("--keep", type=Path, help="keep the work folder here instead of a temporary one")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.seeds < 1 or args.epochs < 1:
        parser.error("--nodes, --seeds and --epochs must be at least 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Short: Ray's unix sockets live under each node's temp folder (at most ~107 characters).
    cluster_folder = Path(tempfile.mkdtemp(prefix="rmcu-", dir="/tmp"))
    cluster = LocalCluster(cluster_folder, args.nodes, cpus=1)

    import ray

    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.store import ResultsStore
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.spec import load_spec

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)  # progress to stderr, the JSON to stdout

    work = args.keep or Path(tempfile.mkdtemp(prefix="rmaunet_cluster_util_"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        data = write_landslide4sense(work / "data", n=args.tiles, seed=0, size=64)
        spec = load_spec(_table_spec(work, args.epochs, args.seeds))
        timeline = work / "timeline.jsonl"
        timeline.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with cluster:
            cluster_start_s = time.perf_counter() - t0
            log(f"{args.nodes} nodes up at {cluster.address} in {cluster_start_s:.1f} s")
            nodes_seen = 0
            t0 = time.perf_counter()
            try:
                plan = run_study(
                    spec,
                    data,
                    work / "store",
                    address=cluster.address,
                    log=log,
                    callbacks=[timeline_callback(timeline)],
                )
                driver_wall_s = time.perf_counter() - t0
                nodes_seen = sum(1 for node in ray.nodes() if node["Alive"])
            finally:
                ray.shutdown()
        load_after = os.getloadavg()
        store = ResultsStore(work / "store")
        results = {tid: r for tid in plan.unique if (r := store.finished_trial(tid)) is not None}
        spans, parts = read_timeline(timeline, results)
        figures = utilisation(spans, args.nodes, driver_wall_s)
    finally:
        shutil.rmtree(cluster_folder, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    epoch_times = [[h["epoch_s"] for h in r["history"]] for r in results.values()]
    # Epoch 1 traces the train step and the predictor: counted as training above, shown here.
    first_epoch_extra = [t[0] - statistics.median(t[1:]) for t in epoch_times if len(t) > 1]
    summary: dict[str, Any] = {
        **figures,
        "goal_utilisation": 0.85,
        "overhead_parts_median_s": parts,
        "training_s_per_trial_median": statistics.median(s.training_s for s in spans),
        "epochs_s_per_trial_median": statistics.median(sum(t) for t in epoch_times) if epoch_times else None,
        "first_epoch_extra_s_median": statistics.median(first_epoch_extra) if first_epoch_extra else None,
        "planned_trials": len(plan.unique),
        "failed_or_missing": len(plan.unique) - len(spans),
        "nodes_alive_at_end": nodes_seen,
        "cluster_start_s": cluster_start_s,
        "cpus": os.cpu_count(),
        "load_avg_1m_before_after": [load_before[0], load_after[0]],
        "config": {
            "epochs": args.epochs,
            "tiles": args.tiles,
            "size": 64,
            "base_filters": 8,
            "depth": 3,
            "batch_size": 8,
            "seeds": args.seeds,
            "rows": 4,
            "cpus_per_node": 1,
        },
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
