"""rmaunet.thresholds: scoring stored maps at any threshold and the one choice rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rmaunet import thresholds
from rmaunet.metrics import segmentation_scores
from rmaunet.trial_folder import TrialFolder


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.1, 0.5, 0.3], 1),
        ([0.5, 0.5, 0.2], 0),  # ties go to the earlier (plainer) setting
        ([math.nan, 0.2, math.nan], 1),  # NaN is never the best
        ([math.nan, math.nan], None),
        ([], None),
    ],
)
def test_best_index(values: list[float], expected: int | None) -> None:
    assert thresholds.best_index(values) == expected


def test_choose_threshold_uses_validation_only() -> None:
    # Test is much better at 0.7, validation at 0.3: the choice follows validation.
    scores = {0.3: {"val_f1": 0.8, "test_f1": 0.1}, 0.7: {"val_f1": 0.6, "test_f1": 0.9}}
    assert thresholds.choose_threshold(scores, "f1") == 0.3
    assert thresholds.choose_threshold({0.3: {"test_f1": 0.9}}, "f1") is None


def test_choose_threshold_honours_the_selection_metric() -> None:
    scores = {0.3: {"val_f1": 0.8, "val_precision": 0.5}, 0.7: {"val_f1": 0.6, "val_precision": 0.9}}
    assert thresholds.choose_threshold(scores, "precision") == 0.7


def test_scores_from_stored_maps_equal_scores_of_the_dequantised_probabilities(tmp_path: Path) -> None:
    # What a results row reports is what the metrics give on the stored maps.
    rng = np.random.default_rng(0)
    folder = TrialFolder(tmp_path).create()
    prob = rng.random((4, 8, 8)).astype(np.float32)
    mask = (rng.random((4, 8, 8)) > 0.6).astype(np.uint8)
    for split in ("val", "test"):
        folder.save_probabilities(split, prob, mask)
    got = thresholds.scores_at(folder, (0.2, 0.5))
    stored_mask, q = folder.load_probabilities("test")
    for t in (0.2, 0.5):
        expected = segmentation_scores(stored_mask, q.astype(np.float64) / 255.0, t)
        assert got[t]["test_f1"] == pytest.approx(expected["f1"])
        assert got[t]["val_miou"] == pytest.approx(expected["miou"])


def test_a_trial_without_maps_has_no_scores(tmp_path: Path) -> None:
    # A detection-only model stores no mask maps: nothing to score, no crash.
    assert thresholds.scores_at(TrialFolder(tmp_path), (0.5,)) == {0.5: {}}


def _calibrated_low(rng: np.random.Generator, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Masks whose landslide pixels score about 0.3 and background about 0.1: best cut well below 0.5."""
    mask = (rng.random((n, 8, 8)) > 0.7).astype(np.uint8)
    prob = np.where(mask > 0, 0.3, 0.1) + rng.normal(0, 0.05, mask.shape)
    return mask, np.clip(prob, 0, 1).astype(np.float32)


# Checkpoint selection judges a fixed-threshold head at that threshold (what the row is
# scored at), a tuned one at its best grid threshold; `select` is the metric it maximises.
def test_selection_scores_a_fixed_threshold_at_itself_and_a_tuned_one_at_its_best() -> None:
    from rmaunet import metrics
    from rmaunet.training.evaluation import best_over_thresholds

    mask, prob = _calibrated_low(np.random.default_rng(1))
    tuned, t_tuned, _, _ = best_over_thresholds(mask, {"mask": prob}, "f1")
    fixed, t_fixed, _, _ = best_over_thresholds(mask, {"mask": prob}, "f1", threshold=0.5)
    assert t_fixed == 0.5 and t_tuned < 0.5
    assert fixed["f1"] == pytest.approx(metrics.segmentation_scores(mask, prob, 0.5)["f1"])
    assert fixed["f1"] < tuned["f1"]  # at 0.5 this model finds almost nothing; over the grid it is good
    _, t_recall, _, _ = best_over_thresholds(mask, {"mask": prob}, "recall")
    assert t_recall == thresholds.GRID[0]  # recall is highest at the lowest cut: select changes the choice


# det_threshold: the detection head is scored and selected at a fixed value when the config
# fixes one, else at the validation-F1-best grid point.
def test_a_fixed_detection_threshold_is_used_and_a_tuned_one_chosen_on_validation(tmp_path: Path) -> None:
    from rmaunet.config import TrialConfig
    from rmaunet.training.evaluation import best_over_thresholds

    rng = np.random.default_rng(2)
    mask, prob = _calibrated_low(rng, n=10)
    mask[::2] = 0  # half the images without a landslide
    det = np.where(mask.reshape(10, -1).any(axis=1), 0.35, 0.2).astype(np.float32)
    folder = TrialFolder(tmp_path).create()
    for split in ("val", "test"):
        folder.save_probabilities(split, prob, mask, det)
    assert thresholds.decide(folder, TrialConfig(det_threshold=0.7))["det_threshold"] == 0.7
    tuned = thresholds.decide(folder, TrialConfig())["det_threshold"]
    assert tuned is not None and 0.2 <= tuned < 0.35
    _, _, _, chosen = best_over_thresholds(mask, {"detection": det}, "f1", det_threshold=0.7)
    assert chosen == 0.7
