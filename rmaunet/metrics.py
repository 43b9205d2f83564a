"""Pixel-level segmentation metrics, TP/FP/FN summed over a whole split (the
Landslide4Sense competition's way), accumulated batch by batch."""

from __future__ import annotations

import numpy as np

__all__ = ["SegmentationCounts", "segmentation_scores"]


class SegmentationCounts:
    """Streaming confusion counts of the landslide class at one threshold."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> None:
        t = np.asarray(y_true).reshape(-1) > 0.5
        p = np.asarray(y_prob).reshape(-1) >= self.threshold
        self.tp += int(np.count_nonzero(t & p))
        self.fp += int(np.count_nonzero(~t & p))
        self.fn += int(np.count_nonzero(t & ~p))
        self.tn += int(np.count_nonzero(~t & ~p))

    def scores(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
        iou_bg = tn / (tn + fp + fn) if tn + fp + fn else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "iou": iou, "miou": (iou + iou_bg) / 2}


def segmentation_scores(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    counts = SegmentationCounts(threshold)
    counts.update(y_true, y_prob)
    return counts.scores()
