"""cluster.yaml (AWS) and cluster-gcp.yaml pass Ray's own offline validation and keep the
properties that make them come up: the project image, token auth everywhere, no bulk sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTERS = ("cluster.yaml", "cluster-gcp.yaml")
TOKEN_DIR = "/home/ray/ray-auth"


def _prepared(name: str) -> dict:
    """The config after the cluster launcher's own defaults and schema checks (no cloud calls)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / name).read_text()))
    validate_config(config)
    return config


def _project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_config_passes_rays_offline_validation(name):
    # Ray's schema accepts the file, with autoscaling GPU workers beside a head that trains nothing.
    config = _prepared(name)
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = nodes["gpu_worker"]
    assert workers["max_workers"] > workers["min_workers"] == 0


@pytest.mark.parametrize("name", CLUSTERS)
def test_nodes_run_the_project_image_and_install_nothing_at_boot(name):
    # The Dockerfile's image at the project's version; no pip install on any node.
    config = _prepared(name)
    assert config["docker"]["image"].endswith(f"/rmaunet:{_project_version()}")
    commands = [
        c
        for key in (
            "initialization_commands",
            "setup_commands",
            "head_setup_commands",
            "worker_setup_commands",
            "head_start_ray_commands",
            "worker_start_ray_commands",
        )
        for c in config.get(key) or []
    ]
    assert not any("pip install" in c for c in commands), commands


@pytest.mark.parametrize("name", CLUSTERS)
def test_token_auth_is_on_for_the_head_and_every_worker(name):
    # One token folder mounted on every node; both start commands set token mode and its path.
    config = _prepared(name)
    assert set(config["file_mounts"]) == {TOKEN_DIR}
    assert config["file_mounts"][TOKEN_DIR].startswith("~/")  # the user's own, outside the repository
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start, key
        assert f"RAY_AUTH_TOKEN_PATH={TOKEN_DIR}/auth_token" in start, key
    # The head's dashboard / job API listens on the node itself only (reached through an SSH tunnel).
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head


@pytest.mark.parametrize("name", CLUSTERS)
def test_syncs_never_carry_virtualenvs_demo_output_data_or_caches(name):
    # rsync excludes what `make demo` and local runs leave behind, and honours .gitignore files.
    config = _prepared(name)
    excluded = {p.strip("/") for p in config["rsync_exclude"]}
    assert {".venv", ".demo", "data", "__pycache__", ".pytest_cache"} <= excluded
    assert config["rsync_filter"] == [".gitignore"]


@pytest.mark.parametrize("name", CLUSTERS)
def test_an_optional_spot_worker_type_is_there_and_off(name):
    # Spot / preemptible GPU workers exist as a node type, off until max_workers is raised.
    config = _prepared(name)
    spot = config["available_node_types"]["gpu_worker_spot"]
    assert spot["max_workers"] == 0
    node = spot["node_config"]
    if config["provider"]["type"] == "aws":
        assert node["InstanceMarketOptions"]["MarketType"] == "spot"
    else:
        assert node["scheduling"]["provisioningModel"] == "SPOT"


def test_aws_cluster_uses_a_maintained_ami_instance_profiles_and_its_security_group():
    # AMI looked up at launch from AWS's public parameter; S3 through instance profiles; a named group.
    config = _prepared("cluster.yaml")
    assert config["provider"]["security_group"]["GroupName"] == "rmaunet-cluster"
    assert config["provider"]["security_group"]["IpPermissions"] == []  # nothing public beyond Ray's SSH rule
    for name, node in config["available_node_types"].items():
        image = node["node_config"]["ImageId"]
        assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/"), name
        assert "IamInstanceProfile" in node["node_config"], name


def test_gcp_workers_have_a_gpu_and_their_own_storage_service_account():
    # GCE GPU workers: one accelerator, no live migration, the workers' bucket-only account
    # (not the head's, which may create VMs).
    config = _prepared("cluster-gcp.yaml")
    for name in ("gpu_worker", "gpu_worker_spot"):
        node = config["available_node_types"][name]["node_config"]
        assert node["guestAccelerators"][0]["acceleratorCount"] == 1
        assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"
        assert node["serviceAccounts"][0]["email"].startswith("rmaunet-worker@")


@pytest.mark.parametrize("name", [*CLUSTERS, "k8s/raycluster.yaml", "k8s/rayjob.yaml", "docs/cluster.md"])
def test_configs_keep_results_in_a_bucket_and_say_so(name):
    # s3:// and gs:// storage work (tests/test_multinode.py): the configs keep results and data in
    # a bucket, not on a shared disk they would have to mount, and no comment says otherwise.
    text = (REPO / name).read_text()
    assert "not yet supported" not in text
    if name != "docs/cluster.md":  # the guide also says how to use a shared file system instead
        assert "/mnt/shared" not in text and re.search(r"--storage (s3|gs)://your-bucket/results", text)


def test_the_aws_extra_brings_the_launchers_sdk():
    # `ray up cluster.yaml` needs boto3: the aws extra names it (and gcp the Google API client).
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11 on")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("boto3") for r in extras["aws"])
    assert any(r.startswith("google-api-python-client") for r in extras["gcp"])
