"""The Ray side of a study: connecting to a cluster, how many trials run at once, and
the one Tuner set-up that table runs and searches share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from rmaunet.studies.spec import StudySpec

__all__ = ["connect_ray", "ray_session", "concurrency", "make_tuner", "node_name", "report_numbers"]

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
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        log(f"connected to Ray cluster at {address}")
        return False
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True, runtime_env=runtime_env)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    log(f"started a local Ray runtime (dashboard on 127.0.0.1, {cpus} CPUs) {ray.get_runtime_context().get_node_id()[:8]}")
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


def concurrency(spec: StudySpec, workers: int) -> int:
    """Trials at once: the spec's max_concurrent, else as many as the cluster's GPUs (or
    CPUs) hold at the spec's per-trial resources times `workers`."""
    import ray

    if spec.max_concurrent:
        return spec.max_concurrent
    total = ray.cluster_resources()
    gpu = spec.resources["gpu"]
    if gpu > 0:
        return max(1, int(total.get("GPU", 0) // max(gpu * workers, 1e-9)))
    return max(1, int(total.get("CPU", 1) // max(spec.resources["cpu"] * workers, 1e-9)))


def make_tuner(
    trainable: Any, resources: dict[str, float], *, spec: StudySpec, storage: Path, callbacks: list[Any],
    tune_config: Any, param_space: dict[str, Any] | None = None,
) -> Any:
    """The Tuner every study kind runs: its experiment folder under the store's tune/."""
    from ray import tune

    from rmaunet.store import safe_name

    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=safe_name(spec.name, "study"),
            storage_path=str(storage / "tune"),
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def node_name() -> str:
    """Host and Ray node id: several simulated nodes share one host name."""
    import socket

    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def report_numbers(row: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of an epoch row: what Tune's result dict carries."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
