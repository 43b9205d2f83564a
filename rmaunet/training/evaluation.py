"""Evaluation shared by every trial: predict a split, score it, pick the selection score.

One worker and rank 0 of a data-parallel group call the same functions here, so a trial
is validated, selected and scored the same way wherever it trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rmaunet.config import TUNED

__all__ = [
    "Predict",
    "make_predictor",
    "best_over_thresholds",
    "selection_score",
    "OUTPUTS",
]

# The model outputs that are predictions (the others are training-only heads and features).
OUTPUTS = ("mask", "detection")
Predict = Callable[[np.ndarray, int], dict[str, np.ndarray]]


def make_predictor(model: Any) -> Predict:
    """Prediction maps for a split; one traced function per model, not one per call."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(batch):
        outputs = model(batch, training=False)
        return {k: outputs[k] for k in OUTPUTS if k in outputs}

    def predict(x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        # One trace for every batch size of these tiles (a split's last batch is smaller);
        # later calls with such tiles reuse it.
        forward.get_concrete_function(tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)))
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


def best_over_thresholds(
    y: np.ndarray,
    pred: dict[str, np.ndarray],
    metric: str,
    threshold: float | str = TUNED,
    det_threshold: float | str = TUNED,
) -> tuple[dict[str, float], float | None, dict[str, float], float | None]:
    """Validation scores of the mask head by `metric` and the detection head by image-level
    F1, each at its own threshold: (mask scores, its threshold, detection scores, its threshold).

    What checkpoint selection compares. A tuned head is judged at the grid threshold that
    maximises its metric, so an epoch (or a loss) is not ranked by how well its
    probabilities happen to sit around 0.5; a fixed head is judged at the threshold its
    row is scored at, so the kept epoch is the best one at that threshold.
    """
    from rmaunet import metrics
    from rmaunet.thresholds import GRID, best_index

    def candidates(fixed: float | str) -> tuple[float, ...]:
        return GRID if fixed == TUNED else (float(fixed),)

    val: dict[str, float] = {}
    chosen = det_chosen = None
    if "mask" in pred:
        grid = candidates(threshold)
        table = metrics.sweep_thresholds(y, pred["mask"], grid)
        chosen = grid[best_index([float(v) for v in table[metric]]) or 0]
        val = {m: float(table.loc[chosen, m]) for m in table.columns}
    val_det: dict[str, float] = {}
    if "detection" in pred:
        grid = candidates(det_threshold)
        per_t = [metrics.detection_scores(y, pred["detection"], t) for t in grid]
        i = best_index([d["f1"] for d in per_t]) or 0
        val_det, det_chosen = per_t[i], grid[i]
    return val, chosen, val_det, det_chosen


def selection_score(val: dict[str, float], val_det: dict[str, float], metric: str = "f1") -> float:
    """The validation number checkpoints are selected by: the mask head's `metric`, or
    image-level F1 for a detection-only model."""
    return val[metric] if val else val_det.get("f1", 0.0)
