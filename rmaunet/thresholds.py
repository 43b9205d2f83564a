"""The decision threshold, in one place: scored from stored maps, chosen on validation.

A trial stores its validation and test probability maps (rmaunet.trial_folder), so any
threshold is scored without a model or a GPU (`scores_at`: what makes Table IX free).
The choice among thresholds is made by one rule (`best_index`) on validation only, by
the study's selection metric; the results row records it (`chosen_threshold`) and
reporting reads that choice instead of making its own. Pure NumPy: reporting imports it.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from rmaunet.trial_folder import SPLITS, TrialFolder

__all__ = ["scores_at", "best_index", "choose_threshold", "SCORED_METRICS"]

# The pixel metrics every threshold is scored with (rmaunet.metrics.segmentation_scores).
SCORED_METRICS = ("precision", "recall", "f1", "iou", "miou")


def scores_at(folder: TrialFolder, thresholds: Sequence[float]) -> dict[float, dict[str, float]]:
    """`{threshold: {"val_f1": …, "test_miou": …}}` from the stored uint8 maps, one pass per split.

    The maps are scored as stored (rmaunet.metrics documents how a threshold maps onto
    them); a split without stored maps (a detection-only model) has no entries.
    """
    from rmaunet.metrics import sweep_thresholds

    scores: dict[float, dict[str, float]] = {t: {} for t in thresholds}
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
