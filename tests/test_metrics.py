"""Metrics: pixel, image and threshold-sweep scores against scikit-learn, streaming, quantised maps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from rmaunet.metrics import (
    DetectionCounts,
    SegmentationCounts,
    ThresholdSweep,
    detection_scores,
    quantised_threshold,
    segmentation_scores,
    sweep_thresholds,
)

SHAPE = (6, 16, 16)
SEG_KEYS = ("precision", "recall", "f1", "iou", "miou")


def _case(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_prob = rng.random(SHAPE)
    if kind == "random":
        y_true = (rng.random(SHAPE) < 0.3).astype(np.float32)
    elif kind == "correlated":
        y_true = (y_prob + 0.4 * rng.normal(size=SHAPE) > 0.7).astype(np.uint8)
    elif kind == "no_landslide":
        y_true = np.zeros(SHAPE, np.float32)
    elif kind == "all_landslide":
        y_true = np.ones(SHAPE, np.float32)
    else:  # no landslide and none predicted
        y_true, y_prob = np.zeros(SHAPE, np.float32), 0.4 * y_prob
    return y_true, y_prob


def _sklearn_segmentation(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict[str, float]:
    t = y_true.reshape(-1) > 0.5
    p = y_prob.reshape(-1).astype(np.float64) >= threshold
    iou = jaccard_score(t, p, zero_division=0)
    iou_background = jaccard_score(t, p, pos_label=0, zero_division=0)
    return {
        "precision": precision_score(t, p, zero_division=0),
        "recall": recall_score(t, p, zero_division=0),
        "f1": f1_score(t, p, zero_division=0),
        "iou": iou,
        "miou": (iou + iou_background) / 2,
    }


KINDS = ["random", "correlated", "no_landslide", "all_landslide", "empty_and_none_predicted"]


# behaviour: pixel scores equal scikit-learn's, empty masks included (zero_division = 0, no warnings)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.95])
def test_segmentation_scores_match_sklearn(kind, threshold):
    y_true, y_prob = _case(kind)
    ours = segmentation_scores(y_true, y_prob, threshold)
    assert tuple(ours) == SEG_KEYS
    expected = _sklearn_segmentation(y_true, y_prob, threshold)
    for key in SEG_KEYS:
        assert ours[key] == pytest.approx(expected[key], abs=1e-12), key


# behaviour: the documented empty-split convention: no landslide, none predicted -> 0, 0, 0, 0, mIoU 0.5
def test_empty_split_convention():
    scores = segmentation_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0, "miou": 0.5}


# behaviour: streaming batch by batch gives the same counts as scoring the split at once
def test_segmentation_counts_stream():
    y_true, y_prob = _case("correlated", seed=1)
    counts = SegmentationCounts(0.6)
    for i in range(0, len(y_true), 4):
        counts.update(y_true[i : i + 4], y_prob[i : i + 4, ..., None])  # a trailing channel axis is fine
    t, p = y_true > 0.5, y_prob >= 0.6
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (
        np.sum(t & p),
        np.sum(~t & p),
        np.sum(t & ~p),
        np.sum(~t & ~p),
    )
    assert counts.scores() == segmentation_scores(y_true, y_prob, 0.6)


# behaviour: a sweep equals the one-threshold scorer at each threshold, in the order given, duplicates kept
@pytest.mark.parametrize("kind", KINDS)
def test_sweep_equals_scorer_at_each_threshold(kind):
    y_true, y_prob = _case(kind, seed=2)
    thresholds = [0.9, 0.0, 0.5, 0.123, 0.5, 1.0, float(y_prob.flat[7])]  # one exactly on a pixel's value
    table = sweep_thresholds(y_true, y_prob, thresholds)
    assert list(table.index) == thresholds
    for row, t in enumerate(thresholds):
        expected = segmentation_scores(y_true, y_prob, t)
        assert table.iloc[row][list(SEG_KEYS)].to_dict() == pytest.approx(expected, abs=1e-12)
        assert table.iloc[row][list(SEG_KEYS)].to_dict() == pytest.approx(_sklearn_segmentation(y_true, y_prob, t))


# behaviour: float32 probabilities are compared in float64, exactly like the scorer (no threshold rounding)
def test_float32_probabilities_compare_exactly():
    y_prob = np.array([np.float32(0.3), np.nextafter(np.float32(0.3), np.float32(0))], dtype=np.float32)
    y_true = np.array([1, 1])
    # float32(0.3) > 0.3 > its float32 predecessor: one pixel passes 0.3, the other does not
    assert sweep_thresholds(y_true, y_prob, [0.3])["tp"].iloc[0] == 1
    assert SegmentationCounts(0.3).update(y_true, y_prob).tp == 1


# behaviour: the streaming sweep, fed batch by batch, equals one pass over the whole split
def test_threshold_sweep_streams():
    y_true, y_prob = _case("correlated", seed=3)
    thresholds = np.linspace(0, 1, 21)
    sweep = ThresholdSweep(thresholds)
    for i in range(len(y_true)):
        assert sweep.update(y_true[i], y_prob[i]) is sweep
    whole = sweep_thresholds(y_true, y_prob, thresholds)
    assert sweep.scores().equals(whole)


# behaviour: a threshold written as k/255 maps onto the quantised value k, for every k
@pytest.mark.parametrize("k", range(256))
def test_quantised_threshold_grid(k):
    assert quantised_threshold(k / 255) == k
    assert quantised_threshold(np.float32(k / 255)) in (k, k + 1)  # float32 rounding may cross the grid


# behaviour: on uint8 maps the sweep equals the float scorer on q/255 for every grid threshold
def test_quantised_sweep_equals_float_scorer_on_grid():
    y_true, y_prob = _case("correlated", seed=4)
    q = np.clip(np.rint(y_prob * 255.0), 0, 255).astype(np.uint8)  # the trial's save_probabilities
    grid = np.arange(256) / 255
    table = sweep_thresholds(y_true, q, grid)
    float_table = sweep_thresholds(y_true, q.astype(np.float64) / 255, grid)
    assert table.equals(float_table)
    for t in (grid[0], grid[128], grid[242], grid[255]):
        assert segmentation_scores(y_true, q, t) == segmentation_scores(y_true, q / 255.0, t)


# behaviour: off the grid a quantised threshold acts like the next grid point up
def test_quantised_threshold_between_grid_points():
    y_true, y_prob = _case("random", seed=5)
    q = np.clip(np.rint(y_prob * 255.0), 0, 255).astype(np.uint8)
    off_grid = [0.5, 0.95, 1e-4, 0.999]
    snapped = [np.ceil(255 * t) / 255 for t in off_grid]
    assert sweep_thresholds(y_true, q, off_grid).values.tolist() == sweep_thresholds(y_true, q, snapped).values.tolist()


# behaviour: probabilities that are neither floats nor uint8, NaN, or mismatched sizes are refused
@pytest.mark.parametrize(
    "y_prob",
    [np.zeros(4, np.int64), np.zeros(4, bool), np.array([0.1, np.nan, 0.2, 0.3]), np.zeros(5)],
)
def test_bad_probabilities_raise(y_prob):
    with pytest.raises(ValueError):
        segmentation_scores(np.zeros(4), y_prob)


# behaviour: a sweep needs at least one finite threshold
@pytest.mark.parametrize("thresholds", [[], [0.5, float("nan")], [[0.1, 0.2]]])
def test_bad_thresholds_raise(thresholds):
    with pytest.raises(ValueError):
        ThresholdSweep(thresholds)


def _sklearn_detection(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(labels, predicted),
        "precision": precision_score(labels, predicted, zero_division=0),
        "recall": recall_score(labels, predicted, zero_division=0),
        "f1": f1_score(labels, predicted, zero_division=0),
    }


# behaviour: image-level scores equal scikit-learn's on per-image labels and on masks / probability maps
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.97])
def test_detection_scores_match_sklearn(kind, threshold):
    rng = np.random.default_rng(6)
    y_true, y_prob = _case(kind, seed=6)
    y_true = y_true * (rng.random((len(y_true), 1, 1)) < 0.5)  # about half the images hold no landslide
    labels = y_true.reshape(len(y_true), -1).max(axis=1) > 0.5
    image_prob = y_prob.reshape(len(y_prob), -1).max(axis=1)
    expected = _sklearn_detection(labels, image_prob >= threshold)
    assert detection_scores(y_true, y_prob, threshold) == pytest.approx(expected, abs=1e-12)
    assert detection_scores(labels.astype(np.float32), image_prob, threshold) == pytest.approx(expected, abs=1e-12)


# behaviour: detection on uint8 maps uses the quantised rule and streams over batches
def test_detection_quantised_and_streaming():
    rng = np.random.default_rng(7)
    labels = rng.random(40) < 0.5
    image_prob = np.clip(labels * 0.4 + rng.random(40) * 0.6, 0, 1)
    q = np.rint(image_prob * 255).astype(np.uint8)
    counts = DetectionCounts(100 / 255)
    for i in range(0, 40, 7):
        counts.update(labels[i : i + 7], q[i : i + 7])
    expected = _sklearn_detection(labels, q >= 100)
    assert counts.scores() == pytest.approx(expected, abs=1e-12)
    assert detection_scores(labels, q / 255.0, 100 / 255) == pytest.approx(expected, abs=1e-12)
