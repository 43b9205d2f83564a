"""Multi-node for real, on this one machine: a head and two worker nodes that share no writable
folder with each other or with the driver (each has its own Ray temporary folder, HOME, TMPDIR
and rmaunet cache), a results store and a dataset reachable only through an S3 server on
127.0.0.1 (moto), and a search's Optuna study in a PostgreSQL server. Each node is a
`ray start --block` process; a node is lost by SIGKILLing every process it started.

One test, in phases that share the cluster (starting one costs half a minute here):
1. a table study with two one-worker rows and one 2-worker data-parallel row (its workers
   one on each worker node) finishes with every row in the bucket; a rerun trains nothing;
2. a search keeps its Optuna study in PostgreSQL, read back with optuna.load_study; a rerun
   spends none of its budget;
3. a worker node killed mid-trial: the trial resumes on the other node from the last
   checkpoint in the bucket, the epoch counter going on where it stopped.
The figures (nodes, trials, rows, resumed epochs, wall times) are printed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ports import free_port
from ray_nodes import NODE_PORT_FLAGS, stop_processes

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
NODE_START_TRIES = 3
TINY = "{preset: baseline, base_filters: 4, depth: 2, crop: 32, max_tiles: 40, batch_size: 8, augment: []"
WAIT_FOR_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= int(sys.argv[2]):
        break
    time.sleep(1)
print(json.dumps({n["NodeID"][:8]: n["Resources"].get("CPU", 0) for n in alive}))
"""


class Cluster:
    """A head (no CPUs: trials never run there) and worker nodes, each with its own folders."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.gcs = f"127.0.0.1:{free_port()}"
        self.nodes: dict[str, subprocess.Popen] = {}

    def home(self, name: str) -> Path:
        return self.root / f"home-{name}"

    def temp(self, name: str) -> Path:
        return self.root / name  # short: Ray's unix sockets live below it

    def node_env(self, name: str) -> dict[str, str]:
        home = self.home(name)
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return {**self.env, "HOME": str(home), "TMPDIR": str(home / "tmp"), "RMAUNET_CACHE_DIR": str(home / "cache")}

    def start(self, name: str, cpus: int, head: bool = False) -> None:
        command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
        command += [f"--temp-dir={self.temp(name)}", f"--num-cpus={cpus}"]
        command += [f"--{flag}={free_port()}" for flag in NODE_PORT_FLAGS]
        if head:
            port = self.gcs.rsplit(":", 1)[1]
            command += [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
            ]
        else:
            command += [f"--address={self.gcs}"]
        # Ray gives a node 30 s to register (its dashboard 60 s): on a loaded machine a node can
        # miss it, and `ray start` exits. Each node is waited for until it says it started, and
        # started afresh (what the failed try left stopped) up to 3 times, as rmaunet does.
        log_path = self.root / f"{name}.log"
        for attempt in range(1, NODE_START_TRIES + 1):
            log = open(log_path, "ab")  # noqa: SIM115 - the node's lifetime
            self.nodes[name] = proc = subprocess.Popen(
                command, env=self.node_env(name), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if b"Ray runtime started." in log_path.read_bytes():
                    return
                time.sleep(0.5)
            if proc.poll() is None:
                return  # still starting: wait_for judges it
            assert attempt < NODE_START_TRIES, f"node {name} did not start in {attempt} tries: {self.exited()}"
            stop_processes(self.temp(name))

    def wait_for(self, count: int) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, self.gcs, str(count)],
            env=self.node_env("probe"),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        alive = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(alive) >= count, f"{alive}; {self.exited()}; logs in {self.root}"
        return alive

    def exited(self) -> str:
        """Which node processes have ended, each with its log's last lines (the root folder
        goes with the test, so the reason must be in the failure message)."""
        gone = []
        for name, proc in self.nodes.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-1500:]
                gone.append(f"node {name} exited with status {proc.returncode}: {tail}")
        return "; ".join(gone) or "every node process still running"

    def kill(self, name: str) -> None:
        """The node is lost: every process it started dies at once, nothing shuts down cleanly."""
        stop_processes(self.temp(name), kill_at_once=True)
        self.nodes[name].kill()
        self.nodes[name].wait(timeout=30)

    def stop(self) -> None:
        for name in reversed(list(self.nodes)):
            stop_processes(self.temp(name))
            self.nodes[name].kill()


@pytest.fixture
def cluster(s3_bucket: str) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))
    # Nothing of another Ray this process talked to (an address, a token mode an earlier test
    # left in the environment): this cluster runs without token authentication.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RMAUNET_FAIL"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    c = Cluster(root, env)
    try:
        c.start("h", cpus=0, head=True)
        c.start("a", cpus=1)
        c.start("b", cpus=1)
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _upload(local: Path, uri: str) -> None:
    fs, path = pafs.FileSystem.from_uri(uri)
    pafs.copy_files(str(local), path, destination_filesystem=fs)


def _keys(uri: str) -> list[str]:
    fs, base = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)


def _driver(cluster: Cluster, spec: Path, data: str, storage: str, *extra: str) -> subprocess.Popen:
    """`rmaunet study run` as its own process on the head, with its own folders."""
    command = [sys.executable, "-m", "rmaunet", "study", "run", str(spec), "--data", data, "--storage", storage]
    command += ["--address", cluster.gcs, *extra]
    log = open(cluster.root / f"driver-{spec.stem}.log", "ab")  # noqa: SIM115 - closed by the process end
    return subprocess.Popen(
        command, env=cluster.node_env("driver"), cwd=cluster.home("driver"), stdout=log, stderr=subprocess.STDOUT
    )


def _finish(cluster: Cluster, proc: subprocess.Popen, name: str, timeout: float = 900) -> str:
    code = proc.wait(timeout=timeout)
    text = (cluster.root / f"driver-{name}.log").read_text(errors="replace")
    assert code == 0, text[-6000:]
    return text


def _spec(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path


# Five driver runs on three nodes, 30 epochs in the last: 609 s in one fresh-clone `make test`,
# and past pytest-timeout's 900 s hang guard in the next (load 10-15 from the suite's other Ray
# modules), waiting on its last driver (its log goes with the test). Every wait inside is bounded
# on its own (600 s for epoch 2, 900 s per driver); the guard for the whole test is 1800 s.
@pytest.mark.timeout(1800)
def test_a_study_on_nodes_that_share_no_disk_keeps_everything_in_the_bucket(
    cluster: Cluster, s3_bucket: str, postgres_url: str, l4s_small: Path, tmp_path: Path
) -> None:
    import optuna

    from rmaunet.store import ResultsStore

    figures: dict[str, object] = {}
    started = time.monotonic()
    data, storage = f"{s3_bucket}/data/l4s", f"{s3_bucket}/results"
    _upload(l4s_small, data)
    alive = cluster.wait_for(3)
    figures["nodes"] = {"alive": len(alive), "cpus": sorted(alive.values())}
    figures["cluster_up_s"] = round(time.monotonic() - started, 1)
    store = ResultsStore(storage)

    # 1. One-worker rows and a 2-worker data-parallel row (one worker per node: 1 CPU each).
    table = _spec(
        tmp_path,
        "mn_table",
        f"name: mn_table\nkind: table\nbase: {TINY}, epochs: 2}}\nseeds: [0]\nresources: {{cpu: 1}}\n"
        "rows:\n  - {label: CE}\n  - {label: IoU, set: {loss: iou}}\n"
        "  - {label: Focal on 2 workers, set: {loss: focal, num_workers: 2}}\n",
    )
    t0 = time.monotonic()
    _finish(cluster, _driver(cluster, table, data, storage), "mn_table")
    figures["table_s"] = round(time.monotonic() - t0, 1)
    rows = store.read("mn_table")
    assert sorted(rows["row"]) == ["CE", "Focal on 2 workers", "IoU"] and (rows["status"] == "ok").all(), rows
    keys = _keys(storage)
    for tid in rows["trial_id"]:
        assert {f"trials/{tid}/result.json", f"trials/{tid}/test_probs.npz"} <= set(keys)
        assert not any(k.startswith(f"trials/{tid}/checkpoint/") for k in keys)  # finished: no checkpoint kept
    dp = rows[rows["row"] == "Focal on 2 workers"]["trial_id"].iloc[0]
    sync = json.loads(store.storage.read_bytes(f"trials/{dp}/sync.json"))
    assert [len(s["weights_sha256"]) for s in sync] == [2, 2]  # both ranks, both epochs, compared
    assert any(k.startswith(f"trials/{dp}/ray_train/") for k in keys)  # Ray Train's checkpoints, in the bucket
    assert any(k.startswith("tune/mn_table/") for k in keys)  # Tune's experiment state, in the bucket
    one_worker_nodes = set(rows[rows["row"] != "Focal on 2 workers"]["node"])
    assert all(node.split("/")[-1] in alive for node in one_worker_nodes)
    figures["table_rows_in_bucket"] = len(rows)
    # No trial left files on a node: each worker node's cache holds its staged data copy only.
    for name in ("a", "b"):
        leftovers = list((cluster.home(name) / "cache").glob("stores/*/work/*/*"))
        assert leftovers == [], leftovers

    # A rerun trains nothing: every training is found in the bucket.
    t0 = time.monotonic()
    log = _finish(cluster, _driver(cluster, table, data, storage), "mn_table")
    figures["rerun_s"] = round(time.monotonic() - t0, 1)
    assert "0 trainings to run, 3 reused from the store" in log
    assert len(store.read("mn_table")) == 3

    # 2. A search's Optuna study in PostgreSQL, its trials trained on the worker nodes.
    search = _spec(
        tmp_path,
        "mn_search",
        f"name: mn_search\nkind: search\nbase: {TINY}, epochs: 2}}\nbudget: 2\nscheduler: fifo\n"
        "resources: {cpu: 1}\nspace:\n  learning_rate: {loguniform: [1.0e-4, 3.0e-3]}\n",
    )
    t0 = time.monotonic()
    _finish(cluster, _driver(cluster, search, data, storage, "--optuna-storage", postgres_url), "mn_search")
    figures["search_s"] = round(time.monotonic() - t0, 1)
    study = optuna.load_study(study_name="mn_search", storage=postgres_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert len(store.read("mn_search")) == 2
    assert not any(k.startswith("optuna") for k in _keys(storage))  # not the SQLite default in the store
    figures["search_trials_in_postgres"] = len(study.trials)
    # The same command again spends none of the budget: the study in the server says it is spent.
    log = _finish(cluster, _driver(cluster, search, data, storage, "--optuna-storage", postgres_url), "mn_search")
    assert "2 of 2 trials done, 0 to run" in log
    assert len(optuna.load_study(study_name="mn_search", storage=postgres_url).trials) == 2

    # 3. A worker node lost mid-trial: the trial goes on on the other node from the bucket.
    resume = _spec(
        tmp_path,
        "mn_resume",
        f"name: mn_resume\nkind: table\nbase: {TINY}, epochs: 30}}\nseeds: [0]\nresources: {{cpu: 1}}\n"
        "rows:\n  - {label: CE long}\n",
    )
    t0 = time.monotonic()
    driver = _driver(cluster, resume, data, storage)
    victim, killed_after = None, 0
    deadline = time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        for state in store.storage.child("trials").folders():
            raw = store.storage.read_bytes(f"trials/{state}/checkpoint/state.json")
            epoch = json.loads(raw)["epoch"] if raw else 0
            if epoch >= 2:
                # The node training it is the one whose cache holds the trial's workspace.
                owners = [n for n in ("a", "b") if list((cluster.home(n) / "cache").glob(f"stores/*/work/{state}"))]
                if owners:
                    victim, killed_after = owners[0], epoch
        time.sleep(0.3)
    assert victim is not None, "the long trial never reached epoch 2 in the bucket"
    cluster.kill(victim)
    _finish(cluster, driver, "mn_resume")
    figures["resume_s"] = round(time.monotonic() - t0, 1)
    (row,) = store.read("mn_resume").to_dict("records")
    assert row["status"] == "ok"
    result = store.finished_trial(row["trial_id"])
    assert result is not None
    history = result["history"]
    assert [h["epoch"] for h in history] == list(range(1, 31))  # the counter went on, no epoch twice
    resumed = int(result["resumed_from"])
    assert resumed >= killed_after >= 2  # from the bucket's last checkpoint, not from scratch
    before, after = history[resumed - 1]["node"], history[resumed]["node"]
    assert before != after and after == history[-1]["node"]
    figures["resume"] = {
        "killed_node": victim,
        "killed_after_checkpoint_epoch": killed_after,
        "resumed_after_epoch": resumed,
        "epochs": len(history),
        "nodes": [before, after],
    }
    figures["total_s"] = round(time.monotonic() - started, 1)
    print("MULTINODE_FIGURES " + json.dumps(figures))
