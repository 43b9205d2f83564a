"""What tables say about how their numbers were made: epochs, thresholds, splits, backbones, tests."""

from __future__ import annotations

import pandas as pd
from test_reporting_support import table_rows

from rmaunet.reporting.tables import one_factor_table, threshold_table


def _cells(table, column: str) -> list[str]:
    return [c.text for c in table.column(column)]


# Each row group says at which threshold its epoch was chosen: a fixed row at its own, a tuned row over the grid.
def test_the_epoch_note_names_the_threshold_that_chose_each_rows_epoch() -> None:
    rows = table_rows([[0.60], [0.70]], ["At 0.5", "Tuned"], seeds=(0,)).assign(
        best_epoch=[4, 5], epochs_run=6, selection_metric="f1", cfg_threshold=[0.5, "tuned"]
    )
    notes = one_factor_table(rows).notes
    assert (
        "Weights: each trial's epoch chosen on validation by F1 (epoch 4–5 of 6): judged at its best threshold of "
        "the 0.01–0.99 grid for Tuned; judged at its fixed threshold (0.5) for At 0.5." in notes
    )


# Table IX: Δ and p against 0.5 (not the lowest threshold), and the rows are fixed candidates on the same models.
def test_threshold_table_compares_against_half_and_says_what_is_a_candidate() -> None:
    labels = ["0.4", "0.5", "0.95"]
    rows = table_rows([[0.60, 0.61, 0.62], [0.70, 0.70, 0.72], [0.65, 0.66, 0.64]], labels, kind="threshold")
    rows = rows.assign(threshold_protocol="fixed", cfg_threshold="tuned", best_epoch=3, epochs_run=3)
    table = threshold_table(rows)
    assert _cells(table, "p")[1] == "baseline"
    assert _cells(table, "Δ F1")[0] == "-9.67"  # 0.4 against 0.5
    assert (
        "Decision threshold: each row applies one fixed candidate (0.4, 0.5, 0.95) to the same trained models; "
        "none is tuned per row." in table.notes
    )
    assert any("judged at its best threshold of the 0.01–0.99 grid" in n for n in table.notes)
    # A spec's report baseline (a threshold) moves it.
    from rmaunet.reporting.inputs import ReportOptions

    assert _cells(threshold_table(rows, ReportOptions(baseline=0.95)), "p")[2] == "baseline"


# A constant difference has no p ("no variance"); the detectable difference and "not
# significant is not no effect" are stated whenever there are tests.
def test_no_variance_and_the_detectable_difference_are_stated() -> None:
    rows = table_rows([[0.60, 0.62, 0.64], [0.61, 0.63, 0.65], [0.62, 0.63, 0.67]], ["A", "B", "C"])
    table = one_factor_table(rows)
    assert _cells(table, "p")[1] == "no variance"
    detectable = [n for n in table.notes if n.startswith("With n = 3 seeds")]
    assert len(detectable) == 1 and "not significant means not detected, not no effect" in detectable[0]
    assert "after correction" not in detectable[0]  # one comparison has a p: nothing to correct
    assert any(n.startswith("No variance:") for n in table.notes)
    # A table whose every comparison has no variance has no t-test to describe.
    same = one_factor_table(table_rows([[0.60, 0.62, 0.64], [0.61, 0.63, 0.65]], ["A", "B"]))
    assert not any(n.startswith(("p:", "With n")) for n in same.notes)


# Engine rows say whether tiles of one scene may straddle splits; a grouped split says regions were held out.
def test_the_split_note_follows_the_recorded_grouping() -> None:
    rows = table_rows([[0.60], [0.70]], seeds=(0,))
    assert any("tiles of one scene may fall in several splits" in n for n in one_factor_table(rows).notes)
    grouped = rows.assign(cfg_split_groups="regex:^(\\w+)_")
    assert any(n.startswith("Splits: whole regions held out") for n in one_factor_table(grouped).notes)


# A decayed learning rate is stated (it is why late epochs change little), per row when rows differ;
# the paper's constant rate, and rows recorded before the field existed, get no note.
def test_the_schedule_note_names_a_cosine_decay_and_its_rows() -> None:
    rows = table_rows([[0.60], [0.70]], ["Constant", "Cosine"], seeds=(0,)).assign(cfg_learning_rate=2e-3)
    assert not any(n.startswith("Learning rate") for n in one_factor_table(rows).notes)
    mixed = rows.assign(cfg_lr_schedule=["constant", "cosine"])
    assert "Learning rate: 0.002 in the first epoch, cosine-decayed towards 0 after the last for Cosine." in (
        one_factor_table(mixed).notes
    )
    every = rows.assign(cfg_lr_schedule="cosine")
    assert "Learning rate: 0.002 in the first epoch, cosine-decayed towards 0 after the last." in (
        one_factor_table(every).notes
    )


# DeepLab-V3 rows get their ASPP rates, and a warning when the input is too small for them.
def test_deeplab_rows_state_their_rates_and_too_small_inputs() -> None:
    rows = table_rows([[0.60], [0.70]], ["U-Net", "DeepLab-V3"], seeds=(0,))
    rows = rows.assign(cfg_backbone=["unet", "deeplabv3"], cfg_dataset="landslide4sense", cfg_crop=[None, None])
    notes = one_factor_table(rows).notes
    assert "DeepLab-V3: ASPP rates 2, 3, 5 (the published 6, 12, 18 scaled to 128-px inputs)." in notes
    small = one_factor_table(rows.assign(cfg_crop=32)).notes
    assert any(n.startswith("DeepLab-V3: ASPP rates 1, 1, 1") and "too small" in n for n in small)
    assert not any("DeepLab" in n for n in one_factor_table(rows.assign(cfg_backbone="unet")).notes)


def test_typed_in_rows_get_no_split_note() -> None:
    rows = pd.DataFrame({"row": ["A", "B"], "seed": 0, "test_f1": [0.6, 0.7]})
    assert not any(n.startswith("Splits") for n in one_factor_table(rows).notes)
