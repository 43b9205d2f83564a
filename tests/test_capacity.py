"""What a cluster can run (rmaunet.studies.capacity): trials counted per node on each node type, from
`ray up`'s node types, a KubeRay RayCluster's groups or a static cluster's live nodes; a row that
no node can hold refused in one line before anything starts; and the Optuna storage's password
kept out of command lines, messages and Tune's saved state."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from rmaunet.cli import main
from rmaunet.errors import ConfigError, StoreError
from rmaunet.studies import capacity, session
from rmaunet.studies.capacity import Capacity, NodeType, TrialRequest
from rmaunet.studies.spec import load_spec

GPU_TRIAL = TrialRequest(cpu=4, gpu=1)


def _ray_up(head: dict[str, float], workers: dict[str, tuple[dict[str, float], int]], cap: int) -> Capacity:
    config = {
        "max_workers": cap,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": head, "max_workers": 0},
            **{name: {"resources": r, "min_workers": 0, "max_workers": n} for name, (r, n) in workers.items()},
        },
    }
    types, most = capacity.from_autoscaling_config(config, "ray up")
    return Capacity("ray up", types, most, live=capacity.from_live_nodes([_node(head)]))


def _node(resources: dict[str, float], alive: bool = True, index: int = 0) -> dict[str, Any]:
    return {"NodeID": f"{index:056x}", "Alive": alive, "Resources": resources}


def _spec(tmp_path: Path, resources: str, rows: str = "  - {label: A}\n  - {label: B, set: {loss: focal_iou}}\n"):
    path = tmp_path / "gpu_spec.yaml"
    path.write_text(f"name: gpu_spec\nkind: table\nbase: {{preset: baseline}}\nresources: {resources}\nrows:\n{rows}")
    return path


def test_eight_cpu_nodes_hold_one_six_cpu_trial_each():
    # 4 nodes × 8 CPUs = 32 CPUs would say 5 trials of 6; per node, only one fits on each: 4.
    cluster = _ray_up({"CPU": 0}, {"cpu8": ({"CPU": 8}, 4)}, cap=4)
    assert cluster.trials_at_once(TrialRequest(cpu=6, gpu=0)) == 4
    assert cluster.trials_at_once(TrialRequest(cpu=4, gpu=0)) == 8


def test_a_cpu_head_with_gpu_workers_runs_gpu_trials_on_the_workers_only():
    # The head (8 CPUs, no GPU) is the only live node: GPU trials still fit, one per GPU worker.
    cluster = _ray_up({"CPU": 8}, {"gpu": ({"CPU": 8, "GPU": 1}, 3)}, cap=3)
    assert cluster.trials_at_once(GPU_TRIAL) == 3
    assert cluster.trials_at_once(TrialRequest(cpu=4, gpu=0)) == 2 + 3 * 2
    # A data-parallel row of 2 GPU workers: 3 GPUs hold one such trial, not one and a half.
    assert cluster.trials_at_once(TrialRequest(cpu=4, gpu=1, workers=2)) == 1


# A RayCluster as `kubectl get raycluster -o json` returns it: a head that trains nothing, GPU
# workers from 0 up to 3 (resources from the container's limits, as Ray's KubeRay autoscaler reads them).
RAYCLUSTER = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "rmaunet", "namespace": "ml"},
    "spec": {
        "headGroupSpec": {
            "rayStartParams": {"num-cpus": "0"},
            "template": {"spec": {"containers": [{"name": "ray-head", "resources": {"limits": {"cpu": "2"}}}]}},
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu",
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": 3,
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-worker",
                                "resources": {"limits": {"cpu": "8", "memory": "24Gi", "nvidia.com/gpu": "1"}},
                            }
                        ]
                    }
                },
            }
        ],
    },
}


def _kuberay_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, answer: Any) -> list[str]:
    """This process as a study's driver in the head pod of RAYCLUSTER, with no worker running: the
    pod's service-account files and RAY_CLUSTER_NAME, and a Kubernetes API answering `answer`
    (Ray's own HTTP client is what asks; the fixture stands in for the API server, not for rmaunet)."""
    import ray
    import ray._private.state
    from ray.autoscaler._private.kuberay import node_provider

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("token")
    (account / "namespace").write_text("ml\n")
    monkeypatch.setattr(capacity, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv("RAY_CLUSTER_NAME", "rmaunet")
    monkeypatch.setenv("HOME", str(tmp_path))  # no `ray up` config here
    monkeypatch.setattr(ray, "nodes", lambda: [_node({"CPU": 0.0})])
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: None)
    asked: list[str] = []

    def get(client: Any, path: str) -> Any:
        asked.append(f"{client._namespace}/{path}")
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(node_provider.KubernetesHttpApiClient, "get", get)
    return asked


def test_a_kuberay_cluster_with_no_worker_running_counts_its_worker_groups(tmp_path, monkeypatch):
    # No worker pod yet: the RayCluster's group (3 × 8 CPUs, 1 GPU) holds 3 GPU trials at once,
    # and a search runs 3 at once (it ran 1 at a time for its whole run before).
    asked = _kuberay_pod(monkeypatch, tmp_path, RAYCLUSTER)
    cluster = capacity.connected_cluster()
    assert asked == ["ml/rayclusters/rmaunet"]
    assert cluster.trials_at_once(GPU_TRIAL) == 3
    search = tmp_path / "search.yaml"
    search.write_text(
        "name: s\nkind: search\nbase: {preset: baseline}\nresources: {cpu: 4, gpu: 1}\nbudget: 10\n"
        "space:\n  learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
    )
    assert session.concurrency(load_spec(search), workers=1, search=True) == 3
    capacity.check_requests(load_spec(_spec(tmp_path, "{cpu: 4, gpu: 1}")), cluster)  # nothing refused


def test_an_unreadable_raycluster_refuses_nothing_and_says_why(tmp_path, monkeypatch):
    # The head's service account may lack `get` on rayclusters: its groups are unknown, so a GPU
    # row is not refused for the live head's lack of GPUs; the source line says what happened.
    import requests

    _kuberay_pod(monkeypatch, tmp_path, requests.HTTPError("403 Forbidden"))
    cluster = capacity.connected_cluster()
    assert not cluster.complete and "403 Forbidden" in cluster.describe()
    capacity.check_requests(load_spec(_spec(tmp_path, "{cpu: 4, gpu: 1}")), cluster)


def test_a_static_cluster_counts_its_live_nodes_per_node():
    # Two 4-CPU nodes and one 8-CPU node with 2 GPUs alive, one node dead: 3-CPU trials fit once
    # on each small node and twice on the big one; GPU trials only on the big one.
    nodes = [_node({"CPU": 4}, index=1), _node({"CPU": 4}, index=2), _node({"CPU": 8, "GPU": 2}, index=3)]
    cluster = Capacity("static", live=capacity.from_live_nodes([*nodes, _node({"CPU": 64}, alive=False)]))
    assert cluster.trials_at_once(TrialRequest(cpu=3, gpu=0)) == 4
    assert cluster.trials_at_once(TrialRequest(cpu=3, gpu=1)) == 2
    assert cluster.trials_at_once(TrialRequest(cpu=9, gpu=0)) == 0


def test_a_row_no_node_can_hold_is_one_line_naming_the_row_the_ask_the_offer_and_the_override(tmp_path):
    spec = load_spec(_spec(tmp_path, "{cpu: 4, gpu: 1}"))
    machine = Capacity("this machine", live=(NodeType("this machine", {"CPU": 2.0}, 1),))
    with pytest.raises(ConfigError) as refused:
        capacity.check_requests(spec, machine)
    assert str(refused.value) == (
        f"{spec.path}: row 'A' (and 1 more rows) asks cpu=4,gpu=1 per trial, which no node offers "
        "(this machine: nodes 1 × cpu=2,gpu=0): pass --resources cpu=2,gpu=0 (or --smoke) to run it on this cluster"
    )
    # A data-parallel row larger than the cluster: the override names a worker count that fits.
    wide = load_spec(_spec(tmp_path, "{cpu: 4, gpu: 1, workers: 4}"))
    with pytest.raises(ConfigError, match=r"asks 4 workers × cpu=4,gpu=1 .* --resources cpu=4,gpu=1,workers=3 "):
        capacity.check_requests(wide, _ray_up({"CPU": 8}, {"gpu": ({"CPU": 8, "GPU": 1}, 3)}, cap=3))


@pytest.fixture
def cpu_only_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as Ray sees it, 2 CPUs and no GPU whatever the hardware, and no cluster."""
    import ray

    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"CPU": 2, "GPU": 0}')
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()


def test_study_run_refuses_a_gpu_spec_on_a_cpu_machine_before_anything_starts(
    cpu_only_machine, l4s_small, tmp_path, capsys
):
    import ray

    store = tmp_path / "store"
    spec = _spec(tmp_path, "{cpu: 4, gpu: 1}")
    assert main(["study", "run", str(spec), "--data", str(l4s_small), "--storage", str(store)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "row 'A' (and 1 more rows) asks cpu=4,gpu=1" in lines[0], out.err
    assert "--resources cpu=2,gpu=0 (or --smoke)" in lines[0]
    assert not ray.is_initialized() and not (store / "trials").exists()  # no runtime, no trial


def test_study_plan_prints_each_rows_request_and_the_capacity_with_the_overrides(
    cpu_only_machine, l4s_small, tmp_path, capsys
):
    spec = _spec(tmp_path, "{cpu: 4, gpu: 1}")
    args = ["study", "plan", str(spec), "--data", str(l4s_small), "--storage", str(tmp_path / "store")]
    assert main([*args, "--resources", "cpu=1,gpu=0", "--max-concurrent", "1", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "capacity: this machine: nodes 1 × cpu=2,gpu=0; trials at once: 1 of cpu=1,gpu=0 (max_concurrent 1)" in out
    assert out.count(", asks cpu=1,gpu=0") == 2
    # Bad overrides are one line each.
    for bad in (["--resources", "gpu=one"], ["--resources", "tpu=1"], ["--max-concurrent", "0"]):
        assert main([*args, *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_optuna_storage_comes_from_the_environment(monkeypatch):
    # RMAUNET_OPTUNA_STORAGE is --optuna-storage's default: the URL never has to be on a command line.
    from rmaunet.cli import build_parser

    monkeypatch.setenv("RMAUNET_OPTUNA_STORAGE", "postgresql://optuna@db.internal/optuna")
    args = build_parser().parse_args(["study", "run", "demo", "--data", "d", "--storage", "s"])
    assert args.optuna_storage == "postgresql://optuna@db.internal/optuna"


def test_tunes_saved_searcher_state_holds_no_storage_url(tmp_path):
    # Ray's OptunaSearch pickles its storage (URL, password included) into the store's tune/ folder.
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from rmaunet.studies.search import _optuna_searcher

    url = f"sqlite:///{tmp_path / 'secret-place.db'}"
    kwargs = {
        "space": {"x": optuna.distributions.FloatDistribution(0, 1)},
        "metric": "objective",
        "mode": "max",
        "study_name": "s",
        "storage": optuna.storages.RDBStorage(url),
    }
    ours, rays = _optuna_searcher(**kwargs), OptunaSearch(**kwargs)
    for searcher in (ours, rays):
        searcher.suggest("t1")
    rays.save(str(tmp_path / "rays.pkl"))
    ours.save(str(tmp_path / "ours.pkl"))
    assert b"secret-place" in (tmp_path / "rays.pkl").read_bytes()
    assert b"secret-place" not in (tmp_path / "ours.pkl").read_bytes()
    assert "_sampler" in pickle.loads((tmp_path / "ours.pkl").read_bytes())


@pytest.mark.slow
def test_a_postgres_password_from_pgpassword_or_pgpass_and_never_in_a_message(postgres_url, tmp_path, monkeypatch):
    # The URL without its password opens the study with PGPASSWORD or a 0600 ~/.pgpass (libpq reads
    # both); without either the server refuses, and the line names the URL, masking any password.
    from urllib.parse import urlsplit

    from rmaunet.studies.search import _open_rdb

    parts = urlsplit(postgres_url)
    bare = postgres_url.replace(f":{parts.password}@", "@")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(StoreError, match="cannot open the Optuna storage"):
        _open_rdb(bare)
    with pytest.raises(StoreError) as wrong:
        _open_rdb(postgres_url.replace(parts.password, "not-it"))
    assert "not-it" not in str(wrong.value) and ":***@" in str(wrong.value)
    # Each storage opened is closed here: left to the garbage collector, its pooled connections
    # print psycopg's ResourceWarning whenever a later test in this process collects them
    # (a fuzz test that reads stderr failed on it).
    monkeypatch.setenv("PGPASSWORD", parts.password)
    _open_rdb(bare).engine.dispose()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{parts.hostname}:{parts.port}:*:{parts.username}:{parts.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    _open_rdb(bare).engine.dispose()


def test_a_job_api_address_is_one_line_not_a_traceback(l4s_small, tmp_path, capsys):
    # RAY_ADDRESS=http://…:8265 is what `ray job submit` wants; connecting a driver to it is Ray's
    # ValueError, which says how to fix it: one line, exit 2.
    spec = _spec(tmp_path, "{cpu: 1}")
    args = ["study", "plan", str(spec), "--data", str(l4s_small), "--storage", str(tmp_path / "store")]
    assert main([*args, "--address", "http://127.0.0.1:8265"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "http://127.0.0.1:8265: cannot connect to the Ray cluster (ValueError" in err[0], err
