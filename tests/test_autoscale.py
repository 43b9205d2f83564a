"""How many trials a search runs at once on an autoscaling cluster: the cluster's largest size
where its autoscaler declares one. The end-to-end run (a study on a fake multi-node cluster that
starts with no worker node, whose pending trials make the autoscaler add the nodes they run on)
is tests/test_cluster_up.py, sharing that cluster with the token checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rmaunet.studies import session
from rmaunet.studies.spec import StudySpec, load_spec

SEARCH = "kind: search\nbudget: 8\nspace:\n  learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"


def _spec(tmp_path: Path, body: str, resources: str = "{cpu: 1}") -> StudySpec:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: s\nbase: {{preset: baseline}}\nresources: {resources}\n{body}")
    return load_spec(path)


def _cluster(monkeypatch: pytest.MonkeyPatch, now: dict[str, float], most: dict[str, float] | None) -> None:
    """A cluster holding `now`, whose autoscaler reported `most` to the GCS (None: no report)."""
    import ray
    import ray._private.state

    monkeypatch.setattr(ray, "cluster_resources", lambda: now)
    monkeypatch.setattr(ray._private.state.state, "get_max_resources_from_cluster_config", lambda: most)


def _bootstrap_config(path: Path, max_workers: int) -> Path:
    """A cluster config as `ray up` leaves it on the head: a 2-CPU head, CPU and GPU workers."""
    config = {
        "max_workers": max_workers,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 2}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 4}, "min_workers": 0, "max_workers": 3},
            "gpu_worker": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 2},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_search_on_an_autoscaling_cluster_runs_as_many_trials_as_its_largest_size_holds(tmp_path, monkeypatch):
    # No worker node yet (0 CPUs), room for 6 CPUs: 3 trials of 2 CPUs, not one.
    _cluster(monkeypatch, now={"CPU": 0.0}, most={"CPU": 6})
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 2}"), workers=1, search=True) == 3


def test_a_search_counts_gpus_per_trial_when_it_asks_for_gpus(tmp_path, monkeypatch):
    # 8 GPUs at most, trials of 2 workers with 1 GPU each: 4 at once; the CPUs do not count.
    _cluster(monkeypatch, now={"CPU": 64.0, "GPU": 0.0}, most={"CPU": 64, "GPU": 8})
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 1, gpu: 1}"), workers=2, search=True) == 4


def test_max_concurrent_and_table_studies_ignore_the_cluster_size(tmp_path, monkeypatch):
    # The spec's cap wins; a table study stays unbounded, its pending trials being the autoscaler's demand.
    _cluster(monkeypatch, now={"CPU": 0.0}, most={"CPU": 6})
    assert session.concurrency(_spec(tmp_path, SEARCH + "max_concurrent: 5\n"), workers=1, search=True) == 5
    assert session.concurrency(_spec(tmp_path, "kind: table\nrows:\n  - {label: A}\n"), workers=1) is None


def test_a_search_uses_current_resources_when_they_exceed_the_declared_size(tmp_path, monkeypatch):
    # A reported config may leave out the head's CPUs: what the cluster holds now is a floor.
    _cluster(monkeypatch, now={"CPU": 5.0}, most={"CPU": 2})
    assert session.concurrency(_spec(tmp_path, SEARCH), workers=1, search=True) == 5


def test_without_a_declared_size_a_search_reads_rays_bootstrap_config_on_the_head(tmp_path, monkeypatch):
    # Ray 2.60's own autoscaler reports no config to the GCS; `ray up` leaves it in the head's home.
    _cluster(monkeypatch, now={"CPU": 2.0}, most=None)
    monkeypatch.setenv("HOME", str(tmp_path))
    _bootstrap_config(tmp_path / "ray_bootstrap_config.yaml", max_workers=5)
    # 2 (head) + 2 × 8 + 3 × 4 = 30 CPUs: 10 trials of 3 CPUs.
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 3}"), workers=1, search=True) == 10


def test_the_bootstrap_config_caps_worker_nodes_of_all_types_together(tmp_path):
    # max_workers 3: the two 8-CPU nodes and one 4-CPU node, not all five worker nodes.
    totals = session.bootstrap_max_resources(_bootstrap_config(tmp_path / "c.yaml", max_workers=3))
    assert totals == {"CPU": 2 + 2 * 8 + 4, "GPU": 2}


def test_a_missing_private_api_or_config_falls_back_to_current_resources(tmp_path, monkeypatch):
    # Another Ray may lack the private call, and a cluster without `ray up` has no config file.
    import ray
    import ray._private.state

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0})
    monkeypatch.delattr(type(ray._private.state.state), "get_max_resources_from_cluster_config")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert session.max_cluster_resources() is None
    assert session.concurrency(_spec(tmp_path, SEARCH), workers=1, search=True) == 3
    (tmp_path / "ray_bootstrap_config.yaml").write_text("max_workers: [not, a, config\n")
    assert session.max_cluster_resources() is None
