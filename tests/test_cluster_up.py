"""cluster.yaml's flow on this machine: a token-authenticated head whose autoscaler starts worker
nodes (Ray's fake multi-node provider, tests/fake_cluster.yaml), `ray job submit` of a bundled
smoke study from a clean copy of the code, and a teardown of only this cluster's processes."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray_nodes import stop_processes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAKE_CLUSTER = Path(__file__).with_name("fake_cluster.yaml")
# Ray's fixed id for the fake provider's head (ray.autoscaler._private.fake_multi_node).
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_copy(target: Path) -> Path:
    """The files git tracks or would track (no .venv, caches, datasets): what a fresh clone sends."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
    return target


@pytest.fixture
def fake_cluster() -> Iterator[dict[str, Any]]:
    """tests/fake_cluster.yaml brought up as `ray up` would: its config prepared and validated,
    written as the head's bootstrap config, the head start commands run with the token."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    # Short path: Ray's unix sockets live under the temp folder and must stay under ~107 chars.
    folder = Path(tempfile.mkdtemp(prefix="rmf-", dir="/tmp"))
    (folder / "ray-auth").mkdir()
    # A token of this cluster's own, made once (as `ray get-auth-token --generate` would, but
    # not in ~/.ray, where other runtimes on the machine keep theirs).
    token = secrets.token_hex(32)
    (folder / "ray-auth" / "auth_token").write_text(token)

    # Every listening port of its own, so the cluster runs beside other Ray runtimes.
    ports = {
        name: _free_port()
        for name in (
            "dashboard-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    }
    gcs_port = _free_port()
    config = yaml.safe_load(FAKE_CLUSTER.read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"
    config["provider"]["node_temp_root"] = str(folder / "nodes")
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    (folder / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(prepared))

    cpus = prepared["available_node_types"]["ray.head.default"]["resources"]["CPU"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            # The head's autoscaler imports the provider (tests/fake_provider.py) from here.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE_CLUSTER.parent), env.get("PYTHONPATH")])),
            "RAY_FAKE_CLUSTER": "1",  # the provider refuses to start without it
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "FAKE_CLUSTER_DIR": str(folder),
            "GCS_PORT": str(gcs_port),
            # The head type's resources, which `ray up`'s updater exports as RAY_OVERRIDE_RESOURCES
            # for the start commands: here an option, since the raylets that the head's autoscaler
            # starts on this machine would inherit the variable and take the head's CPUs (none).
            "RAY_NODE_OPTIONS": " ".join([*(f"--{name}={port}" for name, port in ports.items()), f"--num-cpus={cpus}"]),
        }
    )
    try:
        for command in prepared["head_start_ray_commands"]:
            started = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stdout + started.stderr
        client = {k: v for k, v in env.items() if k != "RAY_FAKE_CLUSTER"}
        client["RAY_ADDRESS"] = f"http://127.0.0.1:{ports['dashboard-port']}"
        yield {"token_path": folder / "ray-auth" / "auth_token", "client_env": client}
    finally:
        stop_processes(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _ray(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_fake_cluster_runs_a_submitted_smoke_study_with_token_auth(fake_cluster, tmp_path):
    # The head trains nothing: the study's trials run on worker nodes its autoscaler starts; the job
    # client needs the token (without it, or with another, it is refused); the rows land in the store.
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.specs import bundled_spec
    from rmaunet.store import ResultsStore
    from rmaunet.studies.spec import load_spec

    data = write_landslide4sense(tmp_path / "data", n=40, seed=5, size=64)
    storage = tmp_path / "results"
    code = _clean_copy(tmp_path / "code")
    assert not (code / ".venv").exists() and (code / "jobs" / "ablation.py").is_file()
    token_path = str(fake_cluster["token_path"])
    authed = {**fake_cluster["client_env"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}

    submit_args = [
        "job",
        "submit",
        "--no-wait",
        "--working-dir",
        str(code),
        "--",
        sys.executable,
        "jobs/ablation.py",
        "search_spaces/demo.yaml",
        "--smoke",
        "--data",
        str(data),
        "--storage",
        str(storage),
    ]
    # The head's job agent registers a few seconds after `ray start` returns.
    for _ in range(30):
        submit = _ray(submit_args, authed, timeout=300)
        if submit.returncode == 0 or "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(4)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submit.stdout + submit.stderr).group(0)

    # Authentication is really on: no token, or a token that is not the cluster's, is refused.
    anonymous = _ray(["job", "status", job_id], fake_cluster["client_env"])
    said = anonymous.stdout + anonymous.stderr
    assert anonymous.returncode != 0 and "Missing authentication token" in said, said
    wrong_token = tmp_path / "other_token"
    wrong_token.write_text(secrets.token_hex(32))
    impostor = _ray(["job", "status", job_id], {**authed, "RAY_AUTH_TOKEN_PATH": str(wrong_token)})
    said = impostor.stdout + impostor.stderr
    assert impostor.returncode != 0 and "Invalid authentication token" in said, said

    deadline = time.monotonic() + 420
    final = None
    while time.monotonic() < deadline and final is None:
        status = _ray(["job", "status", job_id], authed, timeout=60)
        match = re.search(rf"Job '{job_id}' (succeeded|failed|was stopped)", status.stdout + status.stderr)
        final = match.group(1) if match else None
        time.sleep(0 if final else 3)
    logs = _ray(["job", "logs", job_id], authed).stdout
    if final is None:
        _ray(["job", "stop", job_id], authed)
    assert final == "succeeded", f"{final}\n{logs[-4000:]}"

    rows = ResultsStore(storage).read("demo")
    demo = load_spec(bundled_spec("demo"), smoke=True)
    assert len(rows) == len(demo.rows) * len(demo.seeds) and set(rows["status"]) == {"ok"}
    assert "trainings to run" in logs
    # The trials' own output reaches the job's log (each trial's process prints at least
    # TensorFlow's start-up lines), prefixed by Ray with the process that printed it.
    assert re.search(r"\(_train_one pid=\d+", re.sub(r"\x1b\[[0-9;]*m", "", logs)), logs[-4000:]

    # The autoscaler started at least one worker node next to the head (head: CPU 0).
    listed = _ray(["list", "nodes", "--format", "json", "--address", authed["RAY_ADDRESS"]], authed)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    nodes = json.loads(listed.stdout)
    workers = [n for n in nodes if n["node_id"] != FAKE_HEAD_NODE_ID]
    assert workers and all(n["resources_total"].get("CPU") == 1 for n in workers), nodes
