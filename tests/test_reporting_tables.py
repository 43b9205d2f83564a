"""The paper's table layouts built from results rows: numbers, bold, Δ, seeds, p-values, n/a."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from test_reporting_support import result_row, table_rows, with_tile_counts

from rmaunet.errors import SpecError, StoreError
from rmaunet.reporting.inputs import ReferenceRow, ReportOptions
from rmaunet.reporting.tables import (
    SEARCH_TOP,
    build_table,
    choose_layout,
    cross_dataset_table,
    ladder_table,
    one_factor_table,
    search_table,
    shown_search_rows,
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
        (
            "table",
            {},
            ReportOptions(references=(ReferenceRow("nepal", "U-Net", "[38]", {"f1": 67.0}),)),
            "cross_dataset",
        ),
    ],
)
def test_layout_follows_kind_steps_references_and_spec(
    kind: str, extra: dict, options: ReportOptions, layout: str
) -> None:
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
    assert table.caption == "Test split, metrics in %; 3 training seeds per row."


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
        ([0.65, 0.665, 0.67], ("0.001", "*")),  # consistent gain: significant
        ([0.63, 0.66, 0.64], ("0.063", "")),  # a gain of 3.3 points, but noisy over three seeds
        ([0.58, 0.64, 0.61], ("1.000", "")),  # same mean, seed noise only
    ],
)
def test_p_value_against_baseline_with_marker_only_when_significant(
    other: list[float], expected: tuple[str, str]
) -> None:
    # The paired t-test over shared seeds prints its p-value, with a superscript * below 0.05.
    table = one_factor_table(table_rows([[0.60, 0.61, 0.62], other]))
    assert [(c.text, c.mark) for c in table.column("p")] == [("baseline", ""), expected]


def test_single_seed_rows_say_so_instead_of_testing() -> None:
    # All rows with one seed: no ± and no p column, and a note says why.
    table = one_factor_table(table_rows([[0.60], [0.65]], seeds=(0,)))
    assert "p" not in table.header
    assert _texts(table, "F1") == ["60.00", "65.00"]
    assert any("one training seed per row (n = 1)" in note for note in table.notes)


def test_a_row_with_one_seed_among_several_is_labelled() -> None:
    # A row trained on one seed shows n = 1 where the others show a p-value.
    rows = pd.concat(
        [table_rows([[0.60, 0.61, 0.62], [0.65, 0.665, 0.67]]), table_rows([[0.7]], ["lonely"], seeds=(0,))]
    )
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
    table = one_factor_table(
        table_rows([[0.6], [0.7]], seeds=(0,)), ReportOptions(metrics=("f1", "precision", "recall"))
    )
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
            for i, (label, steps) in enumerate(
                zip(["Baseline", "Combined loss", "Combined loss + 23 band data"], LADDER_STEPS)
            )
        ]
    )
    table = ladder_table(rows)
    assert table.header[:3] == ["Configuration", "Combined loss", "23 band data"]
    assert _texts(table, "Combined loss") == ["-", "✓", "✓"]
    assert _texts(table, "23 band data") == ["-", "-", "✓"]
    assert _texts(table, "Configuration") == ["Baseline", "+ Combined loss", "+ 23 band data"]


def test_threshold_table_bolds_the_row_chosen_on_validation() -> None:
    # The best row is the validation winner, even where another threshold is better on test.
    rows = table_rows(
        [[0.60], [0.70], [0.65]], ["None", "0.5", "0.95"], kind="threshold", study="paper_table9_threshold", seeds=(0,)
    )
    rows["val_f1"] = [0.60, 0.62, 0.80]
    table = threshold_table(rows)
    assert table.header[0] == "Threshold"
    assert [c.bold for c in table.column("Threshold")] == [False, False, True]
    assert _bold(table, "F1") == [False, False, True]
    assert any("chosen on validation F1 (0.95)" in note for note in table.notes)


def test_cross_dataset_table_has_blocks_na_and_published_rows() -> None:
    # Table XI: a segmentation-only model is n/a in the detection block; reference rows print as typed.
    l4s = table_rows(
        [[0.769]],
        ["RMAU-NET"],
        seeds=(0,),
        cfg_task="segmentation+detection",
        test_det_f1=0.9823,
        test_det_accuracy=0.971,
        test_det_precision=0.9858,
        test_det_recall=0.9789,
    )
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
    # Only searched parameters get a column, at the digits that tell the shown trials apart; rank
    # follows validation, not test; trials are numbered in the order they finished.
    rows = pd.DataFrame(
        [
            result_row(
                "joint_search",
                "search",
                f"attention={att}, learning_rate={lr:.3g}",
                i,
                0,
                f1,
                cfg_learning_rate=lr,
                cfg_attention=att,
                val_f1=val,
                finished_at=f"2026-01-01T00:0{i}",
            )
            for i, (f1, lr, att, val) in enumerate(
                [(0.70, 1.04e-3, "se", 0.60), (0.60, 4.1234e-4, "mha", 0.75), (0.65, 1.0e-3, "se", 0.70)]
            )
        ]
    )
    table = search_table(rows)
    assert table.header == ["Trial", "learning rate", "attention", "Val. F1", "Test F1", "Test mIoU"]
    assert [row[0].text for row in table.rows] == ["trial 1", "trial 2", "trial 0"]
    assert [[c.text for c in row[1:3]] for row in table.rows] == [
        ["0.000412", "mha"],
        ["0.001", "se"],
        ["0.00104", "se"],
    ]


def test_search_table_splits_loss_params_and_says_a_searched_threshold_is_a_parameter() -> None:
    # loss_params.alpha is its own rounded column, not a JSON cell; a searched threshold is not "fixed, not tuned".
    rows = pd.DataFrame(
        [
            result_row(
                "s",
                "search",
                f"t{i}",
                i,
                0,
                0.6 + i / 100,
                cfg_loss_params=json.dumps({"alpha": alpha}),
                cfg_threshold=threshold,
                threshold=threshold,
                threshold_protocol="fixed",
            )
            for i, (alpha, threshold) in enumerate([(0.5488135039273248, 0.358377), (0.7151893663724195, 0.897488)])
        ]
    )
    table = search_table(rows)
    assert table.header[1:3] == ["threshold", "alpha"]
    assert [[c.text for c in row[1:3]] for row in table.rows] == [["0.9", "0.72"], ["0.36", "0.55"]]
    notes = " ".join(table.notes)
    assert "not tuned" not in notes and "Decision threshold: a searched parameter" in notes


def test_build_table_refuses_a_study_without_successful_rows() -> None:
    # Nothing succeeded: a clear error instead of an empty table.
    rows = table_rows([[0.6]], seeds=(0,)).assign(status="failed")
    with pytest.raises(SpecError, match="no successful results rows"):
        build_table(rows)


def test_threshold_rows_sort_none_first_and_compare_with_the_configured_threshold() -> None:
    # Rows as the engine writes them (one row_index, any order) print None, then ascending;
    # Δ is against the config's own threshold (0.5), not the lowest one.
    rows = table_rows(
        [[0.62], [0.60], [0.61], [0.64]], ["0.9", "0.4", "0.5", "None"], kind="threshold", seeds=(0,)
    ).assign(row_index=0)
    table = threshold_table(rows)
    assert _texts(table, "Threshold") == ["None", "0.4", "0.5", "0.9"]
    assert _texts(table, "Δ F1") == ["+3.00", "-1.00", "—", "+1.00"]


def test_search_trials_sharing_one_label_stay_separate_rows() -> None:
    # When the engine labels every search trial with the study name, each training is its own numbered trial.
    rows = pd.DataFrame(
        [
            result_row(
                "s", "search", "s", 0, 0, 0.6 + i / 100, trial_id=f"abcdef{i}99", cfg_learning_rate=10.0 ** -(i + 2)
            )
            for i in range(3)
        ]
    )
    table = search_table(rows)
    assert [row[0].text for row in table.rows] == ["trial 2", "trial 1", "trial 0"]
    assert [row[1].text for row in table.rows] == ["0.0001", "0.001", "0.01"]


def test_p_values_are_holm_adjusted_with_the_raw_ones_in_the_details() -> None:
    # Three comparisons: the p column is Holm-adjusted (the mark follows it), the details keep the raw values.
    rows = table_rows(
        [[0.60, 0.61, 0.62], [0.65, 0.665, 0.67], [0.63, 0.66, 0.64], [0.58, 0.64, 0.61]], ["CE", "A", "B", "C"]
    )
    table = one_factor_table(rows)
    assert [(c.text, c.mark) for c in table.column("p")] == [
        ("baseline", ""),
        ("0.003", "*"),
        ("0.127", ""),
        ("1.000", ""),
    ]
    note = next(n for n in table.notes if n.startswith("p: "))
    assert "Holm-adjusted for 3 comparisons" in note
    assert "Unadjusted p: A 0.001; B 0.063; C 1.000." in table.details


def test_one_seed_rows_with_tile_counts_show_a_bootstrap_interval() -> None:
    # n = 1 still shows uncertainty: F1 gets a tile bootstrap interval around its value, mIoU (no
    # background counts) none, and a note says what the interval is.
    rows = with_tile_counts(table_rows([[0.60], [0.70]], ["CE", "Focal"], seeds=(0,)))
    table = one_factor_table(rows)
    for text, value in zip(_texts(table, "F1"), rows["test_f1"]):
        low, high = map(float, re.fullmatch(r"(?:\d\d\.\d\d) \[(\d\d\.\d\d), (\d\d\.\d\d)\]", text).groups())
        assert text.startswith(f"{value * 100:.2f} ") and low < value * 100 < high
    assert _texts(table, "mIoU") == ["53.00", "63.00"]
    assert "p" not in table.header
    assert any(
        n.startswith("[low, high]: 95% percentile bootstrap interval") and "40 test tiles" in n for n in table.notes
    )
    assert table.caption == "Test split (40 tiles), metrics in %; one training seed per row."


@pytest.mark.parametrize(
    "counts, message",
    [
        (json.dumps([[1, 2]]), "row 'CE': test_tile_counts is not a list of"),
        (json.dumps([[60, 20, 20]]), "row 'CE': test_tile_counts give test_f1 0.7500, the row says 0.6000"),
    ],
)
def test_tile_counts_that_cannot_back_the_row_name_it(counts: str, message: str) -> None:
    # Malformed counts, or counts whose F1 is not the row's, are a store problem reported with the row's label.
    rows = table_rows([[0.60]], ["CE"], seeds=(0,), test_tile_counts=counts)
    with pytest.raises(StoreError, match=re.escape(message)):
        one_factor_table(rows)


def _all_text(table: Table) -> str:
    return " ".join([table.caption, *table.notes])


def test_typed_in_rows_claim_no_selection_on_validation() -> None:
    # A results table typed in from a paper records neither trials nor a threshold protocol: nothing about validation.
    rows = pd.DataFrame({"row": ["CE", "Focal"], "test_f1": [0.6, 0.7], "test_miou": [0.5, 0.6], "seed": 0})
    table = one_factor_table(rows)
    assert "validation" not in _all_text(table).lower()
    assert table.caption == "Test split, metrics in %."
    assert any("one result per row (n = 1)" in n for n in table.notes)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            {"threshold_protocol": "tuned", "selection_metric": "f1", "threshold": [0.4, 0.6]},
            "Decision threshold: chosen per trial on validation by validation F1 (values used: 0.4–0.6).",
        ),
        ({"threshold_protocol": "fixed", "threshold": 0.5}, "Decision threshold: fixed at 0.5, not tuned."),
        (
            {"threshold_protocol": ["tuned", "fixed"], "threshold": [0.45, 0.5]},
            "Decision threshold: chosen per trial on validation (values used: 0.45) for CE; "
            "fixed at 0.5, not tuned for Focal.",
        ),
    ],
)
def test_threshold_note_states_the_protocol_the_rows_record(extra: dict, expected: str) -> None:
    # The note is built from threshold_protocol / selection_metric / threshold, whatever the spec meant.
    rows = table_rows([[0.60], [0.70]], ["CE", "Focal"], seeds=(0,)).assign(**extra)
    assert expected in one_factor_table(rows).notes


def test_detection_threshold_and_chosen_epoch_are_noted_when_recorded() -> None:
    # det_threshold and best_epoch become notes; rows without them (older stores) get neither.
    rows = table_rows([[0.60], [0.70]], seeds=(0,)).assign(det_threshold=[0.3, 0.5], best_epoch=[2, 3])
    notes = one_factor_table(rows).notes
    assert "Detection threshold: chosen per trial on validation by detection F1 (0.3–0.5)." in notes
    assert any(n.startswith("Weights: each trial's epoch chosen on validation (epoch 2–3 of 3)") for n in notes)
    plain = one_factor_table(table_rows([[0.60], [0.70]], seeds=(0,))).notes
    assert not any(n.startswith(("Detection threshold", "Weights", "Decision threshold")) for n in plain)


def test_landslide_iou_is_a_metric_with_its_definition() -> None:
    # test_iou reports as "IoU (landslide)"; the details define the pixel metrics and warn about mIoU.
    table = one_factor_table(table_rows([[0.6], [0.7]], seeds=(0,)), ReportOptions(metrics=("f1", "iou", "miou")))
    assert table.header[1:4] == ["F1", "IoU (landslide)", "mIoU"]
    assert _texts(table, "IoU (landslide)") == ["40.00", "50.00"]
    assert (
        "F1 and IoU (landslide): of the landslide class, from pixel counts summed over the test split." in table.details
    )
    assert any(n.startswith("mIoU: mean of the landslide and background IoU; not comparable") for n in table.details)


def test_search_parameters_belong_to_their_own_trial_when_trials_failed() -> None:
    # A failed trial is left out; each shown trial keeps its own parameters (they were taken by
    # index, which a failed row shifts, and a failed first trial raised KeyError).
    rows = pd.DataFrame(
        [
            result_row(
                "s",
                "search",
                f"t{i}",
                i,
                0,
                0.6 + i / 100,
                cfg_learning_rate=10.0 ** -(i + 2),
                status="failed" if i in (0, 2) else "ok",
            )
            for i in range(5)
        ]
    )
    table = search_table(rows)
    assert [[c.text for c in row[:2]] for row in table.rows] == [
        ["trial 4", "1e-06"],
        ["trial 3", "1e-05"],
        ["trial 1", "0.001"],
    ]


def test_per_trial_figures_of_a_search_take_the_trials_its_table_shows() -> None:
    # 25 trials, one failed: the figures get the rows of the 20 best on validation, in their own order.
    rows = pd.DataFrame(
        [
            result_row(
                "s", "search", f"t{i}", i, 0, 0.5, val_f1=(i * 7 % 25) / 100, status="failed" if i == 3 else "ok"
            )
            for i in range(25)
        ]
    )
    shown = shown_search_rows(rows, ReportOptions())
    expected = sorted((i for i in range(25) if i != 3), key=lambda i: -(i * 7 % 25))[:SEARCH_TOP]
    assert shown["row"].tolist() == [f"t{i}" for i in sorted(expected)]
    assert shown.index.tolist() == sorted(expected)
