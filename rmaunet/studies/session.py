"""The Ray side of a study: connecting to a cluster, how many trials run at once, the one
Tuner set-up that table runs and searches share, the tracking callbacks it may carry, and
how a trial hands Tune its selected weights."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rmaunet.errors import ConfigError, RayStartError
from rmaunet.storage import Storage
from rmaunet.studies import worker_logs
from rmaunet.studies.capacity import Capacity, TrialRequest, connected_cluster, this_machine
from rmaunet.studies.spec import StudySpec
from rmaunet.trial_folder import TrialFolder

__all__ = [
    "connect_ray",
    "job_runtime_env",
    "ray_session",
    "concurrency",
    "study_cluster",
    "make_tuner",
    "tracking_callbacks",
    "node_name",
    "report_numbers",
    "report_final",
]

Log = Callable[[str], None]


def job_runtime_env() -> dict[str, Any]:
    """The runtime env of a study's Ray job. Every process of the job (Tune's trial processes,
    Ray Train's controller, which imports TensorFlow, and its workers) runs at normal priority,
    not at the niceness 15 Ray gives workers by default: at 15, beside two busy processes
    at 0, a Train controller was still importing TensorFlow after 6 minutes. `ray job submit`
    merges this with the submission's own runtime env. Worker output reaches the driver (a
    failing trial's traceback lands in the job's log), so TensorFlow's C++ start-up chatter
    is kept to errors unless the caller asked for more, and what workers print as Ray ends
    them is dropped (rmaunet.studies.worker_logs)."""
    from rmaunet.training.distributed import TRAINING_PROCESS_ENV

    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    return {"env_vars": {**TRAINING_PROCESS_ENV, "TF_CPP_MIN_LOG_LEVEL": level}}


def connect_ray(address: str | None, log: Log) -> bool:
    """Connect to RAY_ADDRESS / `address`, or start a local runtime. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = job_runtime_env()
    address = address or os.environ.get("RAY_ADDRESS")
    # Ray's own INFO lines ("Started a local Ray instance…") say what the next line of ours says.
    quiet = {"logging_level": logging.WARNING}
    if address:
        try:
            ray.init(address=address, log_to_driver=True, runtime_env=runtime_env, **quiet)
        except (ValueError, ConnectionError, RuntimeError, TimeoutError) as exc:
            # An HTTP (job API) address in RAY_ADDRESS, a head that is down: Ray says which, in one line.
            raise ConfigError(f"{address}: cannot connect to the Ray cluster ({type(exc).__name__}: {exc})") from None
        worker_logs.install()
        log(f"connected to Ray cluster at {address}")
        return False
    # address="local": a runtime of our own. Without it Ray joins the cluster a `ray start` on
    # this machine last recorded (/tmp/ray/ray_current_cluster), someone else's perhaps.
    # Ray warns in a timestamped line of its own which token-auth mode the runtime took; the
    # line below says it among ours instead.
    auth_setup = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = auth_setup.level
    auth_setup.setLevel(logging.ERROR)
    try:
        _start_local_runtime(
            dict(
                address="local",
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                log_to_driver=True,
                runtime_env=runtime_env,
                **quiet,
            ),
            log,
        )
    finally:
        auth_setup.setLevel(level)
    worker_logs.install()
    cpus = int(ray.cluster_resources().get("CPU", 0))
    node = ray.get_runtime_context().get_node_id()[:8]
    auth = "token auth" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "no token auth"
    log(f"started a local Ray runtime (dashboard on 127.0.0.1, {auth}, {cpus} CPUs) {node}")
    return True


# Ray gives a new node 30 s to register (a constant in ray._private.node) and its dashboard
# RAY_DASHBOARD_STARTUP_TIMEOUT_S (60 s) to come up; a loaded machine can take longer for
# either. Each try starts afresh, after stopping what the failed one started. A busier
# machine may allow more tries: RMAUNET_RAY_START_TRIES (the test suite, whose own Ray
# runtimes load 2 cores to 20 and more while they start, sets 6).
LOCAL_START_TRIES = 3


def start_tries() -> int:
    """How many times a local Ray runtime (or a test's node) may try to start:
    RMAUNET_RAY_START_TRIES, else LOCAL_START_TRIES."""
    text = os.environ.get("RMAUNET_RAY_START_TRIES", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else LOCAL_START_TRIES


# How Ray words each of the two (a bare Exception): the node's timeout, and the dashboard's,
# whose message is the tail of its log, introduced by this sentence.
_SLOW_START = ("timed out during startup", "contains the error message from the dashboard")


def _start_local_runtime(init_kwargs: dict[str, Any], log: Log) -> None:
    import psutil
    import ray

    me = psutil.Process()
    tries = start_tries()
    for attempt in range(1, tries + 1):
        before = {child.pid for child in me.children(recursive=True)}
        try:
            ray.init(**init_kwargs)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for these
            if not any(words in str(exc) for words in _SLOW_START):
                raise
            part = "node" if _SLOW_START[0] in str(exc) else "dashboard"
            for child in me.children(recursive=True):  # the half-started node's GCS, raylet, agents
                if child.pid not in before:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            ray.shutdown()
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            if attempt == tries:
                raise RayStartError(
                    f"a local Ray runtime did not start in {tries} tries (the last: its {part} "
                    f"missed Ray's start-up time; load average {load:.1f}): try again when the machine is less busy"
                ) from None
            log(
                f"the local Ray runtime's {part} did not start in Ray's time (load average {load:.1f}); "
                f"trying again ({attempt + 1} of {tries})"
            )


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


@contextlib.contextmanager
def study_cluster(address: str | None, log: Log) -> Iterator[Capacity]:
    """What a study would run on, read before anything else: the cluster in `address` or
    RAY_ADDRESS (or the one this process is connected to), connected for the whole `with`
    block; without one, this machine as a local runtime would see it, without starting Ray
    (the study starts its runtime when it trains, after the checks)."""
    import ray

    if ray.is_initialized() or address or os.environ.get("RAY_ADDRESS"):
        with ray_session(address, log):
            yield connected_cluster()
    else:
        yield this_machine()


def concurrency(spec: StudySpec, workers: int, *, search: bool = False) -> int | None:
    """Trials at once: the spec's `max_concurrent` (or --max-concurrent) when it sets one.

    Otherwise a table, ladder or leave-one-out study has no limit (None): Tune starts every
    planned training as resources allow, and on an autoscaling cluster the pending trials
    are resource requests that make the autoscaler add nodes (a limit read from the cluster
    at start, which may have no worker node yet, would keep it at one trial). A search
    runs as many trials as the cluster can hold, at least one and at most its budget: its
    sampler learns from finished trials, so it samples no more configurations ahead than can
    train. "Can hold" counts per node what fits on each node type at its largest count, or on
    the live nodes of a static cluster (rmaunet.studies.capacity).
    """
    if spec.max_concurrent:
        return spec.max_concurrent
    if not search:
        return None
    request = TrialRequest(spec.resources["cpu"], spec.resources["gpu"], workers)
    return max(1, min(spec.budget or 1, connected_cluster().trials_at_once(request)))


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
    store's tune/ (Ray opens an s3:// or gs:// store with pyarrow.fs, as rmaunet.storage does).
    `resources` None: the trainable carries its own (tune.with_resources)."""
    import dataclasses

    from ray import tune

    from rmaunet.store import safe_name

    # Tune's own console output (its configuration box, a TensorBoard hint pointing into Ray's
    # temporary session folder rather than at the event files under the store): rmaunet's
    # progress lines say what runs, and the runner names the real TensorBoard folder.
    # verbose=0 silences the legacy reporter only; the newer one prints regardless.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return tune.Tuner(
        trainable if resources is None else tune.with_resources(trainable, resources),
        param_space=param_space,
        # A node's next trial runs in the process the last one left, not a new one: no process
        # start, no second TensorFlow import (bench/cluster_utilisation.py measured about 25 s
        # of a trial's 40 s outside training there). A trial's result does not depend on its
        # process: run_trial resets Keras's state and seeds everything itself.
        tune_config=dataclasses.replace(tune_config, reuse_actors=True),
        run_config=tune.RunConfig(
            name=safe_name(spec.name, "study"),
            storage_path=storage.uri_of("tune"),
            # A trial is retried after every loss of its node or process, without limit (spot
            # preemptions do not use up a budget); errors that repeat are bounded by the trial
            # itself (rmaunet.training.trial.crash_budget), which then records its failure.
            failure_config=tune.FailureConfig(max_failures=-1),
            callbacks=callbacks,
            verbose=0,
        ),
    )


# What Tune adds to every result: bookkeeping, not measurements of a training.
TUNE_INTERNALS = [
    "pid", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore", "timesteps_since_restore",
    "iterations_since_restore", "training_iteration", "done", "date", "hostname", "node_ip", "trial_id",
    "experiment_tag", "checkpoint_dir_name", "should_checkpoint", "config", "rmaunet_finished",
]  # fmt: skip


def tracking_callbacks(
    experiment: str,
    *,
    mlflow: str | None = None,
    wandb: str | None = None,
    factories: Sequence[str] = (),
    storage: str | None = None,
) -> list[Any]:
    """Tune callbacks beside the progress printer: MLflow (rmaunet.studies.tracking: one run
    per training with its parameters, per-epoch validation metrics, final test metrics and
    artifacts, written off Tune's loop), Ray's W&B logger without Tune's bookkeeping as
    metrics and with each trial's selected weights (its Tune checkpoint) uploaded, and
    `module:factory` names, each a callable returning a `ray.tune.Callback` (a Callback
    subclass itself qualifies). `storage`: the study's store, where MLflow's artifacts come from."""
    from ray import tune

    callbacks: list[Any] = []
    if mlflow:
        _require("mlflow", "--mlflow", "mlflow")
        from rmaunet.studies.tracking import MLflowTracking

        callbacks.append(MLflowTracking(mlflow, experiment, storage or "."))
    if wandb:
        _require("wandb", "--wandb", "wandb")
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(
            WandbLoggerCallback(project=wandb, group=experiment, excludes=TUNE_INTERNALS, upload_checkpoints=True)
        )
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
