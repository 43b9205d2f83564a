"""The training loop: one trial on one worker, or on rank r of N data-parallel workers.

The step is a custom `strategy.run` + `strategy.reduce` around the Keras 3 model rather
than `model.fit`, because Keras 3 `fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585). With one worker the strategy is TensorFlow's default one and
the same step runs without collectives.

Where the loop runs decides only three things, supplied by an `EpochIO`: where the
last checkpoint is restored from and saved to, where each epoch's row is reported, and
which folder receives the trial's files (`rmaunet.training.trial` for one in-process
worker, `rmaunet.training.distributed` for a Ray Train worker group). Everything else
(data, model, step, validation, checkpoint selection, the final test scoring) is here.

What makes N workers train the model one worker would (num_workers is left out of
TrialConfig.training_hash, so results must not depend on it):

- The global batch is config.batch_size. Every epoch all ranks compute the same seeded
  permutation of the training set (`epoch_order`); rank r takes the r-th contiguous slice
  of each global batch (`rank_slice`). The remainder is dropped so every rank runs the
  same number of steps: a rank with one step more would wait in an all-reduce forever.
- Each replica's loss is divided by N: the optimizer all-reduces gradients by SUM.
- BatchNormalization layers are `synchronized` when N > 1, so batch statistics are those
  of the global batch (`synchronize_batch_norm`).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rmaunet.config import TrialConfig, learning_rate_at
from rmaunet.errors import ConfigError
from rmaunet.training.checkpoint import fresh_state
from rmaunet.training.evaluation import best_over_thresholds, make_predictor, selection_score
from rmaunet.training.result import TrialResult, write_preprocess
from rmaunet.trial_folder import SPLITS, TrialFolder

__all__ = [
    "TrialLoop",
    "EpochIO",
    "make_loss",
    "train_epoch",
    "wants_deterministic_ops",
    "epoch_order",
    "rank_slice",
    "weights_digest",
    "synchronize_batch_norm",
    "maybe_inject_failure",
]

Log = Callable[[str], None]


class EpochIO(Protocol):
    """Where a loop keeps its state and sends its results (see the module docstring)."""

    best_weights: Path  # where the selected epoch's weights are kept while training

    def restore(self, model: Any, optimizer: Any) -> dict[str, Any]: ...

    def wall_s(self) -> float: ...

    def outputs(self, epoch: int) -> TrialFolder: ...

    def save_checkpoint(self, loop: TrialLoop, epoch: int, state: dict[str, Any]) -> None: ...

    def end_epoch(
        self, loop: TrialLoop, row: dict[str, Any], state: dict[str, Any], outcome: TrialResult | None
    ) -> None: ...


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


def wants_deterministic_ops(config: TrialConfig) -> bool:
    """TensorFlow's deterministic ops for a trial: on a CPU without XLA (same config and
    seed, same metrics); off on GPUs and under XLA, where some kernels (e.g. max-pool
    gradients) have no deterministic version."""
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU") and not config.xla


def train_epoch(train_step: Callable, dataset: Any) -> tuple[float, int, int]:
    """One pass of train_step over dataset: (mean loss, steps, images).

    The loss is summed where it is computed and read back once, at the end: reading it
    after every step (float(loss)) would make the host wait for each step to finish
    before it dispatches the next one, which idles a GPU between steps.
    """
    import tensorflow as tf

    total = tf.constant(0.0, tf.float64)
    steps = seen = 0
    for x, y in dataset:
        total += tf.cast(train_step(x, y), tf.float64)
        steps += 1
        seen += int(x.shape[0])
    return float(total) / max(steps, 1), steps, seen


def make_loss(config: TrialConfig) -> Callable:
    """The training objective over the model's output dict: mask heads, detection, L2.

    Multi-resolution heads are each scored against the mask resized (nearest) to their
    size and averaged; a detection head adds image-level cross-entropy against "the tile
    contains a landslide"; the L2 term is the models' kernel regularisers (`model.losses`).
    """
    import tensorflow as tf

    from rmaunet import losses
    from rmaunet.models.heads import RESOLUTION_HEADS

    pixel_loss = losses.get(config.loss, **config.loss_kwargs)
    needs_features = getattr(pixel_loss, "needs_features", False)
    detection_loss = losses.get("cross_entropy")

    def mask_term(y, prob, features=None):
        if needs_features:
            return pixel_loss(y, prob, features=features)
        return pixel_loss(y, prob)

    def objective(y, outputs, model_losses):
        terms = []
        heads = [k for k in RESOLUTION_HEADS if k in outputs]
        if heads:
            head_terms = []
            for key in heads:
                prob = tf.cast(outputs[key], tf.float32)
                size = tf.shape(prob)[1:3]
                target = tf.image.resize(y, size, method="nearest")
                features = outputs.get("features")
                if needs_features and key != "head_full":
                    features = tf.image.resize(features, size, method="bilinear")
                head_terms.append(mask_term(target, prob, features))
            terms.append(tf.add_n(head_terms) / len(head_terms))
        elif "mask" in outputs:
            terms.append(mask_term(y, tf.cast(outputs["mask"], tf.float32), outputs.get("features")))
        if "detection" in outputs:
            has = tf.reduce_max(y, axis=[1, 2, 3])[:, None]
            terms.append(detection_loss(has, tf.cast(outputs["detection"], tf.float32)))
        loss = tf.add_n(terms)
        if model_losses:
            loss = loss + tf.add_n([tf.cast(term, tf.float32) for term in model_losses])
        return loss

    objective.supports_xla = getattr(pixel_loss, "supports_xla", True)
    return objective


def _cache_saving_skipsets() -> None:
    """Make Keras's per-type attribute skip-sets of save_weights cached, as it means them to be.

    Keras 3.15 stores them under `saving_attr_skipset_<type>` but looks them up under
    `saving_attr_skiplist_<type>`, so every save builds a throw-away Layer per layer it walks:
    0.6 s of a demo model's 0.8 s checkpoint, paid every epoch. The sets stored here are the
    ones it computes itself, so the files are the same. Keras's state is per thread and
    `clear_session` drops it: called where a trial's model is built.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # another Keras layout: saving is only slower
        return
    for obj_type in ("Operation", "Layer", "Functional", "Optimizer"):
        key = f"saving_attr_skiplist_{obj_type}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, saving_lib.get_attr_skipset(obj_type))


def _flops(model: Any, say: Log) -> int:
    """FLOPs per image for GPU-utilisation figures; 0 (and a log line) if the profiler fails."""
    from rmaunet.models.cost import count_flops

    try:
        return int(count_flops(model))
    except Exception as exc:  # noqa: BLE001 - a cost figure must not lose a finished training
        say(f"FLOP count unavailable: {exc.__class__.__name__}: {exc}")
        return 0


# --------------------------------------------------------------------------- the loop
class TrialLoop:
    """Data, model, optimizer and train step of one trial on one rank, and its epochs.

    `sharded` feeds each epoch from the seeded `epoch_order` that every rank of a worker
    group agrees on; otherwise (one in-process worker) from one shuffling tf.data
    pipeline, the order every trial trained in so far.
    """

    def __init__(
        self,
        config: TrialConfig,
        data_dir: Path | str,
        *,
        rank: int = 0,
        world: int = 1,
        sharded: bool = False,
        log: Log | None = None,
    ) -> None:
        import keras
        import tensorflow as tf

        from rmaunet.data import prepare_splits
        from rmaunet.data.pipeline import make_dataset
        from rmaunet.models import build_model
        from rmaunet.training import precision

        self.config, self.rank, self.world, self.sharded = config, rank, world, sharded
        self.say = log or (lambda _msg: None)
        self.started = time.perf_counter()
        # One worker has nobody to all-reduce with: the default strategy runs the same step
        # without MultiWorkerMirroredStrategy's collective machinery.
        strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
        if strategy.num_replicas_in_sync != world:
            # One replica per worker is what the batch slicing assumes.
            raise RuntimeError(
                f"{strategy.num_replicas_in_sync} replicas for {world} workers: one GPU per worker expected"
            )

        self.splits = splits = prepare_splits(config, data_dir)
        keras.utils.set_random_seed(config.seed)  # same seed on every rank: identical initial weights
        jit = precision.configure(config)  # before the model: Keras reads the policy at layer creation
        with strategy.scope():
            self.model = model = build_model(config, splits.num_bands, splits.x_train.shape[1])
            objective = make_loss(config)
            if jit and not objective.supports_xla:
                self.say(
                    f"XLA is off for this trial: loss {config.loss!r} computes its distance maps outside the graph"
                )
                jit = False
            jit = jit and world == 1  # XLA cannot compile the collective ops of a multi-replica step
            self._adam = keras.optimizers.Adam(learning_rate=config.learning_rate)
            self.optimizer = optimizer = precision.wrap_optimizer(self._adam, config)
            optimizer.build(model.trainable_variables)
        if world > 1:
            synchronize_batch_norm(model)
        self.predict = make_predictor(model)
        self.state: dict[str, Any] = fresh_state()
        self._dataset = None
        if not sharded:
            self._dataset = make_dataset(
                splits.x_train,
                splits.y_train,
                config.batch_size,
                training=True,
                augment=config.augment,
                seed=config.seed,
            )

        def replica_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = objective(y, model(x, training=True), model.losses)
                # The optimizer all-reduces gradients by SUM: 1/world makes them the global
                # mean's. scale_loss applies float16 loss scaling (identity otherwise).
                scaled = optimizer.scale_loss(loss / world if world > 1 else loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        @tf.function(jit_compile=jit)
        def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            per_replica = strategy.run(replica_step, args=(x, y))
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

        self.train_step = train_step
        _cache_saving_skipsets()

    # ------------------------------------------------------------------ epochs
    def _epoch_data(self, epoch: int) -> tuple[Any, dict[str, str]]:
        """This rank's batches of `epoch`, and (with several ranks) digests of its shard."""
        if not self.sharded:
            return self._dataset, {}
        from rmaunet.data.pipeline import make_dataset

        config, splits = self.config, self.splits
        rows = rank_slice(
            epoch_order(len(splits.x_train), config.batch_size, config.seed, epoch), self.rank, self.world
        )
        rows = rows.reshape(-1)
        x_shard, y_shard = splits.x_train[rows], splits.y_train[rows]
        # The order is already this epoch's global shuffle; make_dataset shuffles (again,
        # within the shard) only when it augments, because it augments only when training.
        ds = make_dataset(
            x_shard,
            y_shard,
            config.batch_size // self.world,
            training=bool(config.augment),
            augment=config.augment,
            seed=config.seed + 7919 * self.rank + epoch,
        )
        # Hashing the shard costs time; with one rank there is nothing to compare it with.
        return ds, ({"data_sha256": weights_digest([x_shard, y_shard])} if self.world > 1 else {})

    def weights_sha256(self) -> str:
        arrays = [np.asarray(v) for v in self.model.weights] + [np.asarray(v) for v in self.optimizer.variables]
        return weights_digest(arrays)

    def validate(self) -> dict[str, Any]:
        """Validation metrics of the current weights, each head at its own threshold (rank 0):
        fixed, or the best of the grid when tuned (evaluation.best_over_thresholds)."""
        pred = self.predict(self.splits.x_val, self.config.batch_size)
        config = self.config
        val, threshold, val_det, det_threshold = best_over_thresholds(
            self.splits.y_val, pred, config.select, config.threshold, config.det_threshold
        )
        scores = {f"val_{k}": v for k, v in val.items()} | {f"val_det_{k}": v for k, v in val_det.items()}
        if threshold is not None:
            scores["val_threshold"] = threshold
        if det_threshold is not None:
            scores["val_det_threshold"] = det_threshold
        return {"scores": scores, "selection": selection_score(val, val_det, config.select)}

    def run(self, io: EpochIO) -> TrialResult | None:
        """Train the remaining epochs; returns rank 0's result (None on other ranks)."""
        config = self.config
        self.state = state = io.restore(self.model, self.optimizer)
        resumed_from = state["epoch"]
        if resumed_from:
            self.say(f"resuming after epoch {resumed_from}")
            if self._dataset is not None:
                # The one-rank dataset reshuffles and redraws its augmentation seeds at each
                # pass (each iterator it makes): passes the killed process made must be made
                # again, or epoch k+1 trains on epoch 1's order. Making an iterator draws them.
                for _ in range(min(resumed_from, config.epochs)):
                    iter(self._dataset)
        outcome: TrialResult | None = None
        for epoch in range(resumed_from + 1, config.epochs + 1):
            t0 = time.perf_counter()
            learning_rate = learning_rate_at(config, epoch)
            self._adam.learning_rate = learning_rate  # assigns the optimizer's variable
            dataset, shard = self._epoch_data(epoch)
            t_train = time.perf_counter()
            mean_loss, _, seen = train_epoch(self.train_step, dataset)
            train_s = time.perf_counter() - t_train
            # The loss is reduced across replicas: every rank takes the same branch here.
            failed = not math.isfinite(mean_loss)
            row: dict[str, Any] = {"epoch": epoch, "loss": mean_loss}
            if config.lr_schedule != "constant":
                row["learning_rate"] = learning_rate
            if self.world > 1:
                # Every rank's digest after every epoch: the driver fails a group that drifted apart.
                row.update({"weights_sha256": self.weights_sha256(), **shard, "rank": self.rank})
            selection = float("nan")
            if self.rank == 0 and not failed:
                checked = self.validate()
                row.update(checked["scores"])
                selection = checked["selection"]
                if selection > state["best_score"]:
                    state["best_score"], state["best_epoch"] = selection, epoch
                    self.model.save_weights(io.best_weights)
            row["images_per_s"] = seen * self.world / train_s if train_s > 0 else float("nan")
            row["epoch_s"] = time.perf_counter() - t0
            state["history"].append({k: v for k, v in row.items() if k not in ("rank", "data_sha256")})
            state["epoch"] = epoch
            if self.rank == 0:
                # Before the final scoring, which loads the selected epoch's weights.
                io.save_checkpoint(self, epoch, state)
                if failed:
                    reason = f"loss became {mean_loss} in epoch {epoch}"
                    self.say(f"trial stopped: {reason}")
                    outcome = TrialResult.failed(
                        reason,
                        epoch,
                        history=state["history"],
                        wall_s=io.wall_s(),
                        data_fingerprint=self.splits.fingerprint,
                        resumed_from=resumed_from,
                    )
                else:
                    self.say(
                        f"epoch {epoch}/{config.epochs} loss {mean_loss:.4f} val {config.select} "
                        f"{100 * selection:.2f} ({row['images_per_s']:.0f} img/s)"
                    )
                    if epoch == config.epochs:
                        outcome = self.score_best_epoch(
                            io.outputs(epoch), io.best_weights, state, io.wall_s(), resumed_from
                        )
            io.end_epoch(self, row, state, outcome)
            if failed:
                break
        if resumed_from >= config.epochs and state["history"]:
            # Interrupted after the last epoch's checkpoint (saved before the final scoring)
            # and before result.json: nothing is left to train, only the scoring.
            if self.rank == 0:
                outcome = self.score_best_epoch(
                    io.outputs(resumed_from), io.best_weights, state, io.wall_s(), resumed_from
                )
            io.end_epoch(self, dict(state["history"][-1]), state, outcome)
        return outcome

    def score_best_epoch(
        self, folder: TrialFolder, weights: Path, state: dict[str, Any], wall_s: float, resumed_from: int
    ) -> TrialResult:
        """The end of every successful trial: selection happened on validation; test is
        touched exactly once, with the selected epoch's weights. Both splits' probability
        maps are stored, the thresholds are decided from them (rmaunet.thresholds.decide),
        and the metrics are those of the stored maps: what every results row recomputes."""
        from rmaunet import thresholds

        config, splits = self.config, self.splits
        self.model.load_weights(weights)
        for split in SPLITS:
            pred = self.predict(getattr(splits, f"x_{split}"), config.batch_size)
            folder.save_probabilities(split, pred.get("mask"), getattr(splits, f"y_{split}"), pred.get("detection"))
        decided = thresholds.decide(folder, config)
        write_preprocess(folder, config, splits, decided)
        scores = thresholds.scores_at(folder, (decided["threshold"],))[decided["threshold"]]
        det = thresholds.detection_scores_at(folder, decided["det_threshold"])
        history = state["history"]
        rates = [h["images_per_s"] for h in history]
        steady = rates[1:] if len(rates) > 1 else rates  # epoch 1 pays for tracing
        return TrialResult(
            status="ok",
            reason="",
            epochs_run=len(history),
            best_epoch=state["best_epoch"],
            val={k.removeprefix("val_"): v for k, v in scores.items() if k.startswith("val_")},
            test={k.removeprefix("test_"): v for k, v in scores.items() if k.startswith("test_")},
            val_det=det.get("val", {}),
            test_det=det.get("test", {}),
            history=history,
            images_per_s=float(np.median(steady)) if steady else float("nan"),
            wall_s=wall_s,
            data_fingerprint=splits.fingerprint,
            resumed_from=resumed_from,
            params=int(self.model.count_params()),
            flops_per_image=_flops(self.model, self.say),
            threshold=decided["threshold"],
            threshold_protocol=str(decided["threshold_protocol"]),
            det_threshold=decided["det_threshold"],
            test_groups=list(splits.test_groups or ()),
        )


def maybe_inject_failure(folder: TrialFolder, epoch: int) -> None:
    """Fault injection for tests: RMAUNET_FAIL_AFTER_EPOCH=k kills the trial once after epoch k."""
    k = os.environ.get("RMAUNET_FAIL_AFTER_EPOCH")
    if k and int(k) == epoch and not folder.failure_marker.exists():
        folder.create()
        folder.failure_marker.touch()
        raise RuntimeError(f"injected failure after epoch {epoch} (RMAUNET_FAIL_AFTER_EPOCH)")
