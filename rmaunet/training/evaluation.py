"""Evaluation shared by every trial: predict a split, score it, pick the selection score.

One worker and rank 0 of a data-parallel group call the same functions here, so a trial
is validated, selected and scored the same way wherever it trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

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
    y: np.ndarray, pred: dict[str, np.ndarray], metric: str
) -> tuple[dict[str, float], float | None, dict[str, float], float | None]:
    """Validation scores at the grid threshold that maximises `metric` (mask head) and
    image-level F1 (detection head): (mask scores, its threshold, detection scores, its threshold).

    What checkpoint selection compares: a model is judged at its best threshold, so an
    epoch (or a loss) is not ranked by how well its probabilities happen to sit around 0.5.
    """
    from rmaunet import metrics
    from rmaunet.thresholds import GRID, best_index

    val: dict[str, float] = {}
    threshold = det_threshold = None
    if "mask" in pred:
        table = metrics.sweep_thresholds(y, pred["mask"], GRID)
        threshold = GRID[best_index([float(v) for v in table[metric]]) or 0]
        val = {m: float(table.loc[threshold, m]) for m in table.columns}
    val_det: dict[str, float] = {}
    if "detection" in pred:
        per_t = [metrics.detection_scores(y, pred["detection"], t) for t in GRID]
        i = best_index([d["f1"] for d in per_t]) or 0
        val_det, det_threshold = per_t[i], GRID[i]
    return val, threshold, val_det, det_threshold


def selection_score(val: dict[str, float], val_det: dict[str, float], metric: str = "f1") -> float:
    """The validation number checkpoints are selected by: the mask head's `metric`, or
    image-level F1 for a detection-only model."""
    return val[metric] if val else val_det.get("f1", 0.0)
