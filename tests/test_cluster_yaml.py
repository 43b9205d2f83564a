from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_rays_offline_validation():
    # cluster.yaml is accepted by the cluster launcher's own schema checks (no cloud calls).
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    validate_config(config)
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] > workers["min_workers"]  # autoscaling GPU workers
    assert "2.60" in config["docker"]["image"]
    assert any("pip install" in c and "rmaunet" in c for c in config["setup_commands"])
