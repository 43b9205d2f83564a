"""Ray Train's multi-worker TensorFlow set-up, without TensorFlow in Ray Train's controller.

A Ray Train run has a controller process (an actor) that starts the worker group, and the
backend config is unpickled there. Ray's TensorflowConfig lives in the package
ray.train.tensorflow, whose __init__ imports TensorFlow: every data-parallel trial's
controller paid a TensorFlow import (about 17 s of CPU and 600 MB of memory on a loaded
2-core machine, measured with ps) to do what needs none of it. This backend does the
same work from a module that imports nothing heavy: before training, each worker gets
TF_CONFIG naming every worker's address and its own index, which
MultiWorkerMirroredStrategy reads (rmaunet.training.loop creates it in the workers).
Unlike Ray's, it leaves TF_USE_LEGACY_KERAS alone: rmaunet runs on Keras 3.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from ray.train.backend import Backend, BackendConfig

__all__ = ["MultiWorkerTFConfig", "tf_config"]


def _worker_address() -> str:
    """This worker's node IP and a port free on it, as TensorFlow's cluster spec writes them."""
    import ray

    ip = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def tf_config(addresses: list[str], index: int) -> dict[str, Any]:
    """TF_CONFIG for worker `index` of the group whose workers listen at `addresses`."""
    return {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}


def _set_tf_config(addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps(tf_config(addresses, index))


class _MultiWorkerTFBackend(Backend):
    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        import ray

        addresses = worker_group.execute(_worker_address)
        ray.get([worker_group.execute_single_async(i, _set_tf_config, addresses, i) for i in range(len(addresses))])


class MultiWorkerTFConfig(BackendConfig):
    """The backend config for rmaunet's data-parallel runs (DataParallelTrainer)."""

    @property
    def backend_cls(self) -> type[Backend]:
        return _MultiWorkerTFBackend
