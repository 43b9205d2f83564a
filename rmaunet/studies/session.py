"""The Ray side of a study: connecting to a cluster, how many trials run at once, the one
Tuner set-up that table runs and searches share, the tracking callbacks it may carry, and
how a trial hands Tune its selected weights."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rmaunet.errors import ConfigError, one_line
from rmaunet.storage import Storage
from rmaunet.studies.spec import StudySpec
from rmaunet.trial_folder import TrialFolder

__all__ = [
    "connect_ray",
    "ray_session",
    "concurrency",
    "max_cluster_resources",
    "make_tuner",
    "tracking_callbacks",
    "node_name",
    "report_numbers",
    "report_final",
]

Log = Callable[[str], None]
# Trainings a Tune trial may be retried after its process died (node lost, killed).
TRIAL_RETRIES = 2


def connect_ray(address: str | None, log: Log) -> bool:
    """Connect to RAY_ADDRESS / `address`, or start a local runtime. True if we started it."""
    import ray

    from rmaunet.training.distributed import TRAINING_PROCESS_ENV

    if ray.is_initialized():
        return False
    # Every process of this job (Tune trials train in theirs) runs at normal priority, not
    # at the niceness 15 Ray gives workers by default. `ray job submit` merges this with
    # the submission's own runtime env. Worker output reaches the driver (a failing trial's
    # traceback lands in the job's log), so TensorFlow's C++ start-up chatter is kept to
    # errors unless the caller asked for more.
    runtime_env = {
        "env_vars": {**TRAINING_PROCESS_ENV, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    }
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        except (ConnectionError, ValueError) as exc:  # "auto" with no cluster on this machine, a refused client
            raise ConfigError(f"Ray address {address}: cannot connect ({one_line(exc, 300)})") from None
        log(f"connected to Ray cluster at {address}")
        return False
    # address="local": a runtime of our own. Without it Ray joins the cluster a `ray start` on
    # this machine last recorded (/tmp/ray/ray_current_cluster), someone else's perhaps.
    ray.init(
        address="local",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
        runtime_env=runtime_env,
    )
    cpus = int(ray.cluster_resources().get("CPU", 0))
    node = ray.get_runtime_context().get_node_id()[:8]
    log(f"started a local Ray runtime (dashboard on 127.0.0.1, {cpus} CPUs) {node}")
    return True


class ray_session:  # noqa: N801 - used as a `with` statement
    """`with ray_session(address, log):` connects, and shuts down only a runtime it started."""

    def __init__(self, address: str | None, log: Log) -> None:
        self.address, self.log = address, log
        self.started_here = False

    def __enter__(self) -> ray_session:
        self.started_here = connect_ray(self.address, self.log)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started_here:
            import ray

            ray.shutdown()


def concurrency(spec: StudySpec, workers: int, *, search: bool = False) -> int | None:
    """Trials at once: the spec's `max_concurrent` when it sets one.

    Otherwise a table, ladder or leave-one-out study has no limit (None): Tune starts every
    planned training as resources allow, and on an autoscaling cluster the pending trials
    are resource requests that make the autoscaler add nodes (a limit read from the cluster
    at start, which may have no worker node yet, would keep it at one trial). A search
    runs as many trials as the cluster can hold, at least one: its sampler learns from
    finished trials, so it samples no more configurations ahead than can train. "Can hold"
    is the cluster's largest size where its autoscaler declares one (max_cluster_resources),
    else what it holds now.
    """
    import ray

    if spec.max_concurrent:
        return spec.max_concurrent
    if not search:
        return None
    gpu = spec.resources["gpu"]
    resource, per_trial = ("GPU", gpu * workers) if gpu > 0 else ("CPU", spec.resources["cpu"] * workers)
    now = float(ray.cluster_resources().get(resource, 0))
    most = (max_cluster_resources() or {}).get(resource, 0.0)
    return max(1, int(max(now, most) // max(per_trial, 1e-9)))


# `ray up` writes the cluster's config here on the head, where `ray job submit` runs a study's
# driver; the head's autoscaler reads it (--autoscaling-config) and Tune takes it as the sign
# of an autoscaling cluster (ray.tune.execution.cluster_info).
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


def max_cluster_resources() -> dict[str, float] | None:
    """Each resource's total at the cluster's largest size, where an autoscaler declares one:
    the cluster config it reported to the GCS (what Ray Data and Ray Train read; Ray 2.60's
    own autoscaler does not report one), else `ray up`'s config on the head. None otherwise."""
    try:
        import ray._private.state

        reported = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # a private API, which another Ray may lack or change: the next source answers
        reported = None
    if reported:
        return {name: float(value) for name, value in reported.items()}
    return bootstrap_max_resources(BOOTSTRAP_CONFIG.expanduser())


def bootstrap_max_resources(path: Path) -> dict[str, float] | None:
    """The head's resources plus the most its worker node types can add within the config's
    max_workers (a cap on worker nodes of all types together). None when `path` is not a
    readable cluster config: it is Ray's file, and the caller falls back to current resources."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
        node_types: dict[str, Any] = config["available_node_types"]
        head = node_types[config["head_node_type"]]
        totals = {name: float(value) for name, value in head.get("resources", {}).items()}
        worker_cap = config.get("max_workers", sys.maxsize)
        for resource in {name for node_type in node_types.values() for name in node_type.get("resources", {})}:
            # The nodes richest in this resource first, as many as the cluster-wide cap allows.
            # A type without max_workers adds none: Ray's autoscaler reads it the same way.
            offers = sorted(
                (
                    (float(t.get("resources", {}).get(resource, 0)), int(t.get("max_workers", 0)))
                    for t in node_types.values()
                ),
                reverse=True,
            )
            left = worker_cap
            for per_node, count in offers:
                taken = min(count, left)
                totals[resource] = totals.get(resource, 0.0) + per_node * taken
                left -= taken
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return totals


def make_tuner(
    trainable: Any,
    resources: Any,
    *,
    spec: StudySpec,
    storage: Storage,
    callbacks: list[Any],
    tune_config: Any,
    param_space: dict[str, Any] | None = None,
) -> Any:
    """The Tuner every study kind runs: its experiment state and trial checkpoints under the
    store's tune/ (Ray opens an s3:// or gs:// store with pyarrow.fs, as rmaunet.storage does)."""
    import dataclasses

    from ray import tune

    from rmaunet.store import safe_name

    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        # A node's next trial runs in the process the last one left, not a new one: no process
        # start, no second TensorFlow import (bench/cluster_utilisation.py measured about 25 s
        # of a trial's 40 s outside training there). A trial's result does not depend on its
        # process: run_trial resets Keras's state and seeds everything itself.
        tune_config=dataclasses.replace(tune_config, reuse_actors=True),
        run_config=tune.RunConfig(
            name=safe_name(spec.name, "study"),
            storage_path=storage.uri_of("tune"),
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def tracking_callbacks(
    experiment: str, *, mlflow: str | None = None, wandb: str | None = None, factories: Sequence[str] = ()
) -> list[Any]:
    """Tune callbacks beside the progress printer: Ray's own MLflow and W&B loggers (one
    run per trial: its config, every reported result per step) and `module:factory` names,
    each a callable returning a `ray.tune.Callback` (a Callback subclass itself qualifies)."""
    from ray import tune

    callbacks: list[Any] = []
    if mlflow:
        _require("mlflow", "--mlflow", "mlflow")
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(tracking_uri=mlflow, experiment_name=experiment, tags={"study": experiment})
        )
    if wandb:
        _require("wandb", "--wandb", "wandb")
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=wandb, group=experiment))
    for name in factories:
        module_name, sep, attribute = name.partition(":")
        if not (sep and module_name and attribute):
            raise ConfigError(f"--tune-callback {name}: expected MODULE:FACTORY, e.g. mypackage.tracking:make_callback")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--tune-callback {name}: cannot import it ({type(exc).__name__}: {exc})") from None
        try:
            callback = factory()
        except Exception as exc:  # arguments it needs, or its own failure: the user's code, one line
            raise ConfigError(f"--tune-callback {name}: calling it failed ({type(exc).__name__}: {exc})") from None
        if not isinstance(callback, tune.Callback):
            raise ConfigError(f"--tune-callback {name}: returned {type(callback).__name__}, not a ray.tune.Callback")
        callbacks.append(callback)
    return callbacks


def _require(module: str, option: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{option} needs the {module} package: pip install 'rmaunet[{extra}]'")


def report_final(metrics: dict[str, Any], folder: TrialFolder) -> None:
    """A trial's last Tune report, with its selected weights registered as the trial's
    checkpoint (best.weights.h5 and config.json): `ResultGrid.get_best_result(…).checkpoint`
    opens them. Tune copies the checkpoint into its experiment folder (the store's tune/)."""
    from ray import tune

    if not folder.best_weights.is_file():  # a trial that failed before its first validation
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="rmaunet-checkpoint-") as staging:
        for path in (folder.best_weights, folder.config):
            if path.is_file():
                shutil.copy2(path, staging)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staging))


def node_name() -> str:
    """Host and Ray node id: several simulated nodes share one host name."""
    import socket

    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def report_numbers(row: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of an epoch row: what Tune's result dict carries."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
