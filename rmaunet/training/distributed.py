"""N workers, one trial: the training loop on Ray Train's data-parallel trainer.

Every worker runs `rmaunet.training.loop.TrialLoop` as rank r of N (how N workers train
what one worker would is explained there). This module adds what a worker group needs
around it: each epoch's checkpoint goes to Ray Train (so another node can resume from
it), every rank reports a SHA-256 of its weights and optimizer state after every epoch,
and the driver fails the trial with a clear reason when they differ. Rank 0 alone
evaluates, keeps the best epoch's weights and, in the last epoch, scores test once;
the driver copies the final checkpoint's trial files into the trial folder.

Measured here (2 CPU workers, global batch 8, 2 epochs): with synchronised BatchNorm the
final weights differ from the 1-worker run's by 1e-5 of the distance one epoch moves
them and all ranks stay bit-identical; without it they differ by 0.34 of that distance
and the ranks' weights no longer agree.

Ray Train's controller gets rmaunet.training.tf_backend's backend config, not Ray's
TensorflowConfig, whose package imports TensorFlow into the controller. Environment variables
TensorFlow reads at import time are set through the run's `worker_runtime_env`, not inside
the loop: a worker may have imported TensorFlow before the loop runs.
"""

from __future__ import annotations

import os
import queue as queue_module
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError
from rmaunet.storage import is_uri
from rmaunet.training.checkpoint import EpochCheckpoint
from rmaunet.training.loop import TrialLoop, maybe_inject_failure, wants_deterministic_ops
from rmaunet.training.result import TrialResult, write_result
from rmaunet.trial_folder import TrialFolder

__all__ = [
    "run_data_parallel",
    "worker_env",
    "drifted_epochs",
    "describe_failure",
    "WorkersLostError",
    "TRAINING_PROCESS_ENV",
]

Reporter = Callable[[dict[str, Any]], None]

# Read by Ray's core worker when a worker process starts (ray_config_def.h, default 15).
TRAINING_PROCESS_ENV = {"RAY_worker_niceness": "0"}

_ABORT_WAIT_S = 120.0  # how long an aborted run may take to release its workers


class WorkersLostError(ConnectionError):
    """The run's workers lost their places on the cluster in a way Ray Train does not retry:
    its controller could no longer schedule them (their placement group removed, a node
    gone with them) before it could restart the group. The cluster's doing, not the trial's:
    a ConnectionError, so rmaunet.training.trial.crash_budget passes it to Tune uncounted,
    and Tune runs the trial again, which resumes from the run's last checkpoint. A trial
    that keeps losing its workers without finishing another epoch is ended by
    rmaunet.training.trial.no_progress_verdict."""


def worker_env(use_gpu: bool, cpus_per_worker: int) -> dict[str, str]:
    """Environment TensorFlow must see when it is first imported in a worker process."""
    env = {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Workers share the node's cores: without a cap every worker starts one thread per
        # core and N workers oversubscribe the CPU N times.
        "TF_NUM_INTRAOP_THREADS": str(max(cpus_per_worker, 1)),
        "TF_NUM_INTEROP_THREADS": str(max(min(cpus_per_worker, 2), 1)),
        # Ray starts worker processes at niceness 15, so the raylet stays responsive under
        # load. A training worker is the node's main work: at 15 it yields its cores to
        # every other process on the node (bench/overhead.py's platform run lost a fifth
        # of its speed on a shared 2-core machine). Ray's job supervisor runs at 0 this way.
        **TRAINING_PROCESS_ENV,
    }
    if os.environ.get("RMAUNET_FAIL_AFTER_EPOCH"):  # fault injection (tests) reaches the workers too
        env["RMAUNET_FAIL_AFTER_EPOCH"] = os.environ["RMAUNET_FAIL_AFTER_EPOCH"]
    if use_gpu:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    else:
        # A worker without a GPU must not grab one that another trial on the node owns.
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


# --------------------------------------------------------------------------- worker loop
class _RayTrainIO:
    """The loop's state in Ray Train checkpoints: one folder per epoch, handed to Ray Train."""

    def __init__(self, config: TrialConfig, rank: int, fault_folder: TrialFolder | None) -> None:
        self.rank, self.fault_folder = rank, fault_folder
        self.work = Path(tempfile.mkdtemp(prefix=f"rmaunet_dp_rank{rank}_"))
        self.best_weights = self.work / TrialFolder.BEST_WEIGHTS
        self.saver = EpochCheckpoint(self.work, config)

    def restore(self, model: Any, optimizer: Any) -> dict[str, Any]:
        import ray.train

        from rmaunet.training.checkpoint import fresh_state

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return fresh_state()
        # Every rank restores the same files, so the restarted group starts in sync.
        with checkpoint.as_directory() as ckpt_dir:
            state = self.saver.restore(model, optimizer, Path(ckpt_dir))
            saved_best = TrialFolder(ckpt_dir).best_weights
            if saved_best.exists():
                shutil.copyfile(saved_best, self.best_weights)
        return state

    def wall_s(self) -> float:
        return self.saver.wall_s()

    def outputs(self, epoch: int) -> TrialFolder:
        return TrialFolder(self._epoch_folder(epoch)).create()

    def _epoch_folder(self, epoch: int) -> Path:
        return self.work / f"epoch_{epoch:04d}"

    def save_checkpoint(self, loop: TrialLoop, epoch: int, state: dict[str, Any]) -> None:
        """Rank 0: the epoch's checkpoint folder, which end_epoch hands to Ray Train."""
        folder = self.outputs(epoch)
        keys = ("epoch", "history", "best_score", "best_epoch")
        self.saver.save(loop.model, loop.optimizer, {k: state[k] for k in keys}, folder.root)
        if self.best_weights.exists():
            shutil.copyfile(self.best_weights, folder.best_weights)

    def end_epoch(
        self, loop: TrialLoop, row: dict[str, Any], state: dict[str, Any], outcome: TrialResult | None
    ) -> None:
        import ray.train

        epoch = row["epoch"]
        name = self._epoch_folder(epoch).name
        if self.rank != 0:
            ray.train.report(row, checkpoint=None, checkpoint_dir_name=name)
            return
        folder = self.outputs(epoch)
        if outcome is not None:
            folder.write_history(state["history"])
            write_result(folder, outcome)
        ray.train.report(
            row, checkpoint=ray.train.Checkpoint.from_directory(str(folder.root)), checkpoint_dir_name=name
        )
        shutil.rmtree(folder.root, ignore_errors=True)
        if outcome is None and self.fault_folder is not None:
            maybe_inject_failure(self.fault_folder, epoch)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _train_loop(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker (TF_CONFIG already set: rmaunet.training.tf_backend)."""
    import ray.train

    from rmaunet.training.quiet import quiet_worker

    quiet_worker()  # also keeps MultiWorkerMirroredStrategy's INFO line per collective out
    import tensorflow as tf

    config = TrialConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if wants_deterministic_ops(config):
        tf.config.experimental.enable_op_determinism()  # as run_trial: same config, same metrics on CPU
    data_dir: str | Path = loop_config["data_dir"]
    if is_uri(data_dir):
        from rmaunet.data.staging import local_data

        data_dir = local_data(data_dir, config.dataset, loop_config["fingerprint"])  # once per node
    loop = TrialLoop(config, data_dir, rank=rank, world=world, sharded=True)
    fault_folder = TrialFolder(loop_config["out_dir"]) if loop_config.get("out_dir") else None
    io = _RayTrainIO(config, rank, fault_folder)
    try:
        loop.run(io)
    finally:
        io.close()


# --------------------------------------------------------------------------- driver
def _make_forwarder(sink: Any) -> Any:
    """A Ray Train callback (runs in the controller process) that ships every epoch's
    per-rank metrics to the driver through a Ray queue, and every failure of the worker
    group (a list of rows: a report; a dict: the failing ranks' errors)."""
    from ray.train.v2.api.callback import UserCallback

    class _Forward(UserCallback):
        def __init__(self, q: Any) -> None:
            self._queue = q

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            self._queue.put([dict(m) for m in metrics])

        def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
            # Ray restarts the group after this (up to max_failures), from the last epoch's
            # checkpoint or, before the first one, from scratch: invisible in the results
            # unless recorded here.
            self._queue.put({str(rank): _last_line(error) for rank, error in sorted(worker_exceptions.items())})

    return _Forward(sink)


def run_data_parallel(
    config: TrialConfig,
    data_dir: Path | str,
    out_dir: Path | str,
    *,
    num_workers: int,
    use_gpu: bool = False,
    report: Reporter | None = None,
    cpus_per_worker: int = 1,
    storage_path: Path | str | None = None,
    max_failures: int = 1,
    fingerprint: str | None = None,
) -> TrialResult:
    """Train one trial data-parallel on `num_workers` Ray Train workers; results into out_dir.

    Call it where Ray is initialised (a Tune trial, a job, a test). `report` is called in
    this thread with rank 0's row of every epoch. `storage_path` (default out_dir/ray_train)
    must be storage every node can reach on a multi-node cluster: a shared folder or an
    s3:// / gs:// URI, where Ray Train keeps each epoch's checkpoint. `data_dir` may be a
    URI too: every worker stages it into its node's cache (`fingerprint`, the dataset's,
    keys that copy; rmaunet.data.staging). A
    worker failure restarts the group from the last epoch's checkpoint up to `max_failures`
    times. The default of one restart is there for Ray 2.60 itself: its PlacementGroupCleaner
    takes one missed State API answer for a dead controller and removes a live run's
    placement group (ray-project/ray#65447; seen here on a loaded 2-core machine). Epoch
    order is seeded per epoch and the checkpoint holds the optimizer state, so a restarted
    run ends with the weights an uninterrupted one would have. Writes the trial folder's
    outputs plus its sync file (every rank's weights digest per epoch) into out_dir.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.util.queue import Queue

    from rmaunet.training.tf_backend import MultiWorkerTFConfig

    if config.batch_size % num_workers:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by num_workers = {num_workers}")
    started = time.perf_counter()
    folder = TrialFolder(Path(out_dir).resolve()).create()
    if storage_path is None:
        storage = str(folder.ray_train)
    else:
        storage = str(storage_path) if is_uri(storage_path) else str(Path(storage_path).resolve())
    data = str(data_dir) if is_uri(data_dir) else str(Path(data_dir).resolve())
    if is_uri(data) and fingerprint is None:
        from rmaunet.data.staging import remote_fingerprint

        fingerprint = remote_fingerprint(data, config.dataset)

    # num_cpus=0: the queue actor must not compete with the workers' placement group.
    sink = Queue(actor_options={"num_cpus": 0})
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = DataParallelTrainer(
        _train_loop,
        backend_config=MultiWorkerTFConfig(),
        train_loop_config={
            "config": config.to_dict(),
            "data_dir": data,
            "fingerprint": fingerprint,
            "out_dir": str(folder.root),
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=f"dp_{config.training_hash}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[_make_forwarder(sink)],
            worker_runtime_env={"env_vars": worker_env(use_gpu, cpus_per_worker)},
        ),
    )

    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # reported below as a failed trial, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="rmaunet-data-parallel", daemon=True)
    thread.start()
    sync: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []  # worker group failures, each followed by a restart or the end
    reported = 0  # the last epoch handed to `report`
    try:
        while True:
            try:
                ranks = sink.get(timeout=0.5)
            except queue_module.Empty:  # ray.util.queue.Empty subclasses it
                if not thread.is_alive() and sink.empty():
                    break
                continue
            if isinstance(ranks, dict):
                failures.append({"after_epoch": sync[-1]["epoch"] if sync else 0, "ranks": ranks})
                continue
            ranks = sorted(ranks, key=lambda m: m.get("rank", 0))
            sync.append(
                {
                    "epoch": ranks[0]["epoch"],
                    "weights_sha256": [m.get("weights_sha256", "") for m in ranks],
                    "data_sha256": [m.get("data_sha256", "") for m in ranks],
                }
            )
            # A group Ray Train restarted replays the epochs after its last checkpoint: Tune
            # (its schedulers, rmaunet's progress) hears of each epoch once, the first time.
            if report is not None and ranks[0]["epoch"] > reported:
                reported = ranks[0]["epoch"]
                report({k: v for k, v in ranks[0].items() if k not in ("rank", "data_sha256", "weights_sha256")})
    except BaseException:
        # `report` raised (a scheduler stopping the trial, Ctrl-C): without the queue the
        # controller's next after_report fails, which ends the run and frees its workers.
        ray.kill(sink.actor)
        thread.join(timeout=_ABORT_WAIT_S)
        raise
    thread.join()
    ray.kill(sink.actor)
    folder.write_sync(sync)

    result = outcome.get("result")
    error = outcome.get("error") or getattr(result, "error", None)
    if error is not None:
        if workers_lost(error):
            raise WorkersLostError(describe_failure(error)) from None
        return _failed(folder, describe_failure(error), sync, failures, started)
    out_of_sync = drifted_epochs(sync)
    with result.checkpoint.as_directory() as ckpt_dir:
        final = TrialFolder(ckpt_dir)
        values = final.read_result() or {}
        for source, target in zip(final.outputs()[:-1], folder.outputs()[:-1]):
            if source.exists():
                shutil.copyfile(source, target)
    trial = TrialResult.from_dict(values)
    # The driver's view: worker start-up included (a resumed run adds the earlier runs' time).
    trial.wall_s = max(trial.wall_s, time.perf_counter() - started)
    if out_of_sync:
        trial.status, trial.reason = "failed", f"workers out of sync after epochs {out_of_sync}"
    # Keep where rank 0 ran ("node", "accelerator"), not where this driver runs.
    folder.write_result({**values, **trial.to_dict(), "num_workers": num_workers, "worker_failures": failures})
    return trial


def drifted_epochs(sync: list[dict[str, Any]]) -> list[int]:
    """The epochs after which the ranks' weight digests were not all equal."""
    return [s["epoch"] for s in sync if len(set(s["weights_sha256"])) != 1]


def _failed(
    folder: TrialFolder, reason: str, sync: list[dict[str, Any]], failures: list[dict[str, Any]], started: float
) -> TrialResult:
    trial = TrialResult.failed(reason, len(sync), wall_s=time.perf_counter() - started)
    write_result(folder, trial, worker_failures=failures)
    return trial


def _last_line(error: BaseException) -> str:
    """A worker's error in one line: the last line of its traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def workers_lost(exc: BaseException) -> bool:
    """Whether a run failed because Ray Train's controller could not place or keep its
    workers (ControllerError around an actor the cluster could not schedule or lost)."""
    from ray import exceptions
    from ray.train import ControllerError

    lost = (exceptions.ActorPlacementGroupRemoved, exceptions.ActorUnschedulableError, exceptions.RayActorError)
    return isinstance(exc, ControllerError) and isinstance(exc.controller_failure, lost)


def describe_failure(exc: BaseException) -> str:
    """One line naming what went wrong: for worker errors, each failing rank's own error
    (the last line of its traceback, e.g. "ResourceExhaustedError: OOM when allocating").
    Otherwise the error's first line, and the next one too where the first only introduces
    it (Ray Train's "Training failed due to controller error:")."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        text = "; ".join(f"rank {rank}: {_last_line(error)}" for rank, error in sorted(failures.items()))
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        text = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    # The same wording as run_trial, so a study can count out-of-memory trials by reason.
    prefix = "out of memory" if ("ResourceExhausted" in text or "OOM" in text) else "data-parallel training failed"
    return f"{prefix}: {text}"[:500]
