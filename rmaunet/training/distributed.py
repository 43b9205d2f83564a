"""N workers, one trial: data-parallel training on Ray Train's TensorflowTrainer.

Each worker is one replica of a `MultiWorkerMirroredStrategy`. The train step is a
custom `strategy.run` + `strategy.reduce` around the Keras 3 model, because Keras 3
`model.fit` fails under this strategy (keras-team/keras#20585, DESIGN.md).

What makes N workers train the same model one worker would (num_workers is left out of
TrialConfig.training_hash, so the results must not depend on it):

- The global batch is config.batch_size. Every epoch all ranks compute the same seeded
  permutation of the training set; global batch i is rows [i*B, (i+1)*B) of it and rank r
  takes the r-th contiguous slice of B/N rows. The union of the N replica batches is
  exactly the batch one worker would see. The remainder (n mod B rows) is dropped so every
  rank runs the same number of steps: a rank with one step more would wait in an
  all-reduce forever.
- Each replica's loss is divided by N: the Keras TF optimizer all-reduces gradients by
  SUM, so the sum of the scaled replica gradients is the gradient of the global mean loss.
- BatchNormalization layers are switched to `synchronized=True` when N > 1, so batch
  statistics are computed over the global batch (two extra all-reduces per BN layer per
  step). Without it each replica normalises with its own B/N samples: the forward pass
  and the gradients change with N, and each replica writes its own batch moments into
  its copy of the moving statistics. Measured here (2 CPU workers, global batch 8, 2
  epochs): with synchronised BN the final weights differ from the 1-worker run's by
  1e-5 of the distance one epoch moves them and all ranks stay bit-identical; without
  it they differ by 0.34 of that distance and the ranks' weights no longer agree.

Every rank reports a SHA-256 of its weights and optimizer state after every epoch; the
driver compares them and fails the trial with a clear reason when they differ. Rank 0
alone evaluates on validation, keeps the best epoch's weights and, in the last epoch,
scores test once and writes the probability maps; everything it writes goes into the
epoch's Ray Train checkpoint (so another node can resume from it) and the driver copies
the final checkpoint's files into out_dir.

Worker processes import ray.train.tensorflow, which imports TensorFlow before the train
loop runs, so environment variables TensorFlow reads at import time are set through the
run's `worker_runtime_env`, not inside the loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import queue as queue_module
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError
from rmaunet.training.trial import (
    SELECTION_THRESHOLD,
    EpochCheckpoint,
    TrialResult,
    _detection_score,
    _maybe_inject_failure,
    _predictor,
    _score,
    _selection_f1,
    _write_result,
    make_loss,
    score_best_epoch,
    train_epoch,
    wants_deterministic_ops,
    write_json_atomic,
)

__all__ = [
    "run_data_parallel",
    "epoch_order",
    "rank_slice",
    "weights_digest",
    "synchronize_batch_norm",
    "worker_env",
    "TRAINING_PROCESS_ENV",
    "RESULT_FILES",
]

Reporter = Callable[[dict[str, Any]], None]

# Read by Ray's core worker when a worker process starts (ray_config_def.h, default 15).
TRAINING_PROCESS_ENV = {"RAY_worker_niceness": "0"}

# Files rank 0 puts into the last checkpoint; run_data_parallel copies them into out_dir,
# result.json last (it marks a finished trial).
RESULT_FILES = ("best.weights.h5", "history.json", "val_probs.npz", "test_probs.npz", "result.json")
_SYNC_FILE = "sync.json"
_ABORT_WAIT_S = 120.0  # how long an aborted run may take to release its workers


# --------------------------------------------------------------------------- pure helpers
def epoch_order(n: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, global_batch) training-row indices of one epoch, the same on every rank.

    Seeded by (seed, epoch) rather than by a running generator, so a worker group that
    restarts from the checkpoint of epoch k replays epochs k+1.. in the same order.
    """
    steps = n // global_batch
    if steps == 0:
        raise ConfigError(f"batch_size: {global_batch} is larger than the {n} training images")
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[: steps * global_batch].reshape(steps, global_batch)


def rank_slice(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s rows of every global batch: (steps, global_batch // world) indices."""
    global_batch = order.shape[1]
    if global_batch % world:
        raise ConfigError(f"batch_size: {global_batch} is not divisible by num_workers = {world}")
    per_rank = global_batch // world
    return order[:, rank * per_rank : (rank + 1) * per_rank]


def weights_digest(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 over the bytes, dtypes and shapes of arrays: equal iff bit-identical."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def synchronize_batch_norm(model: Any) -> int:
    """Make every BatchNormalization layer use global-batch statistics; returns how many.

    Keras 3 (TensorFlow backend) all-reduces the moments of a `synchronized` layer across
    the replicas of the active strategy. The attribute is read when the step is traced,
    so this must run before the first train step.
    """
    import keras

    count = 0
    # _flatten_layers is the only walk that reaches layers nested inside custom blocks.
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count


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
def _train_loop(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker (TF_CONFIG already set by Ray's TensorFlow backend)."""
    import keras
    import ray.train
    import tensorflow as tf

    from rmaunet.data import prepare_splits
    from rmaunet.data.pipeline import make_dataset
    from rmaunet.models import build_model
    from rmaunet.training import precision

    tf.get_logger().setLevel("WARNING")  # MWMS logs every collective at INFO
    config = TrialConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    started = time.perf_counter()

    # One worker has nobody to all-reduce with: the default strategy runs the same
    # strategy.run / reduce step without MWMS's collective machinery.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync != world:
        # One replica per worker is what the batch slicing below assumes.
        raise RuntimeError(f"{strategy.num_replicas_in_sync} replicas for {world} workers: one GPU per worker expected")

    splits = prepare_splits(config, loop_config["data_dir"])
    keras.utils.set_random_seed(config.seed)  # same seed on every rank: identical initial weights
    if wants_deterministic_ops(config):
        tf.config.experimental.enable_op_determinism()  # as run_trial: same config, same metrics on CPU
    jit = precision.configure(config)  # before the model: Keras reads the policy at layer creation
    objective = make_loss(config)
    # XLA cannot compile the collective ops of a multi-replica step; one replica can.
    jit = jit and objective.supports_xla and world == 1
    with strategy.scope():
        model = build_model(config, splits.num_bands, splits.x_train.shape[1])
        optimizer = precision.wrap_optimizer(keras.optimizers.Adam(learning_rate=config.learning_rate), config)
        optimizer.build(model.trainable_variables)
    if world > 1:
        synchronize_batch_norm(model)
    predict = _predictor(model)

    def replica_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = objective(y, model(x, training=True), model.losses)
            # The optimizer all-reduces gradients by SUM: 1/world makes them the global mean's.
            scaled = optimizer.scale_loss(loss / world)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(jit_compile=jit)
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    # ------------------------------------------------------------------ resume
    work = Path(tempfile.mkdtemp(prefix=f"rmaunet_dp_rank{rank}_"))
    best_path = work / "best.weights.h5"
    # Each epoch's checkpoint goes into its own folder under work, handed to Ray Train.
    saver = EpochCheckpoint(work, config, started=started)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "wall_s": 0.0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        # Every rank restores the same files, so the restarted group starts in sync.
        with checkpoint.as_directory() as ckpt_dir:
            state = saver.restore(model, optimizer, Path(ckpt_dir))
            if (Path(ckpt_dir) / "best.weights.h5").exists():
                shutil.copyfile(Path(ckpt_dir) / "best.weights.h5", best_path)
    resumed_from = state["epoch"]

    def digest() -> str:
        return weights_digest([np.asarray(v) for v in model.weights] + [np.asarray(v) for v in optimizer.variables])

    # ------------------------------------------------------------------ epochs
    n = len(splits.x_train)
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        t0 = time.perf_counter()
        rows = rank_slice(epoch_order(n, config.batch_size, config.seed, epoch), rank, world).reshape(-1)
        x_shard, y_shard = splits.x_train[rows], splits.y_train[rows]
        # The order is already this epoch's global shuffle; make_dataset shuffles (again,
        # within the shard) only when it augments, because it augments only when training.
        ds = make_dataset(
            x_shard, y_shard, config.batch_size // world,
            training=bool(config.augment), augment=config.augment, seed=config.seed + 7919 * rank + epoch,
        )
        t_train = time.perf_counter()
        mean_loss, steps, _ = train_epoch(train_step, ds)
        train_s = time.perf_counter() - t_train
        rate = steps * config.batch_size / train_s if train_s > 0 else float("nan")
        # The loss is reduced across replicas, so every rank takes the same branch here
        # and all ranks call ray.train.report equally often.
        failed = not math.isfinite(mean_loss)
        last = failed or epoch == config.epochs
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss": mean_loss,
            "images_per_s": rate,
            # Hashing the full model and Adam state costs about a second per epoch at paper
            # size; with one rank there is nothing to compare it with.
            "weights_sha256": digest() if world > 1 else "",
            "data_sha256": weights_digest([x_shard, y_shard]) if world > 1 else "",
            "rank": rank,
        }
        if rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=f"epoch_{epoch:04d}")
            if failed:
                break
            continue

        if not failed:
            val_pred = predict(splits.x_val, config.batch_size)
            val = _score(splits.y_val, val_pred, SELECTION_THRESHOLD)
            val_det = _detection_score(splits.y_val, val_pred, SELECTION_THRESHOLD)
            metrics.update({f"val_{k}": v for k, v in val.items()})
            metrics.update({f"val_det_{k}": v for k, v in val_det.items()})
            selection = _selection_f1(val, val_det)
            if selection > state["best_f1"]:
                state["best_f1"], state["best_epoch"] = selection, epoch
                model.save_weights(best_path)
        metrics["epoch_s"] = time.perf_counter() - t0
        state["history"].append({k: v for k, v in metrics.items() if k not in ("rank", "data_sha256")})
        state["epoch"] = epoch
        ckpt = work / f"epoch_{epoch:04d}"
        saver.save(model, optimizer, {k: state[k] for k in ("epoch", "history", "best_f1", "best_epoch")}, ckpt)
        if best_path.exists():
            shutil.copyfile(best_path, ckpt / "best.weights.h5")
        if last:
            _write_outcome(ckpt, config, splits, model, predict, state, failed, saver.wall_s(), resumed_from)
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt)), checkpoint_dir_name=ckpt.name
        )
        shutil.rmtree(ckpt, ignore_errors=True)
        if failed:
            break
        if loop_config.get("out_dir"):
            _maybe_inject_failure(Path(loop_config["out_dir"]), epoch)
    shutil.rmtree(work, ignore_errors=True)


def _write_outcome(
    ckpt: Path, config: TrialConfig, splits: Any, model: Any, predict: Callable, state: dict[str, Any],
    failed: bool, wall_s: float, resumed_from: int,
) -> None:
    """Rank 0, last epoch: score test once with the best epoch's weights; write the results."""
    history = state["history"]
    (ckpt / "history.json").write_text(json.dumps(history, indent=1))
    if failed:
        result = TrialResult(
            status="failed", reason=f"loss became {history[-1]['loss']} in epoch {state['epoch']}",
            epochs_run=state["epoch"], best_epoch=0, val={}, test={}, history=history,
            wall_s=wall_s, data_fingerprint=splits.fingerprint, resumed_from=resumed_from,
        )
    else:
        result = score_best_epoch(
            ckpt, config, splits, model, predict, ckpt / "best.weights.h5", history, state["best_epoch"],
            wall_s=wall_s, resumed_from=resumed_from,
        )
    _write_result(ckpt, result)


# --------------------------------------------------------------------------- driver
def _make_forwarder(sink: Any) -> Any:
    """A Ray Train callback (runs in the controller process) that ships every epoch's
    per-rank metrics to the driver through a Ray queue."""
    from ray.train.v2.api.callback import UserCallback

    class _Forward(UserCallback):
        def __init__(self, q: Any) -> None:
            self._queue = q

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            self._queue.put([dict(m) for m in metrics])

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
) -> TrialResult:
    """Train one trial data-parallel on `num_workers` Ray Train workers; results into out_dir.

    Call it where Ray is initialised (a Tune trial, a job, a test). `report` is called in
    this thread with rank 0's row of every epoch. `storage_path` (default out_dir/ray_train)
    must be storage every node can reach on a multi-node cluster; so must data_dir. A
    worker failure restarts the group from the last epoch's checkpoint up to `max_failures`
    times. The default of one restart is there for Ray 2.60 itself: its PlacementGroupCleaner
    takes one missed State API answer for a dead controller and removes a live run's
    placement group (ray-project/ray#65447; seen here on a loaded 2-core machine). Epoch
    order is seeded per epoch and the checkpoint holds the optimizer state, so a restarted
    run ends with the weights an uninterrupted one would have. Writes the files of RESULT_FILES plus sync.json (every rank's weights digest per
    epoch) into out_dir.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer
    from ray.util.queue import Queue

    if config.batch_size % num_workers:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by num_workers = {num_workers}")
    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = Path(storage_path).resolve() if storage_path is not None else out / "ray_train"

    # num_cpus=0: the queue actor must not compete with the workers' placement group.
    sink = Queue(actor_options={"num_cpus": 0})
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = TensorflowTrainer(
        _train_loop,
        train_loop_config={"config": config.to_dict(), "data_dir": str(Path(data_dir).resolve()), "out_dir": str(out)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=f"dp_{config.training_hash}",
            storage_path=str(storage),
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
    try:
        while True:
            try:
                ranks = sink.get(timeout=0.5)
            except queue_module.Empty:  # ray.util.queue.Empty subclasses it
                if not thread.is_alive() and sink.empty():
                    break
                continue
            ranks = sorted(ranks, key=lambda m: m.get("rank", 0))
            sync.append({"epoch": ranks[0]["epoch"], "weights_sha256": [m["weights_sha256"] for m in ranks],
                         "data_sha256": [m["data_sha256"] for m in ranks]})
            if report is not None:
                report({k: v for k, v in ranks[0].items() if k not in ("rank", "data_sha256", "weights_sha256")})
    except BaseException:
        # `report` raised (a scheduler stopping the trial, Ctrl-C): without the queue the
        # controller's next after_report fails, which ends the run and frees its workers.
        ray.kill(sink.actor)
        thread.join(timeout=_ABORT_WAIT_S)
        raise
    thread.join()
    ray.kill(sink.actor)
    (out / _SYNC_FILE).write_text(json.dumps(sync, indent=1))

    if "error" in outcome:
        return _failed(out, _describe_failure(outcome["error"]), sync, started)
    result = outcome["result"]
    if getattr(result, "error", None) is not None:
        return _failed(out, _describe_failure(result.error), sync, started)
    out_of_sync = [s["epoch"] for s in sync if len(set(s["weights_sha256"])) != 1]
    with result.checkpoint.as_directory() as ckpt_dir:
        for name in RESULT_FILES[:-1]:
            if (Path(ckpt_dir) / name).exists():
                shutil.copyfile(Path(ckpt_dir) / name, out / name)
        values = json.loads((Path(ckpt_dir) / "result.json").read_text())
    trial = TrialResult(**{f.name: values[f.name] for f in dataclasses.fields(TrialResult) if f.name in values})
    # The driver's view: worker start-up included (a resumed run adds the earlier runs' time).
    trial.wall_s = max(trial.wall_s, time.perf_counter() - started)
    if out_of_sync:
        trial.status, trial.reason = "failed", f"workers out of sync after epochs {out_of_sync}"
    # Keep where rank 0 ran ("node", "accelerator"), not where this driver runs.
    write_json_atomic(out / "result.json", {**values, **trial.to_dict(), "num_workers": num_workers})
    return trial


def _failed(out: Path, reason: str, sync: list[dict[str, Any]], started: float) -> TrialResult:
    trial = TrialResult(
        status="failed", reason=reason, epochs_run=len(sync), best_epoch=0, val={}, test={},
        wall_s=time.perf_counter() - started,
    )
    _write_result(out, trial)
    return trial


def _describe_failure(exc: BaseException) -> str:
    """One line naming what went wrong: for worker errors, each failing rank's own error
    (the last line of its traceback, e.g. "ResourceExhaustedError: OOM when allocating")."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        parts = []
        for rank, error in sorted(failures.items()):
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            parts.append(f"rank {rank}: {lines[-1] if lines else type(error).__name__}")
        text = "; ".join(parts)
    else:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    # The same wording as run_trial, so a study can count out-of-memory trials by reason.
    prefix = "out of memory" if ("ResourceExhausted" in text or "OOM" in text) else "data-parallel training failed"
    return f"{prefix}: {text}"[:500]
