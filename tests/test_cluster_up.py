"""cluster.yaml's flow on this machine: a token-authenticated head whose autoscaler starts worker
nodes (Ray's fake multi-node provider, tests/fake_cluster.yaml), `ray job submit` of a smoke
study from a clean copy of the code that starts with no worker node and scales up, and a
teardown of only this cluster's processes; and the cluster's token, made fresh and private."""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_cluster_helpers import FAKE_HEAD_NODE_ID, NEW_CLUSTER_TOKEN, clean_copy, running_fake_cluster
from ray_jobs import ray_cli, submit_job, wait_for_job


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fake_cluster() -> Iterator[dict[str, Any]]:
    with running_fake_cluster() as cluster:
        yield cluster


# The study's driver on the head (ray job submit): it says what it sees before the study starts.
PROBE = """
import sys

import ray

from rmaunet.cli import main
from rmaunet.specs import bundled_spec
from rmaunet.studies.session import concurrency, connect_ray
from rmaunet.studies.spec import load_spec

connect_ray(None, print)
workers = [n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"]]
search = load_spec(bundled_spec("joint_search"), smoke=True)
print(f"probe: {len(workers)} worker nodes, search runs {concurrency(search, 1, search=True)} at once", flush=True)
sys.exit(main(["study", "run", *sys.argv[1:]]))
"""


def test_new_cluster_token_is_fresh_private_and_never_rays_everyday_one(tmp_path):
    # deploy/new-cluster-token under a permissive umask, into a folder left open before: a token in
    # Ray's format, 0600 in a 0700 folder, a new one each time, and ~/.ray's token (which every
    # local Ray start makes and reuses) neither copied nor touched.
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    everyday = home / ".ray" / "auth_token"
    everyday.write_text("a" * 64)
    (home / ".rmaunet" / "ray-auth").mkdir(parents=True, mode=0o755)
    tokens = []
    for _ in range(2):
        made = subprocess.run(
            ["sh", "-c", f"umask 022; exec '{NEW_CLUSTER_TOKEN}'"],
            env={**os.environ, "HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert made.returncode == 0, made.stderr
        path = Path(made.stdout.strip())
        assert path == home / ".rmaunet" / "ray-auth" / "auth_token"
        assert (_mode(path), _mode(path.parent)) == (0o600, 0o700)
        tokens.append(path.read_text())
    assert all(re.fullmatch(r"[0-9a-f]{64}", token) for token in tokens) and tokens[0] != tokens[1]
    assert everyday.read_text() == "a" * 64 and everyday.read_text() not in tokens
    assert [p.name for p in path.parent.iterdir()] == ["auth_token"]  # no temporary file left


@pytest.mark.slow
def test_fake_cluster_scales_up_for_a_submitted_study_with_token_auth(fake_cluster, tmp_path):
    # tests/fake_cluster.yaml: a token-authenticated head with 0 CPUs, 0 to 2 one-CPU workers. A
    # study of four one-CPU trainings submitted from a clean copy of the code: the job client needs
    # the token (without it, or with another, it is refused); at the study's start there is no
    # worker node; the autoscaler adds both, and two trials train at the same time, one on each.
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.store import ResultsStore

    data = write_landslide4sense(tmp_path / "data", n=40, seed=5, size=32)
    storage = tmp_path / "results"
    spec = tmp_path / "autoscale.yaml"
    spec.write_text(
        "name: autoscale\nkind: table\ndataset: landslide4sense\nbase: {preset: baseline}\n"
        "seeds: [0, 1]\nresources: {cpu: 1}\nrows:\n  - {label: A}\n  - {label: B, set: {loss: focal_iou}}\n"
    )
    code = clean_copy(tmp_path / "code")
    assert not (code / ".venv").exists() and (code / "jobs" / "ablation.py").is_file()
    (code / "autoscale_probe.py").write_text(PROBE)
    # The token every node of the cluster runs on (here all read the same file): made fresh for
    # the cluster, readable by its owner alone, in a folder only its owner can open.
    token_path = fake_cluster["token_path"]
    assert (_mode(token_path), _mode(token_path.parent)) == (0o600, 0o700)
    authed = fake_cluster["authed_env"]
    job_id = submit_job(
        ["job", "submit", "--no-wait", "--working-dir", str(code), "--", sys.executable, "autoscale_probe.py"]
        + [str(spec), "--smoke", "--data", str(data), "--storage", str(storage)],
        authed,
    )

    # Authentication is really on: no token, or a token that is not the cluster's, is refused.
    anonymous = ray_cli(["job", "status", job_id], fake_cluster["client_env"])
    said = anonymous.stdout + anonymous.stderr
    assert anonymous.returncode != 0 and "Missing authentication token" in said, said
    wrong_token = tmp_path / "other_token"
    wrong_token.write_text(secrets.token_hex(32))
    impostor = ray_cli(["job", "status", job_id], {**authed, "RAY_AUTH_TOKEN_PATH": str(wrong_token)})
    said = impostor.stdout + impostor.stderr
    assert impostor.returncode != 0 and "Invalid authentication token" in said, said

    final, logs = wait_for_job(job_id, authed, timeout=600)
    assert final == "succeeded", f"{final}\n{logs[-4000:]}"
    assert "trainings to run" in logs
    # Each trial's process keeps TensorFlow's and CUDA's start-up lines out of the job's log
    # (rmaunet.training.quiet), while rmaunet's progress lines name each trial's row and seed.
    assert "cuInit" not in logs and "InitializeLog" not in logs, logs[-4000:]
    assert re.search(r"epoch \d+/\d+  .* \(seed \d+\)", logs), logs[-4000:]
    # At the study's start no worker node, and a search would already run two trials at once
    # (the cluster's largest size, read from the head's bootstrap config; one with the CPUs it held).
    assert "probe: 0 worker nodes, search runs 2 at once" in logs, logs[-4000:]

    rows = ResultsStore(storage).read("autoscale")
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}, rows[["row", "seed", "status", "reason"]]
    # Each trial's span on the one clock of this machine: it wrote its result.json last, wall_s
    # after it started training. The node is the short Ray node id the trial recorded.
    spans = []
    for tid, node, wall_s in zip(rows["trial_id"], rows["node"], rows["wall_s"]):
        end = ResultsStore(storage).trial(tid).result.stat().st_mtime
        spans.append((node.rsplit("/", 1)[1], end - wall_s, end))
    nodes = {node for node, _, _ in spans}
    assert len(nodes) >= 2 and FAKE_HEAD_NODE_ID[:8] not in nodes, spans  # worker nodes only
    overlaps = [min(a[2], b[2]) - max(a[1], b[1]) for a, b in itertools.combinations(spans, 2) if a[0] != b[0]]
    start = min(s for _, s, _ in spans)
    shown = [(node, round(s - start, 1), round(e - start, 1)) for node, s, e in sorted(spans, key=lambda x: x[1])]
    print(f"autoscale: trials on nodes {sorted(nodes)}, longest overlap {max(overlaps):.1f} s, spans {shown}")
    assert max(overlaps) > 1.0, shown

    # Ray's own view: the worker nodes the autoscaler started beside the head (head: CPU 0).
    listed = ray_cli(["list", "nodes", "--format", "json", "--address", authed["RAY_ADDRESS"]], authed)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    workers = [n for n in json.loads(listed.stdout) if n["node_id"] != FAKE_HEAD_NODE_ID]
    assert len(workers) >= 2 and all(n["resources_total"].get("CPU") == 1 for n in workers), workers
