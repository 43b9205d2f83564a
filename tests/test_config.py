from __future__ import annotations

import subprocess
import sys

import pytest

from rmaunet.config import PRESETS, TrialConfig
from rmaunet.errors import ConfigError


def test_defaults_are_the_paper_baseline():
    # Section III: 14 bands, double conv, no attention, one head, CE + L2 1e-4, Adam 4e-4, 30 epochs.
    c = TrialConfig()
    assert (c.bands, c.block, c.attention, c.heads, c.loss) == ("14", "double_conv", "none", "single", "cross_entropy")
    assert (c.l2, c.learning_rate, c.epochs, c.base_filters) == (1e-4, 4e-4, 30, 64)


def test_hash_is_stable_across_processes():
    # The same config hashes to the same value in a fresh interpreter (no id()/PYTHONHASHSEED leaks).
    code = (
        "from rmaunet.config import TrialConfig; "
        "print(TrialConfig(loss='focal', loss_params={'gamma': 2.0}).training_hash)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == TrialConfig(loss="focal", loss_params={"gamma": 2.0}).training_hash


def test_hash_ignores_workers_but_not_training_fields_or_the_epoch_rule():
    # Execution knobs reuse a trial; anything that changes learning, or which epoch is kept, does not.
    base = TrialConfig()
    assert base.replace(num_workers=4).training_hash == base.training_hash
    # A fixed threshold chooses the kept epoch at itself, a tuned one over the grid: three trainings.
    hashes = {base.training_hash, base.replace(threshold=0.5).training_hash, base.replace(threshold=0.9).training_hash}
    assert len(hashes) == 3
    assert base.replace(det_threshold=0.5).training_hash != base.training_hash
    assert base.replace(select="miou").training_hash != base.training_hash
    assert base.replace(seed=1).training_hash != base.training_hash
    assert base.replace(loss="iou").training_hash != base.training_hash


def test_the_learning_rate_schedule_is_a_training_field_left_out_of_the_hash_at_its_default():
    # Trials made before lr_schedule existed keep their identity (a pinned hash of the paper's
    # baseline); a cosine schedule is another training; a typo is one error naming the choices.
    from rmaunet.config import learning_rate_at

    assert TrialConfig().training_hash == TrialConfig(lr_schedule="constant").training_hash == "ae6d8319949a7ccc"
    cosine = TrialConfig(lr_schedule="cosine", learning_rate=1e-3, epochs=10)
    assert cosine.training_hash != cosine.replace(lr_schedule="constant").training_hash
    assert learning_rate_at(cosine, 1) == 1e-3 and learning_rate_at(cosine, 6) == pytest.approx(5e-4)
    assert learning_rate_at(cosine.replace(lr_schedule="constant"), 9) == 1e-3
    with pytest.raises(ConfigError, match="lr_schedule.*cosine"):
        TrialConfig(lr_schedule="cosin")


def test_loss_params_order_does_not_change_identity():
    # Mappings are normalised, so YAML key order cannot split one trial into two.
    a = TrialConfig(loss="tversky", loss_params={"alpha": 0.3, "beta": 0.7})
    b = TrialConfig(loss="tversky", loss_params={"beta": 0.7, "alpha": 0.3})
    assert a == b and a.training_hash == b.training_hash


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"loss": "hinge"}, "loss: unknown value 'hinge'"),
        ({"attention": "transformer"}, "attention: unknown value"),
        ({"threshold": 1.0}, "threshold: 1.0 is outside (0.0, 1.0)"),
        ({"loss_params": {"alpha": 1.5}}, "loss_params.alpha: 1.5 is outside [0.0, 1.0]"),
        ({"epochs": 0}, "epochs: 0 is outside"),
        ({"crop": 30, "depth": 2}, "divisible by 2**depth"),
        ({"lossx": "iou"}, "unknown config key 'lossx'"),
    ],
)
def test_invalid_values_are_refused_by_name(changes, message):
    # Every bad value names its field and the reason.
    with pytest.raises(
        ConfigError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]")
        .replace("*", r"\*"),
    ):
        TrialConfig.from_dict(changes)


def test_round_trip_through_dict():
    # to_dict -> from_dict gives the same config (the plan crosses process boundaries this way).
    c = PRESETS["rmaunet"]
    assert TrialConfig.from_dict(c.to_dict()) == c


def test_nested_loss_params_are_hashable_and_round_trip():
    # A weighted_sum's list of terms freezes into tuples: the config stays hashable and stable.
    terms = [{"name": "focal", "weight": 0.7, "gamma": 2.0}, {"name": "iou", "weight": 0.3}]
    c = TrialConfig(loss="weighted_sum", loss_params={"terms": terms})
    assert hash(c) == hash(TrialConfig.from_dict(c.to_dict()))
    assert TrialConfig.from_dict(c.to_dict()).training_hash == c.training_hash
