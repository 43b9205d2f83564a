"""The paper's table layouts built from results rows: numbers, bold, Δ, seeds, p-values, n/a."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_reporting_support import result_row, table_rows

from rmaunet.errors import SpecError
from rmaunet.reporting.inputs import ReferenceRow, ReportOptions
from rmaunet.reporting.tables import (
    build_table,
    choose_layout,
    cross_dataset_table,
    ladder_table,
    one_factor_table,
    search_table,
    threshold_table,
)
from rmaunet.reporting.tabular import Table


def _texts(table: Table, column: str) -> list[str]:
    return [c.text for c in table.column(column)]


def _bold(table: Table, column: str) -> list[bool]:
    return [c.bold for c in table.column(column)]


LADDER_STEPS = [[], ["Combined loss"], ["Combined loss", "23 band data"]]


@pytest.mark.parametrize(
    "kind, extra, options, layout",
    [
        ("table", {}, ReportOptions(), "one_factor"),
        ("loco", {}, ReportOptions(), "one_factor"),
        ("ladder", {"steps": json.dumps(["Combined loss"])}, ReportOptions(), "ladder"),
        ("threshold", {}, ReportOptions(), "threshold"),
        ("search", {}, ReportOptions(), "search"),
        ("table", {}, ReportOptions(layout="threshold"), "threshold"),
        ("table", {}, ReportOptions(references=(ReferenceRow("nepal", "U-Net", "[38]", {"f1": 67.0}),)), "cross_dataset"),
    ],
)
def test_layout_follows_kind_steps_references_and_spec(kind: str, extra: dict, options: ReportOptions, layout: str) -> None:
    # The layout comes from the rows' kind (ladder only with steps); a spec's layout or references override.
    rows = table_rows([[0.6], [0.7]], kind=kind, seeds=(0,), **extra)
    assert choose_layout(rows, options) == layout


def test_two_datasets_make_the_cross_dataset_layout() -> None:
    # Table XI's rows differ by cfg_dataset; that alone selects the cross-dataset layout.
    rows = pd.concat([table_rows([[0.7]], seeds=(0,)), table_rows([[0.6]], seeds=(0,), cfg_dataset="nepal")])
    assert choose_layout(rows) == "cross_dataset"


def test_one_factor_cells_are_test_percentages_with_two_decimals_and_spread() -> None:
    # Test (not validation) F1 in percent, mean ± sample std, n per row, Δ to the first row.
    rows = table_rows([[0.60, 0.61, 0.62], [0.65, 0.665, 0.67]], ["CE", "Focal"])
    table = one_factor_table(rows)
    assert table.header == ["Configuration", "F1", "mIoU", "Δ F1", "Δ mIoU", "n", "p"]
    assert _texts(table, "F1") == ["61.00 ± 1.00", "66.17 ± 1.04"]
    assert _texts(table, "mIoU") == ["54.00 ± 1.00", "59.17 ± 1.04"]
    assert _texts(table, "Δ F1") == ["—", "+5.17"]
    assert _texts(table, "n") == ["3", "3"]
    assert "Test-split" in table.caption and "validation" in table.caption


def test_best_value_per_column_is_bold_including_ties() -> None:
    # Bold marks each column's best two-decimal value; equal values are all bold.
    rows = table_rows([[0.60], [0.70], [0.70]], seeds=(0,))
    rows.loc[rows["row"] == "row 0", "test_miou"] = 0.9
    table = one_factor_table(rows)
    assert _bold(table, "F1") == [False, True, True]
    assert _bold(table, "mIoU") == [True, False, False]
    assert not any(_bold(table, "Δ F1"))


@pytest.mark.parametrize(
    "other, expected",
    [
        ([0.65, 0.665, 0.67], "0.001 *"),  # consistent gain: significant
        ([0.63, 0.66, 0.64], "0.063"),  # a gain of 3.3 points, but noisy over three seeds
        ([0.58, 0.64, 0.61], "1.000"),  # same mean, seed noise only
    ],
)
def test_p_value_against_baseline_with_marker_only_when_significant(other: list[float], expected: str) -> None:
    # The paired t-test over shared seeds prints its p-value, with * below 0.05.
    table = one_factor_table(table_rows([[0.60, 0.61, 0.62], other]))
    assert _texts(table, "p") == ["baseline", expected]


def test_single_seed_rows_say_so_instead_of_testing() -> None:
    # All rows with one seed: no ± and no p column, and a note says why.
    table = one_factor_table(table_rows([[0.60], [0.65]], seeds=(0,)))
    assert "p" not in table.header
    assert _texts(table, "F1") == ["60.00", "65.00"]
    assert any("single training seed" in note for note in table.notes)


def test_a_row_with_one_seed_among_several_is_labelled() -> None:
    # A row trained on one seed shows n = 1 where the others show a p-value.
    rows = pd.concat([table_rows([[0.60, 0.61, 0.62], [0.65, 0.665, 0.67]]), table_rows([[0.7]], ["lonely"], seeds=(0,))])
    rows.loc[rows["row"] == "lonely", "row_index"] = 2
    table = one_factor_table(rows)
    assert _texts(table, "p")[2] == "n = 1"
    assert _texts(table, "F1")[2] == "70.00"


def test_baseline_by_label_and_unknown_baseline_is_refused() -> None:
    # Δ and p compare with the named row; a name that is no row is a SpecError naming the rows.
    rows = table_rows([[0.60, 0.61, 0.62], [0.65, 0.665, 0.67]], ["CE", "Focal"])
    table = one_factor_table(rows, ReportOptions(baseline="Focal"))
    assert _texts(table, "Δ F1") == ["-5.17", "—"]
    with pytest.raises(SpecError, match="not a row .*CE, Focal"):
        one_factor_table(rows, ReportOptions(baseline="Dice"))


def test_failed_trials_are_left_out_and_noted() -> None:
    # A failed trial's NaN metrics never enter a mean; the notes count it.
    rows = table_rows([[0.60, 0.61, 0.62]])
    rows.loc[2, ["status", "test_f1"]] = ["failed", float("nan")]
    table = one_factor_table(rows)
    assert _texts(table, "n") == ["2"]
    assert any("1 failed trial" in note for note in table.notes)


def test_other_metrics_on_request() -> None:
    # metrics= adds precision / recall columns (and their Δ) in the order asked.
    table = one_factor_table(table_rows([[0.6], [0.7]], seeds=(0,)), ReportOptions(metrics=("f1", "precision", "recall")))
    assert table.header[1:4] == ["F1", "Precision", "Recall"]
    assert _texts(table, "Precision") == ["57.00", "67.00"]


def test_unknown_metric_is_refused() -> None:
    # A metric the store does not have is a SpecError, not an empty column.
    with pytest.raises(SpecError, match="unknown"):
        ReportOptions(metrics=("f2",))


def test_ladder_has_a_check_column_per_technique() -> None:
    # Table X: one ✓ column per step, a step's row ticks it and every row after it.
    rows = pd.concat(
        [
            table_rows([[0.6]], [label], seeds=(0,), kind="ladder", steps=json.dumps(steps)).assign(row_index=i)
            for i, (label, steps) in enumerate(zip(["Baseline", "Combined loss", "Combined loss + 23 band data"], LADDER_STEPS))
        ]
    )
    table = ladder_table(rows)
    assert table.header[:3] == ["Configuration", "Combined loss", "23 band data"]
    assert _texts(table, "Combined loss") == ["-", "✓", "✓"]
    assert _texts(table, "23 band data") == ["-", "-", "✓"]
    assert _texts(table, "Configuration") == ["Baseline", "+ Combined loss", "+ 23 band data"]


def test_threshold_table_bolds_the_row_chosen_on_validation() -> None:
    # The best row is the validation winner, even where another threshold is better on test.
    rows = table_rows([[0.60], [0.70], [0.65]], ["None", "0.5", "0.95"], kind="threshold", study="paper_table9_threshold", seeds=(0,))
    rows["val_f1"] = [0.60, 0.62, 0.80]
    table = threshold_table(rows)
    assert table.header[0] == "Threshold"
    assert [c.bold for c in table.column("Threshold")] == [False, False, True]
    assert _bold(table, "F1") == [False, False, True]
    assert any("chosen on validation F1 (0.95)" in note for note in table.notes)


def test_cross_dataset_table_has_blocks_na_and_published_rows() -> None:
    # Table XI: a segmentation-only model is n/a in the detection block; reference rows print as typed.
    l4s = table_rows([[0.769]], ["RMAU-NET"], seeds=(0,), cfg_task="segmentation+detection", test_det_f1=0.9823, test_det_accuracy=0.971, test_det_precision=0.9858, test_det_recall=0.9789)
    nepal = table_rows([[0.6943]], ["RMAU-NET"], seeds=(0,), cfg_dataset="nepal").assign(row_index=1)
    refs = (ReferenceRow("Nepal", "U-Net", "[38]", {"f1": 67.0, "precision": 61.0, "recall": 74.0}),)
    table = cross_dataset_table(pd.concat([l4s, nepal]), ReportOptions(references=refs))
    assert [g.label for g in table.groups] == ["", "Segmentation task", "Detection task", ""]
    body = [[c.text for c in row] for row in table.rows]
    assert body[0][:3] == ["Landslide4Sense", "RMAU-NET", "76.90"]
    assert body[0][6:10] == ["98.23", "97.10", "98.58", "97.89"]
    assert body[1] == ["Nepal", "U-Net [38]", "67.00", "61.00", "74.00", "n/a", "n/a", "n/a", "n/a", "n/a", "published"]
    assert body[2][0] == "" and body[2][6:10] == ["n/a"] * 4
    assert table.rule_before == {0, 1}


def test_search_table_ranks_trials_on_validation_and_shows_varied_parameters() -> None:
    # Only searched parameters get a column; rank follows validation, not test.
    rows = pd.DataFrame(
        [
            result_row("joint_search", "search", f"trial {i}", i, 0, f1, cfg_learning_rate=lr, cfg_attention=att, val_f1=val)
            for i, (f1, lr, att, val) in enumerate([(0.70, 1e-3, "se", 0.60), (0.60, 4e-4, "mha", 0.75), (0.65, 1e-4, "se", 0.70)])
        ]
    )
    table = search_table(rows)
    assert table.header == ["Trial", "learning_rate", "attention", "Val. F1", "Test F1", "Test mIoU", "n"]
    assert [row[0].text for row in table.rows] == ["trial 1", "trial 2", "trial 0"]
    assert [c.text for c in table.rows[0][1:3]] == ["0.0004", "mha"]


def test_build_table_refuses_a_study_without_successful_rows() -> None:
    # Nothing succeeded: a clear error instead of an empty table.
    rows = table_rows([[0.6]], seeds=(0,)).assign(status="failed")
    with pytest.raises(SpecError, match="no successful results rows"):
        build_table(rows)


def test_threshold_rows_sort_none_first_and_compare_with_the_configured_threshold() -> None:
    # Rows as the engine writes them (one row_index, any order) print None, then ascending;
    # Δ is against the config's own threshold (0.5), not the lowest one.
    rows = table_rows([[0.62], [0.60], [0.61], [0.64]], ["0.9", "0.4", "0.5", "None"], kind="threshold", seeds=(0,)).assign(row_index=0)
    table = threshold_table(rows)
    assert _texts(table, "Threshold") == ["None", "0.4", "0.5", "0.9"]
    assert _texts(table, "Δ F1") == ["+3.00", "-1.00", "—", "+1.00"]


def test_search_trials_sharing_one_label_stay_separate_rows() -> None:
    # When the engine labels every search trial with the study name, trials are told apart by trial id.
    rows = pd.DataFrame(
        [result_row("s", "search", "s", 0, 0, 0.6 + i / 100, trial_id=f"abcdef{i}99", cfg_learning_rate=10.0 ** -(i + 2)) for i in range(3)]
    )
    table = search_table(rows)
    assert [row[0].text for row in table.rows] == ["trial abcdef29", "trial abcdef19", "trial abcdef09"]
