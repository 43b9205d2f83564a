"""Pixel and image metrics of the landslide class, and threshold sweeps.

Segmentation metrics sum TP/FP/FN/TN over a whole split (the Landslide4Sense
competition's way), not per image; every scorer streams: `update()` takes one batch at a
time and keeps only counts, so a split never has to be in memory.

Conventions (shared by every scorer here):

- A pixel is landslide in the mask when its value is > 0.5 (float or 0/1 integer masks).
- A float probability p is predicted landslide at threshold t when p >= t, compared in
  float64 (float32 probabilities are widened exactly, the threshold is not rounded).
- uint8 probabilities are the trial's quantised maps: p is stored as q = round(255·p) and
  q stands for the probability q/255. At threshold t, q is predicted landslide when
  q >= ceil(255·t − 1e-9), i.e. when q/255 >= t, with a threshold within 1e-9/255 of
  the grid snapped onto it so that t = k/255 written as a float means exactly q >= k.
  Thresholds on the grid k/255 therefore give the same counts as the float scorer run on
  q/255; any threshold between grid points behaves like the next grid point up.
- A ratio whose denominator is zero is 0 (scikit-learn's `zero_division=0`, and the
  Landslide4Sense evaluation code's behaviour): with no landslide in the masks and none
  predicted, precision = recall = F1 = IoU = 0 and the background IoU is 1, so mIoU = 0.5.
  The mean IoU averages the landslide and background IoUs.
- Detection (image level): an image is a landslide image when any pixel of its mask is;
  its score is the given per-image probability, or the maximum of its probability map,
  so a segmentation model "detects" an image when one of its pixels passes the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

__all__ = [
    "SegmentationCounts",
    "ThresholdSweep",
    "DetectionCounts",
    "segmentation_scores",
    "detection_scores",
    "sweep_thresholds",
    "quantised_threshold",
]

# Pixels per chunk: bounds the float64 temporaries of one update to a few MiB.
_CHUNK = 1 << 20
# Snaps thresholds written as k/255 in floating point onto the integer k.
_GRID_TOLERANCE = 1e-9


def quantised_threshold(threshold: float) -> int:
    """The smallest uint8 value q (0..256, 256: none) predicted landslide at `threshold`."""
    return int(min(max(math.ceil(255.0 * threshold - _GRID_TOLERANCE), 0), 256))


def _check_probabilities(y_prob: np.ndarray) -> np.ndarray:
    if y_prob.dtype == np.uint8:
        return y_prob
    if y_prob.dtype == np.bool_ or not np.issubdtype(y_prob.dtype, np.floating):
        raise ValueError(f"probabilities must be floats or uint8-quantised (0..255), got dtype {y_prob.dtype}")
    if np.isnan(y_prob).any():
        raise ValueError("probabilities contain NaN")
    return y_prob


def _chunks(y_true: np.ndarray, y_prob: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(landslide mask, probabilities) as flat chunks; shapes need only equal sizes."""
    t = np.asarray(y_true).reshape(-1)
    p = _check_probabilities(np.asarray(y_prob)).reshape(-1)
    if t.size != p.size:
        raise ValueError(f"masks have {t.size} pixels but probabilities {p.size}")
    for start in range(0, t.size, _CHUNK):
        yield t[start : start + _CHUNK] > 0.5, p[start : start + _CHUNK]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _segmentation_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    iou = _ratio(tp, tp + fp + fn)
    iou_background = _ratio(tn, tn + fn + fp)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": iou,
        "miou": (iou + iou_background) / 2,
    }


class ThresholdSweep:
    """Streaming confusion counts at many thresholds at once, one pass over the pixels.

    Each update histograms the probabilities of landslide and of background pixels
    (uint8: 256 bins; floats: the bins between sorted thresholds) and turns the
    histograms into "predicted landslide at threshold t" counts by cumulative sums.
    """

    def __init__(self, thresholds: Iterable[float]) -> None:
        values = np.asarray(list(thresholds), dtype=np.float64)
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"thresholds must be a non-empty list of finite numbers, got {values!r}")
        self.thresholds = values
        self._grid, self._position = np.unique(values, return_inverse=True)
        self._levels = np.array([quantised_threshold(t) for t in self._grid])
        # Per sorted threshold: pixels predicted landslide among landslide / background pixels.
        self._tp = np.zeros(self._grid.size, dtype=np.int64)
        self._fp = np.zeros(self._grid.size, dtype=np.int64)
        self._positives = 0
        self._negatives = 0

    def _at_or_above(self, p: np.ndarray) -> np.ndarray:
        """Per sorted threshold, how many of the probabilities p are predicted landslide."""
        if p.dtype == np.uint8:
            hist = np.bincount(p, minlength=256)
            ge = np.concatenate([np.cumsum(hist[::-1])[::-1], [0]])  # ge[q] = #(values >= q)
            return ge[self._levels]
        # bins[i] = number of thresholds <= p_i: pixel i is positive at sorted thresholds j < bins[i].
        bins = np.searchsorted(self._grid, p.astype(np.float64, copy=False), side="right")
        hist = np.bincount(bins, minlength=self._grid.size + 1)
        return np.cumsum(hist[::-1])[::-1][1:]

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> ThresholdSweep:
        for truth, p in _chunks(y_true, y_prob):
            self._tp += self._at_or_above(p[truth])
            self._fp += self._at_or_above(p[~truth])
            positives = int(np.count_nonzero(truth))
            self._positives += positives
            self._negatives += truth.size - positives
        return self

    def counts(self) -> dict[str, np.ndarray]:
        """tp, fp, fn, tn per threshold, in the order the thresholds were given."""
        tp, fp = self._tp[self._position], self._fp[self._position]
        return {"tp": tp, "fp": fp, "fn": self._positives - tp, "tn": self._negatives - fp}

    def scores(self) -> pd.DataFrame:
        """One row per threshold (the index): precision, recall, f1, iou, miou, tp, fp, fn, tn."""
        counts = self.counts()
        table = pd.DataFrame({**_segmentation_from_counts(**counts), **counts}, index=self.thresholds)
        table.index.name = "threshold"
        return table


class SegmentationCounts:
    """Streaming confusion counts of the landslide class at one threshold."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._sweep = ThresholdSweep([threshold])

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> SegmentationCounts:
        self._sweep.update(y_true, y_prob)
        return self

    @property
    def tp(self) -> int:
        return int(self._sweep.counts()["tp"][0])

    @property
    def fp(self) -> int:
        return int(self._sweep.counts()["fp"][0])

    @property
    def fn(self) -> int:
        return int(self._sweep.counts()["fn"][0])

    @property
    def tn(self) -> int:
        return int(self._sweep.counts()["tn"][0])

    def scores(self) -> dict[str, float]:
        """precision, recall, f1, iou (landslide) and miou (mean with the background IoU)."""
        counts = {k: v[0] for k, v in self._sweep.counts().items()}
        return {k: float(v) for k, v in _segmentation_from_counts(**counts).items()}


def segmentation_scores(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Pixel-level precision, recall, f1, iou and miou of a whole split at one threshold."""
    return SegmentationCounts(threshold).update(y_true, y_prob).scores()


def sweep_thresholds(y_true: np.ndarray, y_prob: np.ndarray, thresholds: Iterable[float]) -> pd.DataFrame:
    """Every segmentation metric at every threshold, in one pass (see ThresholdSweep)."""
    return ThresholdSweep(thresholds).update(y_true, y_prob).scores()


def _image_labels(y_true: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    return (y_true.reshape(len(y_true), -1) > 0.5).any(axis=1)


def _image_scores(y_prob: np.ndarray) -> np.ndarray:
    y_prob = _check_probabilities(np.asarray(y_prob))
    return y_prob.reshape(len(y_prob), -1).max(axis=1)


class DetectionCounts:
    """Streaming image-level confusion counts: landslide image or not, at one threshold."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> DetectionCounts:
        """y_true: (N,) labels or (N, …) masks; y_prob: (N,) probabilities or (N, …) maps."""
        truth, score = _image_labels(y_true), _image_scores(y_prob)
        if truth.shape != score.shape:
            raise ValueError(f"{truth.size} images in the masks but {score.size} in the probabilities")
        if score.dtype == np.uint8:
            predicted = score.astype(np.int64) >= quantised_threshold(self.threshold)
        else:
            predicted = score.astype(np.float64) >= self.threshold
        self.tp += int(np.count_nonzero(truth & predicted))
        self.fp += int(np.count_nonzero(~truth & predicted))
        self.fn += int(np.count_nonzero(truth & ~predicted))
        self.tn += int(np.count_nonzero(~truth & ~predicted))
        return self

    def scores(self) -> dict[str, float]:
        """accuracy, precision, recall, f1 of the landslide-image class."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        return {
            "accuracy": float(_ratio(tp + tn, tp + fp + fn + tn)),
            "precision": float(_ratio(tp, tp + fp)),
            "recall": float(_ratio(tp, tp + fn)),
            "f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
        }


def detection_scores(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Image-level accuracy, precision, recall and f1 (see the module's conventions)."""
    return DetectionCounts(threshold).update(y_true, y_prob).scores()
