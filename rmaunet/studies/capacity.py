"""What a cluster can run: the nodes it has and the nodes its autoscaler can add, and how many
trials of a request fit on them, counted per node (one trial's CPUs and GPU sit on one node, so
8-CPU nodes hold one 6-CPU trial each, not 8/6 of one).

Where the node types come from, the first source that answers:
- a cluster config an autoscaler reported to the GCS (Ray's ClusterConfig: node groups, each
  with per-node resources and a maximum count; Ray 2.60's own autoscalers report none, but Ray
  Data and Ray Train read it where one is);
- `ray up`'s config on the head (~/ray_bootstrap_config.yaml), where `ray job submit` runs a
  study's driver: `available_node_types` and the cluster-wide `max_workers`;
- on KubeRay, the RayCluster itself, read from the Kubernetes API with the pod's service
  account and turned into node types by Ray's own KubeRay autoscaler code (worker groups'
  maxReplicas × numOfHosts, resources from rayStartParams or the Ray container's limits).
The nodes alive now always count too; on a static cluster they are all there is. Without a
Ray connection the cluster is this machine, as a local Ray runtime would see it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmaunet.errors import ConfigError
from rmaunet.studies.spec import StudySpec

__all__ = [
    "NodeType",
    "Capacity",
    "TrialRequest",
    "trial_requests",
    "check_requests",
    "from_autoscaling_config",
    "from_cluster_config",
    "from_raycluster",
    "from_live_nodes",
    "this_machine",
    "connected_cluster",
    "BOOTSTRAP_CONFIG",
    "SERVICE_ACCOUNT",
    "UNBOUNDED",
]

# `ray up` writes the cluster's config here on the head; the head's autoscaler reads it
# (--autoscaling-config) and Tune takes it as the sign of an autoscaling cluster.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
# What Kubernetes mounts into every pod: the service account's token, CA and namespace.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# KubeRay sets this in every Ray container: the RayCluster the pod belongs to.
RAYCLUSTER_ENV = "RAY_CLUSTER_NAME"
# A count no cluster reaches: an autoscaler group without a maximum.
UNBOUNDED = sys.maxsize


@dataclass(frozen=True)
class NodeType:
    """Nodes of one kind: each holds `resources`; the cluster has or can start `count` of them.
    A head is not a worker: the cluster-wide cap on worker nodes does not count it."""

    name: str
    resources: Mapping[str, float]
    count: int
    worker: bool = True

    def holds(self, bundle: Mapping[str, float]) -> int:
        """How many `bundle`s fit on one node of this type."""
        asked = {name: amount for name, amount in bundle.items() if amount > 0}
        if not asked:
            return UNBOUNDED
        return min(int(self.resources.get(name, 0.0) / amount + 1e-9) for name, amount in asked.items())


@dataclass(frozen=True)
class TrialRequest:
    """What one trial holds: `workers` bundles of `cpu` CPUs and `gpu` GPUs (one for a trial that
    trains in its own process; one per Ray Train worker for a data-parallel row)."""

    cpu: float
    gpu: float
    workers: int = 1

    @property
    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpu, "GPU": self.gpu}

    def __str__(self) -> str:
        each = f"cpu={_number(self.cpu)},gpu={_number(self.gpu)}"
        return each if self.workers == 1 else f"{self.workers} workers × {each}"


@dataclass(frozen=True)
class Capacity:
    """A cluster's node types (`scalable`: at their largest counts, at most `max_workers` worker
    nodes of all types together) and its live nodes; `source` says where they were read."""

    source: str
    scalable: tuple[NodeType, ...] = ()
    max_workers: int | None = None
    live: tuple[NodeType, ...] = ()
    # False where the cluster may start nodes that could not be read (KubeRay, its RayCluster
    # unreadable): then nothing is refused, and the live nodes only give the concurrency.
    complete: bool = True

    def trials_at_once(self, request: TrialRequest) -> int:
        """How many such trials the cluster holds at once, at its largest size or as it is now,
        whichever holds more (a declared size may leave out nodes that were started by hand)."""
        bundles = max(_pack(self.scalable, request.bundle, self.max_workers), _pack(self.live, request.bundle, None))
        return bundles // request.workers

    def largest_offer(self) -> dict[str, float]:
        """The CPUs and GPUs of the node richest in GPUs, then CPUs: the most one trial can ask."""
        nodes = [t for t in (*self.scalable, *self.live) if t.count > 0] or [NodeType("none", {}, 1)]
        best = max(nodes, key=lambda t: (t.resources.get("GPU", 0.0), t.resources.get("CPU", 0.0)))
        return {"cpu": best.resources.get("CPU", 0.0), "gpu": best.resources.get("GPU", 0.0)}

    def describe(self) -> str:
        """One line: each node type with its per-node CPUs and GPUs and how many there can be."""
        parts = [
            f"{t.name} {_offer(t.resources)}" + (f" ×0-{_count(t.count)}" if t.worker else "") for t in self.scalable
        ]
        workers = sum(t.count for t in self.scalable if t.worker)
        if self.max_workers is not None and self.max_workers < workers:
            parts.append(f"at most {_count(self.max_workers)} worker nodes")
        live: dict[str, int] = {}
        for node in self.live:
            live[_offer(node.resources)] = live.get(_offer(node.resources), 0) + 1
        alive = ", ".join(f"{n} × {offer}" for offer, n in live.items()) or "none"
        return f"{self.source}: " + ("; ".join(parts) + f"; live nodes: {alive}" if parts else f"nodes {alive}")


def _pack(types: Iterable[NodeType], bundle: Mapping[str, float], max_workers: int | None) -> int:
    """Bundles that fit on `types` at their counts, filling the worker nodes that hold the most
    first within the cap (the autoscaler may pick others; this is the most the cluster holds)."""
    ranked = sorted(types, key=lambda t: t.holds(bundle), reverse=True)
    left = UNBOUNDED if max_workers is None else max_workers
    total = 0
    for node_type in ranked:
        nodes = min(node_type.count, left) if node_type.worker else node_type.count
        if node_type.worker:
            left -= nodes
        total += node_type.holds(bundle) * nodes
    return min(total, UNBOUNDED)


def _number(value: float) -> str:
    return f"{value:g}"


def _count(value: int) -> str:
    return "∞" if value >= UNBOUNDED else str(value)


def _offer(resources: Mapping[str, float]) -> str:
    return f"cpu={_number(resources.get('CPU', 0.0))},gpu={_number(resources.get('GPU', 0.0))}"


# --------------------------------------------------------------------------- requests and the check
def trial_requests(spec: StudySpec) -> list[tuple[str, TrialRequest]]:
    """Each row's request, as studies/grid.py and studies/search.py ask Tune for it: a trial
    training in its own process holds resources.cpu / gpu; a data-parallel row (its own
    num_workers, else resources.workers > 1) holds one bundle per Ray Train worker, each of the
    whole CPUs and one GPU if any (Ray Train's ScalingConfig). A search's trials are one kind."""
    cpu, gpu, workers = spec.resources["cpu"], spec.resources["gpu"], int(spec.resources["workers"])
    if spec.kind == "search":
        return [("search trials", TrialRequest(cpu, gpu))]
    out = []
    for row in spec.rows:
        n = row.config.num_workers if row.config.num_workers > 1 else workers
        out.append((row.label, TrialRequest(cpu, gpu) if n == 1 else TrialRequest(max(1, int(cpu)), min(gpu, 1), n)))
    return out


def check_requests(spec: StudySpec, capacity: Capacity) -> None:
    """One ConfigError line, before any trial starts, when a row asks what no node the cluster
    has or can start offers: it would wait forever for a node that never comes."""
    refused = [(label, request) for label, request in trial_requests(spec) if capacity.trials_at_once(request) < 1]
    if not refused or not capacity.complete:
        return
    label, request = refused[0]
    others = f" (and {len(refused) - 1} more rows)" if len(refused) > 1 else ""
    offer = capacity.largest_offer()
    fits = {"cpu": min(request.cpu, offer["cpu"]), "gpu": min(request.gpu, offer["gpu"])}
    override = f"--resources cpu={_number(fits['cpu'])},gpu={_number(fits['gpu'])}"
    if request.workers > 1:
        override += f",workers={max(1, capacity.trials_at_once(TrialRequest(fits['cpu'], fits['gpu'])))}"
    raise ConfigError(
        f"{spec.path}: row {label!r}{others} asks {request} per trial, which no node offers "
        f"({capacity.describe()}): pass {override} (or --smoke) to run it on this cluster"
    )


# --------------------------------------------------------------------------- where node types come from
def from_autoscaling_config(config: Mapping[str, Any], source: str) -> tuple[tuple[NodeType, ...], int | None]:
    """Node types of an autoscaling config (`ray up`'s, or the one Ray derives from a RayCluster):
    the head once, each type at its max_workers (none without one: Ray's autoscaler reads it so)."""
    try:
        node_types: Mapping[str, Any] = config["available_node_types"]
        head = config["head_node_type"]
        types = [NodeType(head, _resources(node_types[head].get("resources")), 1, worker=False)]
        for name, node_type in node_types.items():
            most = int(node_type.get("max_workers", 0))
            if most > 0:
                types.append(NodeType(name, _resources(node_type.get("resources")), most))
        cap = config.get("max_workers")
        return tuple(types), None if cap is None else int(cap)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{source}: not a cluster config ({type(exc).__name__}: {exc})") from None


def _resources(value: Any) -> dict[str, float]:
    return {str(name): float(amount) for name, amount in (value or {}).items()}


def from_cluster_config(config: Any) -> tuple[NodeType, ...]:
    """Node groups of Ray's ClusterConfig proto (what an autoscaler reports to the GCS); a
    negative max_count is a group without a maximum."""
    return tuple(
        NodeType(
            group.name or f"group {index}",
            _resources(dict(group.resources)),
            UNBOUNDED if group.max_count < 0 else int(group.max_count),
        )
        for index, group in enumerate(config.node_group_configs)
    )


def from_raycluster(raycluster: Mapping[str, Any]) -> tuple[tuple[NodeType, ...], int | None]:
    """A RayCluster's head and worker groups as node types, read exactly as Ray's KubeRay
    autoscaler reads them (its own conversion into an autoscaling config)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    name = raycluster.get("metadata", {}).get("name", "?")
    try:
        config = _derive_autoscaling_config_from_ray_cr(raycluster)
    except Exception as exc:  # Ray's conversion raises what it meets (KeyError, ValueError, schema errors)
        raise ConfigError(f"RayCluster {name}: Ray cannot read its groups ({type(exc).__name__}: {exc})") from None
    return from_autoscaling_config(config, f"RayCluster {name}")


def from_live_nodes(nodes: Iterable[Mapping[str, Any]]) -> tuple[NodeType, ...]:
    """The nodes alive now (`ray.nodes()` entries), one type each."""
    return tuple(
        NodeType(f"node {str(n.get('NodeID', ''))[:8]}", _resources(n.get("Resources")), 1)
        for n in nodes
        if n.get("Alive")
    )


def this_machine() -> Capacity:
    """This machine as `ray.init(address="local")` would see it (the CPUs and GPUs Ray detects,
    RAY_OVERRIDE_RESOURCES included), without starting Ray: what `study run` without a cluster
    address would run on."""
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec

    resources = ResourceAndLabelSpec().resolve(is_head=True).to_resource_dict()
    return Capacity("this machine", live=(NodeType("this machine", _resources(resources), 1),))


def connected_cluster() -> Capacity:
    """The cluster this process is connected to: its node types from the first source that
    answers (module docstring), and its live nodes."""
    import ray

    live = from_live_nodes(ray.nodes())
    reported = _reported_cluster_config()
    if reported:
        return Capacity("node groups the autoscaler reported", reported, None, live)
    bootstrap = BOOTSTRAP_CONFIG.expanduser()
    if bootstrap.is_file():
        import yaml

        try:
            config = yaml.safe_load(bootstrap.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{bootstrap}: cannot read the cluster config ({type(exc).__name__})") from None
        types, cap = from_autoscaling_config(config, str(bootstrap))
        return Capacity(f"ray up node types ({BOOTSTRAP_CONFIG})", types, cap, live)
    cluster = os.environ.get(RAYCLUSTER_ENV)
    if cluster and (SERVICE_ACCOUNT / "token").is_file():
        raycluster, why = _read_raycluster(cluster)
        if raycluster is not None:
            types, cap = from_raycluster(raycluster)
            return Capacity(f"KubeRay worker groups (RayCluster {cluster})", types, cap, live)
        # Its groups may hold what the live nodes lack: say why they are unknown and refuse nothing.
        return Capacity(f"RayCluster {cluster}, groups unreadable ({why}): live nodes only", live=live, complete=False)
    return Capacity("static cluster (no autoscaler config found)", live=live)


def _reported_cluster_config() -> tuple[NodeType, ...]:
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # a private API, which another Ray may lack or change: the next source answers
        return ()
    return from_cluster_config(config) if config is not None else ()


def _read_raycluster(name: str) -> tuple[dict[str, Any] | None, str]:
    """The RayCluster `name` in this pod's namespace through the Kubernetes API, as Ray's KubeRay
    autoscaler reads it (its HTTP client, the service account's token and CA); None and why when
    the API refuses (the head's service account needs `get` on rayclusters)."""
    from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

    try:
        namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
        return KubernetesHttpApiClient(namespace).get(f"rayclusters/{name}"), ""
    except Exception as exc:  # requests' and the file system's errors: the live nodes still answer
        return None, f"{type(exc).__name__}: {exc}"
