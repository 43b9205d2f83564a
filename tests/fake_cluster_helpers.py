"""A fake multi-node Ray cluster on this machine, as `ray up cluster.yaml` would bring it up:
a token-authenticated head whose autoscaler starts worker nodes (Ray's fake multi-node
provider, tests/fake_cluster.yaml) and a teardown of only this cluster's processes; the
job client's calls are tests/ray_jobs.py. Shared by tests/test_cluster_up.py and tests/test_autoscale.py."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from ports import free_port
from ray_nodes import HEAD_PORT_FLAGS, run_ray_start, stop_processes

__all__ = ["FAKE_HEAD_NODE_ID", "clean_copy", "running_fake_cluster"]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAKE_CLUSTER = Path(__file__).with_name("fake_cluster.yaml")
NEW_CLUSTER_TOKEN = REPO / "deploy" / "new-cluster-token"
# Ray's fixed id for the fake provider's head (ray.autoscaler._private.fake_multi_node).
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"


def clean_copy(target: Path) -> Path:
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


@contextlib.contextmanager
def running_fake_cluster() -> Iterator[dict[str, Any]]:
    """tests/fake_cluster.yaml brought up as `ray up` would: its config prepared and validated,
    written as the head's bootstrap config, the head start commands run with the token. Yields
    token_path, client_env (a job client's environment, without the token) and authed_env (with it)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    # Short path: Ray's unix sockets live under the temp folder and must stay under ~107 chars.
    folder = Path(tempfile.mkdtemp(prefix="rmf-", dir="/tmp"))
    # A token of this cluster's own, made as docs/cluster.md says (never ~/.ray's, 0600).
    made = subprocess.run(
        [str(NEW_CLUSTER_TOKEN), str(folder / "ray-auth")], capture_output=True, text=True, check=True, timeout=30
    )
    assert made.stdout.strip() == str(folder / "ray-auth" / "auth_token"), made

    # Every listening port of its own, so the cluster runs beside other Ray runtimes.
    ports = {name: free_port() for name in HEAD_PORT_FLAGS}
    gcs_port = free_port()
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
            # The head's home, where `ray up` leaves the cluster's config (ray_bootstrap_config.yaml)
            # for the head's autoscaler and for drivers asking how large the cluster may grow.
            "HOME": str(folder),
            "GCS_PORT": str(gcs_port),
            # The head type's resources, which `ray up`'s updater exports as RAY_OVERRIDE_RESOURCES
            # for the start commands: here an option, since the raylets that the head's autoscaler
            # starts on this machine would inherit the variable and take the head's CPUs (none).
            "RAY_NODE_OPTIONS": " ".join([*(f"--{name}={port}" for name, port in ports.items()), f"--num-cpus={cpus}"]),
        }
    )
    try:
        for command in prepared["head_start_ray_commands"]:
            run_ray_start(["bash", "-c", command], env=env, temp=folder / "ray")
        client = {k: v for k, v in env.items() if k != "RAY_FAKE_CLUSTER"}
        client.update({"RAY_ADDRESS": f"http://127.0.0.1:{ports['dashboard-port']}", "HOME": os.environ["HOME"]})
        token_path = folder / "ray-auth" / "auth_token"
        authed = {**client, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
        yield {"token_path": token_path, "client_env": client, "authed_env": authed}
    finally:
        stop_processes(folder)
        shutil.rmtree(folder, ignore_errors=True)
