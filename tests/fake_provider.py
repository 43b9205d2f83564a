"""Ray's fake multi-node provider with a disk of its own per node (tests/fake_cluster.yaml).

Ray 2.60's FakeMultiNodeProvider starts every worker raylet in the head's temporary folder, so
all nodes share one runtime_resources folder. A job's working directory is unpacked there by
each node's runtime-env agent with overwrite=True (ray/_private/runtime_env/working_dir.py):
the first trial on a new node deletes and re-creates the folder the job's driver runs in, and
the driver's next os.getcwd() fails (seen here: Tune's ExperimentAnalysis at the end of a
study). On a real cluster every node has its own disk; so does every node here.

Its node ids also differ in their first digits, as real (random) ones do: upstream's differ only
in the last five, so the short id a study row records as its `node` read the same on every node.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import ray._private.parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

__all__ = ["OwnDiskFakeMultiNodeProvider"]


class OwnDiskFakeMultiNodeProvider(FakeMultiNodeProvider):
    """Each worker node gets the temporary folder `<provider_config.node_temp_root>/n<k>` and an id
    whose first eight digits are its own."""

    _node_numbers = itertools.count(1)

    def _next_hex_node_id(self) -> str:
        # Called under the provider's lock, as upstream's; 56 hex digits, never the head's (f…f00000).
        self._next_node_id += 1
        return f"{self._next_node_id:08x}" + "f" * 48

    def _create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, Any],
        labels: dict[str, str],
    ) -> None:
        temp_dir = os.path.join(self.provider_config["node_temp_root"], f"n{next(self._node_numbers)}")
        upstream = ray._private.parameter.RayParams

        def own_temp_dir(*args: Any, **kwargs: Any) -> Any:
            return upstream(*args, temp_dir=temp_dir, **kwargs)

        # The upstream method builds its RayParams inline; the provider's lock keeps this swap
        # to one node at a time, and nothing else in the autoscaler's process builds RayParams.
        with self.lock:
            ray._private.parameter.RayParams = own_temp_dir
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                ray._private.parameter.RayParams = upstream
