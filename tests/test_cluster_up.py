"""cluster.yaml's flow on this machine: a token-authenticated head whose autoscaler starts worker
nodes (Ray's fake multi-node provider, tests/fake_cluster.yaml), `ray job submit` of a bundled
smoke study from a clean copy of the code, and a teardown of only this cluster's processes."""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fake_cluster_helpers import FAKE_HEAD_NODE_ID, clean_copy, ray_cli, running_fake_cluster, submit_job, wait_for_job


@pytest.fixture
def fake_cluster() -> Iterator[dict[str, Any]]:
    with running_fake_cluster() as cluster:
        yield cluster


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
    code = clean_copy(tmp_path / "code")
    assert not (code / ".venv").exists() and (code / "jobs" / "ablation.py").is_file()
    authed = fake_cluster["authed_env"]

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
    job_id = submit_job(submit_args, authed)

    # Authentication is really on: no token, or a token that is not the cluster's, is refused.
    anonymous = ray_cli(["job", "status", job_id], fake_cluster["client_env"])
    said = anonymous.stdout + anonymous.stderr
    assert anonymous.returncode != 0 and "Missing authentication token" in said, said
    wrong_token = tmp_path / "other_token"
    wrong_token.write_text(secrets.token_hex(32))
    impostor = ray_cli(["job", "status", job_id], {**authed, "RAY_AUTH_TOKEN_PATH": str(wrong_token)})
    said = impostor.stdout + impostor.stderr
    assert impostor.returncode != 0 and "Invalid authentication token" in said, said

    # Nine trainings on two one-CPU nodes: seven minutes and more on a busy two-core machine.
    final, logs = wait_for_job(job_id, authed, timeout=600)
    assert final == "succeeded", f"{final}\n{logs[-4000:]}"

    rows = ResultsStore(storage).read("demo")
    demo = load_spec(bundled_spec("demo"), smoke=True)
    assert len(rows) == len(demo.rows) * len(demo.seeds) and set(rows["status"]) == {"ok"}
    assert "trainings to run" in logs
    # The trials' own output reaches the job's log (each trial's process prints at least
    # TensorFlow's start-up lines), prefixed by Ray with the process that printed it.
    assert re.search(r"\(_train_one pid=\d+", re.sub(r"\x1b\[[0-9;]*m", "", logs)), logs[-4000:]

    # The autoscaler started at least one worker node next to the head (head: CPU 0).
    listed = ray_cli(["list", "nodes", "--format", "json", "--address", authed["RAY_ADDRESS"]], authed)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    nodes = json.loads(listed.stdout)
    workers = [n for n in nodes if n["node_id"] != FAKE_HEAD_NODE_ID]
    assert workers and all(n["resources_total"].get("CPU") == 1 for n in workers), nodes
