"""The decision threshold, in one place: scored from stored maps, chosen on validation.

A trial stores its validation and test probability maps (rmaunet.trial_folder), so any
threshold is scored without a model or a GPU (`scores_at`: what makes Table IX free).
The choice among thresholds is made by one rule (`best_index`) on validation only, by
the study's selection metric; the results row records it (`chosen_threshold`) and
reporting reads that choice instead of making its own. Pure NumPy: reporting imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rmaunet.config import THRESHOLD_GRID, TUNED, TrialConfig
from rmaunet.trial_folder import SPLITS, TrialFolder

__all__ = [
    "GRID",
    "SCORED_METRICS",
    "scores_at",
    "best_index",
    "choose_threshold",
    "decide",
    "detection_scores_at",
    "tile_counts",
    "curve",
]

# The pixel metrics every threshold is scored with (rmaunet.metrics.segmentation_scores).
SCORED_METRICS = ("precision", "recall", "f1", "iou", "miou")
# The thresholds a tuned protocol and checkpoint selection choose among (see config).
GRID = THRESHOLD_GRID


def scores_at(folder: TrialFolder, thresholds: Sequence[float]) -> dict[float, dict[str, float]]:
    """`{threshold: {"val_f1": …, "test_miou": …}}` from the stored uint8 maps, one pass per split.

    The maps are scored as stored (rmaunet.metrics documents how a threshold maps onto
    them); a split without stored maps (a detection-only model) has no entries.
    """
    from rmaunet.metrics import sweep_thresholds

    scores: dict[float, dict[str, float]] = {t: {} for t in thresholds}
    if not scores:
        return scores
    for split in SPLITS:
        stored = folder.load_probabilities(split)
        if stored is None:
            continue
        table = sweep_thresholds(stored[0], stored[1], tuple(thresholds))
        for t in thresholds:
            scores[t].update({f"{split}_{m}": float(table.loc[t, m]) for m in SCORED_METRICS})
    return scores


def best_index(values: Sequence[float]) -> int | None:
    """Index of the largest value, NaN ignored, ties to the earliest (a spec lists the
    plainer setting first); None when every value is NaN."""
    best: int | None = None
    for i, value in enumerate(values):
        if not math.isnan(value) and (best is None or value > values[best]):
            best = i
    return best


def choose_threshold(scores: Mapping[float, Mapping[str, float]], metric: str = "f1") -> float | None:
    """The threshold with the best validation `metric` (None without validation scores)."""
    candidates = list(scores)
    i = best_index([scores[t].get(f"val_{metric}", math.nan) for t in candidates])
    return None if i is None else candidates[i]


def decide(
    folder: TrialFolder, config: TrialConfig, grid_scores: Mapping[float, Mapping[str, float]] | None = None
) -> dict[str, float | str | None]:
    """The thresholds a finished trial is scored at, from its stored validation maps.

    Mask: `config.threshold` when fixed; when tuned, the grid point with the best
    validation `config.select` metric (0.5 if validation has no maps). Detection head
    (None without one): `config.det_threshold` when fixed; when tuned, chosen on
    validation by image-level F1.
    """
    if config.threshold == TUNED:
        chosen = choose_threshold(scores_at(folder, GRID), config.select)
        threshold, protocol = (0.5 if chosen is None else chosen), TUNED
    else:
        threshold, protocol = float(config.threshold), "fixed"
    det_threshold = None
    val_det = folder.load_detection("val")
    if val_det is not None and config.det_threshold != TUNED:
        det_threshold = float(config.det_threshold)
    elif val_det is not None:
        from rmaunet.metrics import detection_scores

        f1 = [detection_scores(val_det[0], val_det[1], t)["f1"] for t in GRID]
        det_threshold = GRID[best_index(f1) or 0]
    return {"threshold": threshold, "threshold_protocol": protocol, "det_threshold": det_threshold}


def detection_scores_at(folder: TrialFolder, threshold: float | None) -> dict[str, dict[str, float]]:
    """`{"val": {...}, "test": {...}}` image-level metrics of the detection head at `threshold`."""
    from rmaunet.metrics import detection_scores

    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        stored = folder.load_detection(split)
        if stored is not None and threshold is not None:
            out[split] = detection_scores(stored[0], stored[1], threshold)
    return out


def tile_counts(folder: TrialFolder, split: str, threshold: float) -> list[list[int]]:
    """[tp, fp, fn] of every tile of a split at `threshold` (what a tile bootstrap resamples)."""
    from rmaunet.metrics import quantised_threshold

    stored = folder.load_probabilities(split)
    if stored is None:
        return []
    mask, q = stored
    truth = mask.reshape(len(mask), -1) > 0
    pred = q.reshape(len(q), -1) >= quantised_threshold(threshold)
    tp = np.sum(truth & pred, axis=1)
    fp = np.sum(~truth & pred, axis=1)
    fn = np.sum(truth & ~pred, axis=1)
    return np.stack([tp, fp, fn], axis=1).astype(int).tolist()


def curve(scores: Mapping[float, Mapping[str, float]], metric: str = "f1") -> list[dict[str, float]]:
    """Validation and test `metric` at every scored threshold (the threshold-curve figure)."""
    return [
        {
            "threshold": t,
            f"val_{metric}": s.get(f"val_{metric}", math.nan),
            f"test_{metric}": s.get(f"test_{metric}", math.nan),
        }
        for t, s in sorted(scores.items())
    ]
