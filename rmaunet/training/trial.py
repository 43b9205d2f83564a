"""One trial: fit a TrialConfig on a dataset, select on validation, score test once.

The loop is a custom `tf.function` train step rather than `model.fit`, because Keras 3
`fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585) and the same step
must serve one worker and many. No Ray import here: the Ray adapters live in
`rmaunet.training.ray_trial`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rmaunet.config import TrialConfig

__all__ = ["TrialResult", "run_trial", "score_best_epoch", "configure_threads", "save_probabilities", "EPOCH_METRICS", "SELECTION_THRESHOLD"]

# Checkpoints are selected at a fixed threshold so that a trial's identity never depends on
# the post-processing threshold (Table IX sweeps it afterwards on the stored probabilities).
SELECTION_THRESHOLD = 0.5

EPOCH_METRICS = ("precision", "recall", "f1", "iou", "miou")
Reporter = Callable[[dict[str, Any]], None]


@dataclass
class TrialResult:
    status: str  # "ok" or "failed"
    reason: str
    epochs_run: int
    best_epoch: int
    val: dict[str, float]
    test: dict[str, float]
    val_det: dict[str, float] = field(default_factory=dict)
    test_det: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    images_per_s: float = float("nan")
    wall_s: float = 0.0
    data_fingerprint: str = ""
    resumed_from: int = 0  # the epoch a restarted trial went on after (0: never restarted)
    params: int = 0
    flops_per_image: int = 0  # forward pass, a multiply-add counted as 2 (rmaunet.models.cost)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "val": self.val,
            "test": self.test,
            "val_det": self.val_det,
            "test_det": self.test_det,
            "resumed_from": self.resumed_from,
            "params": self.params,
            "flops_per_image": self.flops_per_image,
            "history": self.history,
            "images_per_s": self.images_per_s,
            "wall_s": self.wall_s,
            "data_fingerprint": self.data_fingerprint,
        }


def _predictor(model) -> Callable[[np.ndarray, int], dict[str, np.ndarray]]:
    """Prediction maps for a split; one traced function per model, not one per call."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(batch):
        outputs = model(batch, training=False)
        return {k: outputs[k] for k in ("mask", "detection") if k in outputs}

    def predict(x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(x), batch_size):
            for key, value in forward(tf.constant(x[i : i + batch_size])).items():
                parts.setdefault(key, []).append(value.numpy())
        out = {k: np.concatenate(v) for k, v in parts.items()}
        if "mask" in out:
            out["mask"] = out["mask"][..., 0]
        if "detection" in out:
            out["detection"] = out["detection"].reshape(-1)
        return out

    return predict


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


def _score(y: np.ndarray, pred: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    from rmaunet.metrics import segmentation_scores

    return segmentation_scores(y, pred["mask"], threshold) if "mask" in pred else {}


def _detection_score(y: np.ndarray, pred: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    from rmaunet.metrics import detection_scores

    if "detection" not in pred:
        return {}
    return detection_scores(y, pred["detection"], threshold)  # masks: an image with any landslide pixel is positive


def _selection_f1(val: dict[str, float], val_det: dict[str, float]) -> float:
    # Segmentation F1 when there is a mask head; image-level F1 for a detection-only model.
    return val["f1"] if val else val_det.get("f1", 0.0)


def save_probabilities(path: Path, prob: np.ndarray, y: np.ndarray) -> None:
    """uint8-quantised probabilities (stored value = round(255·p)) with their masks, compressed."""
    q = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
    np.savez_compressed(path, prob_u8=q, mask=y.astype(np.uint8))


def make_loss(config: TrialConfig):
    """The training objective over the model's output dict: mask heads, detection, L2.

    Multi-resolution heads are each scored against the mask resized (nearest) to their
    size and averaged; a detection head adds image-level cross-entropy against "the tile
    contains a landslide"; the L2 term is the models' kernel regularisers (`model.losses`).
    """
    import tensorflow as tf

    from rmaunet import losses

    pixel_loss = losses.get(config.loss, **config.loss_kwargs)
    needs_features = getattr(pixel_loss, "needs_features", False)
    detection_loss = losses.get("cross_entropy")

    def mask_term(y, prob, features=None):
        if needs_features:
            return pixel_loss(y, prob, features=features)
        return pixel_loss(y, prob)

    def objective(y, outputs, model_losses):
        terms = []
        heads = [k for k in ("head_half", "head_full", "head_double") if k in outputs]
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
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in model_losses])
        return loss

    objective.supports_xla = getattr(pixel_loss, "supports_xla", True)
    return objective


def wants_deterministic_ops(config: TrialConfig) -> bool:
    """TensorFlow's deterministic ops for a trial: on a CPU without XLA (same config and
    seed, same metrics); off on GPUs and under XLA, where some kernels (e.g. max-pool
    gradients) have no deterministic version."""
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU") and not config.xla


def run_trial(
    config: TrialConfig,
    data_dir: Path | str,
    out_dir: Path | str,
    *,
    report: Reporter | None = None,
    log: Callable[[str], None] | None = None,
    node: str | None = None,
) -> TrialResult:
    """Train, validate every epoch, keep the best epoch's weights, score test once (see _run_trial).

    Deterministic ops are on for the trial when wants_deterministic_ops says so, and only
    for it: the switch is process-global.
    """
    from tensorflow.python.framework import config as tf_config  # the only switch that turns it back off

    turned_on = wants_deterministic_ops(config) and not tf_config.is_op_determinism_enabled()
    if turned_on:
        tf_config.enable_op_determinism()
    try:
        return _run_trial(config, data_dir, out_dir, report=report, log=log, node=node)
    finally:
        if turned_on:
            tf_config.disable_op_determinism()


def _run_trial(
    config: TrialConfig,
    data_dir: Path | str,
    out_dir: Path | str,
    *,
    report: Reporter | None,
    log: Callable[[str], None] | None,
    node: str | None,
) -> TrialResult:
    """Train, validate every epoch, keep the best epoch's weights, score test once.

    Writes into out_dir: checkpoint/ (after every epoch: weights, optimizer, history),
    best.weights.h5, val_probs.npz, test_probs.npz, and last result.json. A trial that
    finds a checkpoint of the same config resumes after its epoch. A NaN loss or an
    out-of-memory error ends the trial with status "failed" and the reason recorded.
    """
    import keras
    import tensorflow as tf

    from rmaunet.data import prepare_splits
    from rmaunet.data.pipeline import make_dataset
    from rmaunet.models import build_model
    from rmaunet.training import precision

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)

    splits = prepare_splits(config, data_dir)
    keras.utils.set_random_seed(config.seed)
    jit = precision.configure(config)  # before the model: Keras reads the policy at layer creation
    size = splits.x_train.shape[1]
    model = build_model(config, splits.num_bands, size)
    objective = make_loss(config)
    if jit and not objective.supports_xla:
        say(f"XLA is off for this trial: loss {config.loss!r} computes its distance maps outside the graph")
        jit = False
    optimizer = precision.wrap_optimizer(keras.optimizers.Adam(learning_rate=config.learning_rate), config)
    optimizer.build(model.trainable_variables)
    scaled = precision.needs_loss_scaling(config)
    _predict = _predictor(model)
    train_ds = make_dataset(
        splits.x_train, splits.y_train, config.batch_size, training=True, augment=config.augment, seed=config.seed
    )

    @tf.function(jit_compile=jit)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = objective(y, outputs, model.losses)
            # float16 gradients underflow without loss scaling; apply_gradients unscales.
            target = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(target, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    checkpoint = EpochCheckpoint(out / "checkpoint", config)
    state = checkpoint.restore(model, optimizer)
    history: list[dict[str, Any]] = state["history"]
    best_f1, best_epoch = state["best_f1"], state["best_epoch"]
    first_epoch = state["epoch"] + 1
    if first_epoch > 1:
        say(f"resuming after epoch {state['epoch']} from {checkpoint.folder}")
    weights_path = out / "best.weights.h5"
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            t0 = time.perf_counter()
            mean_loss, _, seen = train_epoch(train_step, train_ds)
            train_s = time.perf_counter() - t0
            if not math.isfinite(mean_loss):
                reason = f"loss became {mean_loss} in epoch {epoch}"
                say(f"trial stopped: {reason}")
                return _finish_failed(out, reason, epoch, history, started, splits.fingerprint)
            val_pred = _predict(splits.x_val, config.batch_size)
            val = _score(splits.y_val, val_pred, SELECTION_THRESHOLD)
            val_det = _detection_score(splits.y_val, val_pred, SELECTION_THRESHOLD)
            rate = seen / train_s if train_s > 0 else float("nan")
            row = {
                "epoch": epoch,
                "loss": mean_loss,
                **{f"val_{k}": v for k, v in val.items()},
                **{f"val_det_{k}": v for k, v in val_det.items()},
                "images_per_s": rate,
                "epoch_s": time.perf_counter() - t0,
            }
            history.append(row)
            selection = _selection_f1(val, val_det)
            if selection > best_f1:
                best_f1, best_epoch = selection, epoch
                model.save_weights(weights_path)
            checkpoint.save(model, optimizer, {"epoch": epoch, "history": history, "best_f1": best_f1, "best_epoch": best_epoch})
            say(f"epoch {epoch}/{config.epochs} loss {mean_loss:.4f} val F1 {100 * selection:.2f} ({rate:.0f} img/s)")
            if report is not None:
                report(dict(row))
            _maybe_inject_failure(out, epoch)
    except tf.errors.ResourceExhaustedError as exc:
        reason = f"out of memory: {str(exc).splitlines()[0][:200]}"
        say(f"trial stopped: {reason}")
        return _finish_failed(out, reason, len(history), history, started, splits.fingerprint)

    result = score_best_epoch(
        out, config, splits, model, _predict, weights_path, history, best_epoch,
        wall_s=time.perf_counter() - started + state["wall_s"], resumed_from=state["epoch"], log=say,
    )
    _write_result(out, result, node)
    checkpoint.clear()
    return result


def score_best_epoch(
    out: Path,
    config: TrialConfig,
    splits: Any,
    model: Any,
    predict: Callable[[np.ndarray, int], dict[str, np.ndarray]],
    weights_path: Path,
    history: list[dict[str, Any]],
    best_epoch: int,
    *,
    wall_s: float,
    resumed_from: int,
    log: Callable[[str], None] = lambda _msg: None,
) -> TrialResult:
    """The end of every successful trial (one worker or rank 0 of many).

    Selection happened on validation; test is touched exactly once, with the chosen
    weights. The probability maps of both splits are stored for later thresholds.
    """
    model.load_weights(weights_path)
    val_pred = predict(splits.x_val, config.batch_size)
    test_pred = predict(splits.x_test, config.batch_size)
    if "mask" in val_pred:
        save_probabilities(out / "val_probs.npz", val_pred["mask"], splits.y_val)
        save_probabilities(out / "test_probs.npz", test_pred["mask"], splits.y_test)
    rates = [h["images_per_s"] for h in history]
    steady = rates[1:] if len(rates) > 1 else rates  # epoch 1 pays for tracing
    return TrialResult(
        status="ok",
        reason="",
        epochs_run=len(history),
        best_epoch=best_epoch,
        val=_score(splits.y_val, val_pred, config.threshold),
        test=_score(splits.y_test, test_pred, config.threshold),
        val_det=_detection_score(splits.y_val, val_pred, config.threshold),
        test_det=_detection_score(splits.y_test, test_pred, config.threshold),
        history=history,
        images_per_s=float(np.median(steady)) if steady else float("nan"),
        wall_s=wall_s,
        data_fingerprint=splits.fingerprint,
        resumed_from=resumed_from,
        params=int(model.count_params()),
        flops_per_image=_flops(model, log),
    )


def _flops(model, say: Callable[[str], None]) -> int:
    """FLOPs per image for GPU-utilisation figures; 0 (and a log line) if the profiler fails."""
    from rmaunet.models.cost import count_flops

    try:
        return int(count_flops(model))
    except Exception as exc:  # noqa: BLE001 - a cost figure must not lose a finished training
        say(f"FLOP count unavailable: {exc.__class__.__name__}: {exc}")
        return 0


class EpochCheckpoint:
    """After every epoch: model weights, optimizer variables and the loop's state.

    Written to temporary names and renamed, so a process killed mid-save leaves the
    previous epoch's checkpoint intact. The config hash guards against resuming a
    different trial's checkpoint.
    """

    def __init__(self, folder: Path, config: TrialConfig, started: float | None = None) -> None:
        self.folder = folder
        self.key = config.training_hash
        self.started = time.perf_counter() if started is None else started
        self.previous_wall = 0.0  # wall time of the runs before a restart

    def wall_s(self) -> float:
        """The trial's wall time so far, the runs before a restart included."""
        return self.previous_wall + time.perf_counter() - self.started

    def save(self, model, optimizer, state: dict[str, Any], folder: Path | None = None) -> None:
        """Into self.folder, or `folder` (the data-parallel loop writes one per epoch)."""
        folder = folder or self.folder
        folder.mkdir(parents=True, exist_ok=True)
        tmp_w = folder / "tmp.weights.h5"
        model.save_weights(tmp_w)
        tmp_o = folder / "tmp-optimizer.npz"
        with open(tmp_o, "wb") as f:
            np.savez(f, *[np.asarray(v.numpy()) for v in optimizer.variables])
        payload = {**state, "config_hash": self.key, "wall_s": self.wall_s()}
        tmp_s = folder / "tmp-state.json"
        tmp_s.write_text(json.dumps(payload))
        os.replace(tmp_w, folder / "last.weights.h5")
        os.replace(tmp_o, folder / "optimizer.npz")
        os.replace(tmp_s, folder / "state.json")  # last: it marks the checkpoint complete

    def restore(self, model, optimizer, folder: Path | None = None) -> dict[str, Any]:
        folder = folder or self.folder
        fresh = {"epoch": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "wall_s": 0.0}
        state_path = folder / "state.json"
        if not state_path.is_file():
            return fresh
        try:
            state = json.loads(state_path.read_text())
            if state.get("config_hash") != self.key:
                return fresh
            model.load_weights(folder / "last.weights.h5")
            with np.load(folder / "optimizer.npz") as saved:
                values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            if len(values) != len(optimizer.variables):
                return fresh
            for var, value in zip(optimizer.variables, values):
                var.assign(value)
        except (OSError, ValueError, json.JSONDecodeError):
            return fresh  # an unreadable checkpoint: start over rather than guess
        self.previous_wall = float(state.get("wall_s", 0.0))
        return {**fresh, **state}

    def clear(self) -> None:
        for name in ("last.weights.h5", "optimizer.npz", "state.json"):
            (self.folder / name).unlink(missing_ok=True)


def _maybe_inject_failure(out: Path, epoch: int) -> None:
    """Fault injection for tests: RMAUNET_FAIL_AFTER_EPOCH=k kills the trial once after epoch k."""
    k = os.environ.get("RMAUNET_FAIL_AFTER_EPOCH")
    marker = out / ".failure-injected"
    if k and int(k) == epoch and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure after epoch {epoch} (RMAUNET_FAIL_AFTER_EPOCH)")


def _finish_failed(
    out: Path, reason: str, epoch: int, history: list[dict[str, Any]], started: float, fingerprint: str
) -> TrialResult:
    result = TrialResult(
        status="failed",
        reason=reason,
        epochs_run=epoch,
        best_epoch=0,
        val={},
        test={},
        history=history,
        wall_s=time.perf_counter() - started,
        data_fingerprint=fingerprint,
    )
    _write_result(out, result)
    return result


def _write_result(out: Path, result: TrialResult, node: str | None = None) -> None:
    """result.json marks a finished trial: written last, atomically, with where it ran."""
    write_json_atomic(
        out / "result.json", {**result.to_dict(), "node": node or socket.gethostname(), "accelerator": _accelerator()}
    )


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _accelerator() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{len(gpus)}x {details.get('device_name', 'GPU')}"


def configure_threads() -> None:
    """Match TensorFlow's thread pools to the CPUs Ray gave this process.

    Ray sets OMP_NUM_THREADS to the trial's CPU count; TensorFlow ignores it and would
    start one thread per core in every concurrent trial, oversubscribing the node.
    """
    n = os.environ.get("OMP_NUM_THREADS")
    if not n or not n.isdigit():
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(int(n), 1))
        tf.config.threading.set_inter_op_parallelism_threads(max(int(n), 1))
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: keep its pools

