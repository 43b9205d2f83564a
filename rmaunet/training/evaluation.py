"""Evaluation shared by every trial: predict a split, score it, pick the selection score.

One worker and rank 0 of a data-parallel group call the same functions here, so a trial
is validated, selected and scored the same way wherever it trains.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["Predict", "make_predictor", "mask_scores", "detection_scores", "selection_score", "OUTPUTS"]

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


def mask_scores(y: np.ndarray, pred: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """Landslide-class pixel metrics of the mask head ({} for a detection-only model)."""
    from rmaunet.metrics import segmentation_scores

    return segmentation_scores(y, pred["mask"], threshold) if "mask" in pred else {}


def detection_scores(y: np.ndarray, pred: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """Image-level metrics of the detection head ({} without one); an image with any
    landslide pixel in its mask is a positive."""
    from rmaunet import metrics

    return metrics.detection_scores(y, pred["detection"], threshold) if "detection" in pred else {}


def selection_score(val: dict[str, float], val_det: dict[str, float], metric: str = "f1") -> float:
    """The validation number checkpoints are selected by: the mask head's `metric`, or
    image-level F1 for a detection-only model."""
    return val[metric] if val else val_det.get("f1", 0.0)
