"""The walking skeleton end to end: a real Ray head, `ray job submit`, the smoke demo."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ports import free_port
from ray_jobs import submit_job, wait_for_job
from ray_nodes import HEAD_PORT_FLAGS, run_ray_start, stop_processes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head():
    """`ray start --head` on 127.0.0.1 with its own temp dir and ports; stopped afterwards."""
    # Short path: Ray's unix sockets live under the temp dir and must stay under ~107 chars.
    temp = Path(tempfile.mkdtemp(prefix="rmh-", dir="/tmp"))
    # Every listening port of its own: Ray's defaults (e.g. the dashboard agent's 52365)
    # collide with any other Ray runtime on the machine, and the job API then never comes up.
    ports = {name: free_port() for name in ("port", *HEAD_PORT_FLAGS)}
    dash = ports["dashboard-port"]
    # A token of its own: ~/.ray/auth_token exists only once some earlier Ray runtime made it,
    # and a machine's first `ray start --head` with token auth finds none and exits.
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp}",
        "--num-cpus=2",
        "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    run_ray_start(cmd, env=env, temp=temp)
    try:
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        stop_processes(temp)  # this head only: `ray stop` would stop every Ray runtime on the machine
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_runs_the_smoke_demo(ray_head, tmp_path):
    # Submit the smoke demo as a Ray job, wait for SUCCEEDED, and find its rows in the results store:
    # with --set and --seeds, which reach the trials on the cluster and are kept with the spec.
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.specs import bundled_spec
    from rmaunet.store import ResultsStore
    from rmaunet.studies.spec import load_spec

    data = write_landslide4sense(tmp_path / "data", n=40, seed=5, size=64)
    storage = tmp_path / "results"
    env = {**ray_head["env"], "RAY_ADDRESS": ray_head["address"]}
    cmd = [
        "job",
        "submit",
        "--no-wait",
        "--working-dir",
        str(REPO),
        "--",
        sys.executable,
        "jobs/ablation.py",
        "search_spaces/demo.yaml",
        "--smoke",
        "--set",
        "epochs=2",
        "--seeds",
        "1",
        "--data",
        str(data),
        "--storage",
        str(storage),
    ]
    job_id = submit_job(cmd, env)
    final, logs = wait_for_job(job_id, env, timeout=600)
    assert final == "succeeded", f"{final}\n{logs[-4000:]}"

    rows = ResultsStore(storage).read("demo")
    demo = load_spec(bundled_spec("demo"), smoke=True)
    assert len(rows) == len(demo.rows) and set(rows["status"]) == {"ok"}  # 3 trainings, not the spec's 9
    assert set(rows["seed"]) == {1} and set(rows["cfg_epochs"]) == {2} and set(rows["epochs_run"]) == {2}
    assert ResultsStore(storage).read_spec("demo")["overrides"] == "epochs=2; seeds 1"
    assert rows["row"].tolist()[0] == "U-Net & Cross Entropy (baseline)"
    for metric in ("val_f1", "val_precision", "val_recall", "val_iou", "val_miou", "wall_s"):
        assert rows[metric].notna().all(), metric
    assert "trainings to run" in logs
    assert [h["epoch"] for h in json.loads(rows["history"].iloc[0])] == [1, 2]


@pytest.mark.slow
def test_ablation_job_takes_exactly_the_study_run_options():
    # jobs/ablation.py forwards to the CLI's own parser: its --help is `rmaunet study run --help`.
    def help_text(*args: str) -> str:
        out = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert help_text("jobs/ablation.py") == help_text("-m", "rmaunet", "study", "run")
