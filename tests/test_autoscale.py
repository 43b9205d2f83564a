"""How many trials a search runs at once on an autoscaling cluster: what fits per node on each
node type at its largest count (rmaunet.studies.capacity), read where the cluster declares its
types. The end-to-end run (a study on a fake multi-node cluster that starts with no worker node,
whose pending trials make the autoscaler add the nodes they run on) is tests/test_cluster_up.py,
sharing that cluster with the token checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rmaunet.studies import session
from rmaunet.studies.spec import StudySpec, load_spec

SEARCH = "kind: search\nbudget: 20\nspace:\n  learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"


def _spec(tmp_path: Path, body: str, resources: str = "{cpu: 1}") -> StudySpec:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: s\nbase: {{preset: baseline}}\nresources: {resources}\n{body}")
    return load_spec(path)


def _cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, live: list[dict[str, float]], reported: Any = None
) -> None:
    """A cluster whose live nodes hold `live`, whose autoscaler reported `reported` (a ClusterConfig
    proto, or None) to the GCS, and an empty HOME, where a test may write `ray up`'s config."""
    import ray
    import ray._private.state

    nodes = [{"NodeID": f"{i:056x}", "Alive": True, "Resources": r} for i, r in enumerate(live)]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: reported)
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


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


def _reported(groups: list[tuple[str, dict[str, float], int]]) -> Any:
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for name, resources, most in groups:
        config.node_group_configs.add(name=name, resources=resources, max_count=most)
    return config


def test_a_search_reads_rays_bootstrap_config_and_counts_trials_per_node(tmp_path, monkeypatch):
    # Only the 2-CPU head is up. 3-CPU trials: none on the head, 2 on each 8-CPU GPU worker, 1 on
    # each 4-CPU worker: 2 × 2 + 3 × 1 = 7 at once (30 CPUs ÷ 3 would say 10, which never fit).
    _cluster(monkeypatch, tmp_path, live=[{"CPU": 2.0}])
    _bootstrap_config(Path.home() / "ray_bootstrap_config.yaml", max_workers=5)
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 3}"), workers=1, search=True) == 7


def test_the_bootstrap_configs_worker_cap_fills_the_nodes_that_hold_most_first(tmp_path, monkeypatch):
    # max_workers 3: the two GPU workers (2 trials each) and one 4-CPU worker (1): 5, not 7.
    _cluster(monkeypatch, tmp_path, live=[{"CPU": 2.0}])
    _bootstrap_config(Path.home() / "ray_bootstrap_config.yaml", max_workers=3)
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 3}"), workers=1, search=True) == 5
    # GPU trials fit only on the GPU workers: one each.
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 1, gpu: 1}"), workers=1, search=True) == 2


def test_a_search_counts_the_node_groups_an_autoscaler_reported_to_the_gcs(tmp_path, monkeypatch):
    # 8-CPU nodes, 4 at most, trials of 6 CPUs: one per node, 4 at once (32 ÷ 6 would say 5).
    _cluster(monkeypatch, tmp_path, live=[{"CPU": 0.0}], reported=_reported([("cpu8", {"CPU": 8}, 4)]))
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 6}"), workers=1, search=True) == 4
    # A group without a maximum (-1): as many as the budget, which caps a search anyway.
    _cluster(monkeypatch, tmp_path, live=[], reported=_reported([("any", {"CPU": 8}, -1)]))
    assert session.concurrency(_spec(tmp_path, SEARCH, "{cpu: 6}"), workers=1, search=True) == 20


def test_max_concurrent_and_table_studies_ignore_the_cluster_size(tmp_path, monkeypatch):
    # The spec's cap wins; a table study stays unbounded, its pending trials being the autoscaler's demand.
    _cluster(monkeypatch, tmp_path, live=[{"CPU": 0.0}], reported=_reported([("cpu2", {"CPU": 2}, 3)]))
    assert session.concurrency(_spec(tmp_path, SEARCH + "max_concurrent: 5\n"), workers=1, search=True) == 5
    assert session.concurrency(_spec(tmp_path, "kind: table\nrows:\n  - {label: A}\n"), workers=1) is None


def test_live_nodes_beyond_the_declared_types_still_count(tmp_path, monkeypatch):
    # A node started by hand beside the declared types: what the cluster holds now is a floor.
    _cluster(monkeypatch, tmp_path, live=[{"CPU": 5.0}], reported=_reported([("cpu2", {"CPU": 2}, 1)]))
    assert session.concurrency(_spec(tmp_path, SEARCH), workers=1, search=True) == 5


def test_an_unreadable_bootstrap_config_is_one_line(tmp_path, monkeypatch):
    # Ray's own file, damaged: a ConfigError naming it, not a traceback or a silent guess.
    from rmaunet.errors import ConfigError

    _cluster(monkeypatch, tmp_path, live=[{"CPU": 3.0}])
    (Path.home() / "ray_bootstrap_config.yaml").write_text("max_workers: [not, a, config\n")
    with pytest.raises(ConfigError, match="ray_bootstrap_config.yaml: cannot read the cluster config"):
        session.concurrency(_spec(tmp_path, SEARCH), workers=1, search=True)
