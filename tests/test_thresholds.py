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
