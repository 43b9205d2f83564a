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

__all__ = ["TrialResult", "run_trial", "configure_threads", "save_probabilities", "EPOCH_METRICS", "SELECTION_THRESHOLD"]

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
    history: list[dict[str, Any]] = field(default_factory=list)
    images_per_s: float = float("nan")
    wall_s: float = 0.0
    data_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "val": self.val,
            "test": self.test,
            "history": self.history,
            "images_per_s": self.images_per_s,
            "wall_s": self.wall_s,
            "data_fingerprint": self.data_fingerprint,
        }


def _predictor(model) -> Callable[[np.ndarray, int], np.ndarray]:
    """Probability maps for a split; one traced function per model, not one per call."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(batch):
        return model(batch, training=False)["mask"]

    def predict(x: np.ndarray, batch_size: int) -> np.ndarray:
        out = [forward(tf.constant(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out)[..., 0]

    return predict


def _score(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    from rmaunet.metrics import segmentation_scores

    return segmentation_scores(y, prob, threshold)


def save_probabilities(path: Path, prob: np.ndarray, y: np.ndarray) -> None:
    """uint8-quantised probabilities (1/255 steps) with their masks, compressed."""
    q = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
    np.savez_compressed(path, prob_u8=q, mask=y.astype(np.uint8))


def run_trial(
    config: TrialConfig,
    data_dir: Path | str,
    out_dir: Path | str,
    *,
    report: Reporter | None = None,
    log: Callable[[str], None] | None = None,
) -> TrialResult:
    """Train, validate every epoch, keep the best epoch's weights, score test once.

    Writes into out_dir: best.weights.h5, history.json, val_probs.npz, test_probs.npz,
    result.json. A NaN loss ends the trial with status "failed" and a recorded reason.
    """
    import keras
    import tensorflow as tf

    from rmaunet import losses
    from rmaunet.data import prepare_splits
    from rmaunet.data.pipeline import make_dataset
    from rmaunet.models import build_model

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)

    splits = prepare_splits(config, data_dir)
    keras.utils.set_random_seed(config.seed)
    size = splits.x_train.shape[1]
    model = build_model(config, splits.num_bands, size)
    loss_fn = losses.get(config.loss, **config.loss_kwargs)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    _predict = _predictor(model)
    train_ds = make_dataset(
        splits.x_train, splits.y_train, config.batch_size, training=True, augment=config.augment, seed=config.seed
    )

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = loss_fn(y, outputs["mask"])
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    history: list[dict[str, Any]] = []
    best_f1, best_epoch = -1.0, 0
    weights_path = out / "best.weights.h5"
    rates: list[float] = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        total, steps, seen = 0.0, 0, 0
        for x, y in train_ds:
            total += float(train_step(x, y))
            steps += 1
            seen += int(x.shape[0])
        train_s = time.perf_counter() - t0
        mean_loss = total / max(steps, 1)
        if not math.isfinite(mean_loss):
            reason = f"loss became {mean_loss} in epoch {epoch}"
            say(f"trial stopped: {reason}")
            return _finish_failed(out, reason, epoch, history, started, splits.fingerprint)
        val_prob = _predict(splits.x_val, config.batch_size)
        val = _score(splits.y_val, val_prob, SELECTION_THRESHOLD)
        rate = seen / train_s if train_s > 0 else float("nan")
        rates.append(rate)
        row = {
            "epoch": epoch,
            "loss": mean_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "images_per_s": rate,
            "epoch_s": time.perf_counter() - t0,
        }
        history.append(row)
        if val["f1"] > best_f1:
            best_f1, best_epoch = val["f1"], epoch
            model.save_weights(weights_path)
        say(f"epoch {epoch}/{config.epochs} loss {mean_loss:.4f} val F1 {100 * val['f1']:.2f} ({rate:.0f} img/s)")
        if report is not None:
            report(dict(row))

    # Selection happened on validation; test is touched exactly once, with the chosen weights.
    model.load_weights(weights_path)
    val_prob = _predict(splits.x_val, config.batch_size)
    test_prob = _predict(splits.x_test, config.batch_size)
    save_probabilities(out / "val_probs.npz", val_prob, splits.y_val)
    save_probabilities(out / "test_probs.npz", test_prob, splits.y_test)
    # Steady state: the first epoch pays for tracing, so it is left out when there are more.
    steady = rates[1:] if len(rates) > 1 else rates
    result = TrialResult(
        status="ok",
        reason="",
        epochs_run=config.epochs,
        best_epoch=best_epoch,
        val=_score(splits.y_val, val_prob, config.threshold),
        test=_score(splits.y_test, test_prob, config.threshold),
        history=history,
        images_per_s=float(np.median(steady)),
        wall_s=time.perf_counter() - started,
        data_fingerprint=splits.fingerprint,
    )
    _write_result(out, result)
    return result


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


def _write_result(out: Path, result: TrialResult) -> None:
    """result.json marks a finished trial: written last, atomically, with where it ran."""
    payload = {**result.to_dict(), "node": socket.gethostname(), "accelerator": _accelerator()}
    tmp = out / ".result.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, out / "result.json")


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

