from __future__ import annotations

import json

import numpy as np
import pytest

from rmaunet.config import TrialConfig

TINY = dict(base_filters=4, depth=2, epochs=4, batch_size=8, augment=())


@pytest.mark.slow
def test_same_seed_same_metrics(l4s_small, tmp_path):
    # One seed fixes initialisation, split and augmentation: two runs agree exactly.
    from rmaunet.training.trial import run_trial

    config = TrialConfig(**{**TINY, "augment": ("rotation",), "epochs": 2})
    a = run_trial(config, l4s_small, tmp_path / "a")
    b = run_trial(config, l4s_small, tmp_path / "b")
    assert a.val == b.val and a.test == b.test
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


@pytest.mark.slow
def test_killed_trial_resumes_after_its_last_epoch(l4s_small, tmp_path, monkeypatch):
    # A failure after epoch 2 of 4: the rerun goes on from epoch 3, not 1, and finishes once.
    from rmaunet.training.trial import run_trial

    config = TrialConfig(**TINY)
    monkeypatch.setenv("RMAUNET_FAIL_AFTER_EPOCH", "2")
    with pytest.raises(RuntimeError, match="injected failure after epoch 2"):
        run_trial(config, l4s_small, tmp_path)
    assert not (tmp_path / "result.json").exists()
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2

    result = run_trial(config, l4s_small, tmp_path)
    assert result.resumed_from == 2
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.epochs_run == 4
    assert not (tmp_path / "checkpoint" / "state.json").exists()  # cleared once the trial is done


@pytest.mark.slow
def test_a_cosine_schedule_sets_each_epochs_rate_and_a_resumed_trial_keeps_to_it(l4s_small, tmp_path, monkeypatch):
    # lr_schedule: cosine decays the rate per epoch; a trial killed after epoch 2 resumes at
    # epoch 3's rate (not the restored optimizer's epoch-2 one), on epoch 3's shuffle and
    # augmentation draws (once it replayed epoch 1's), and trains the uninterrupted run's
    # losses exactly; the constant default trains otherwise from epoch 2 on.
    from rmaunet.config import learning_rate_at
    from rmaunet.training.trial import run_trial

    augmented = {**TINY, "augment": ("rotation", "cutmix")}
    config = TrialConfig(**augmented, learning_rate=2e-3, lr_schedule="cosine")
    whole = run_trial(config, l4s_small, tmp_path / "whole")
    rates = [h["learning_rate"] for h in whole.history]
    assert rates == [learning_rate_at(config, e) for e in (1, 2, 3, 4)]
    assert rates[0] == 2e-3 and rates == sorted(rates, reverse=True) and 0 < rates[-1] < 2e-3 / 5

    monkeypatch.setenv("RMAUNET_FAIL_AFTER_EPOCH", "2")
    with pytest.raises(RuntimeError, match="injected failure after epoch 2"):
        run_trial(config, l4s_small, tmp_path / "resumed")
    monkeypatch.delenv("RMAUNET_FAIL_AFTER_EPOCH")
    resumed = run_trial(config, l4s_small, tmp_path / "resumed")
    assert resumed.resumed_from == 2
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]

    constant = run_trial(TrialConfig(**augmented, learning_rate=2e-3), l4s_small, tmp_path / "constant")
    assert "learning_rate" not in constant.history[0]
    assert constant.history[0]["loss"] == whole.history[0]["loss"]  # epoch 1: the same rate
    assert constant.history[2]["loss"] != whole.history[2]["loss"]


@pytest.mark.slow
def test_nan_loss_ends_the_trial_with_a_reason(l4s_small, tmp_path):
    # A diverging run is recorded as failed with its reason instead of hanging or crashing.
    import shutil

    import h5py

    from rmaunet.training.trial import run_trial

    # Pixels at float32's limit overflow the first convolution: the loss is not finite.
    config = TrialConfig(**TINY, normalisation="none")
    bad = tmp_path / "data"
    shutil.copytree(l4s_small, bad)
    with h5py.File(bad / "TrainData" / "img" / "image_1.h5", "r+") as f:
        img = f["img"][()]
        img[...] = 3e38
        f["img"][...] = img
    result = run_trial(config, bad, tmp_path / "t")
    assert result.status == "failed"
    assert "loss became nan" in result.reason or "loss became inf" in result.reason
    assert json.loads((tmp_path / "t" / "result.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_probabilities_are_stored_quantised_with_masks(l4s_small, tmp_path):
    # val/test probability maps are kept (uint8, compressed) so thresholds cost no training.
    from rmaunet.training.trial import run_trial

    result = run_trial(TrialConfig(**{**TINY, "epochs": 1}), l4s_small, tmp_path)
    with np.load(tmp_path / "test_probs.npz") as d:
        assert d["prob_u8"].dtype == np.uint8 and d["prob_u8"].shape == d["mask"].shape
    assert result.test and set(result.test) >= {"precision", "recall", "f1", "iou", "miou"}
    assert result.params > 0 and result.flops_per_image > 2 * result.params  # each weight used at many pixels
