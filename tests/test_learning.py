from __future__ import annotations

import numpy as np
import pytest

from rmaunet.config import TrialConfig
from rmaunet.metrics import segmentation_scores


@pytest.mark.slow
def test_baseline_learns_synthetic_landslides_beyond_any_trivial_predictor(tmp_path):
    # A few CPU-minutes of the baseline U-Net: held-out F1 must clearly beat the best constant predictor.
    from rmaunet.data import prepare_splits
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.training.trial import run_trial

    data = write_landslide4sense(tmp_path / "data", n=200, seed=11, size=64)
    config = TrialConfig(base_filters=8, depth=3, epochs=12, batch_size=8, seed=0)
    result = run_trial(config, data, tmp_path / "trial")
    assert result.status == "ok"

    splits = prepare_splits(config, data)
    y = splits.y_test
    trivial = max(segmentation_scores(y, np.full(y.shape, p, np.float32))["f1"] for p in (0.0, 1.0))
    assert result.test["f1"] > trivial + 0.3, (result.test, trivial)
