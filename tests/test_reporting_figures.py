"""What the report's figures show: smoke/synthetic marks, clipped bands, integer ticks, legends that match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_reporting_support import capture_figures, int_ticks, result_row, table_rows

from rmaunet.reporting import plots, write_study_report
from rmaunet.reporting.inputs import ReportOptions
from rmaunet.reporting.latex import render_latex
from rmaunet.reporting.tables import build_table


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return capture_figures(monkeypatch)


def test_a_smoke_run_on_synthetic_data_says_so_everywhere_and_bolds_nothing(
    tmp_path: Path, drawn: dict[str, Any]
) -> None:
    # Caption, index page, every figure (title and caption): all say smoke run on synthetic data; all-zero
    # rows get no bold "best" and no "Bold:" note.
    rows = table_rows([[0.0, 0.0], [0.0, 0.0]], ["CE", "Focal"], seeds=(0, 1))
    options = ReportOptions(smoke=True, synthetic=True)
    paths = write_study_report(rows, tmp_path, options=options)
    mark = "Smoke run on synthetic data (--smoke: tiny model, few tiles, one epoch): a pipeline check, not a result"
    table = paths["markdown"].read_text()
    assert table.startswith(f"**{mark}. ") and "**0.00" not in table and "Bold:" not in table
    assert mark in paths["latex"].read_text().replace("--", "-").replace("-smoke", "--smoke")
    index = paths["index"].read_text()
    assert f"**{mark}.**" in index
    assert drawn and all(fig._suptitle.get_text() == mark for fig in drawn.values())
    captions = [line for line in index.splitlines() if line.startswith("- [") and ".png" in line]
    assert captions and all(f": {mark}." in line for line in captions)


def test_a_synthetic_run_is_marked_and_a_tie_of_real_rows_bolds_nothing() -> None:
    # Synthetic data alone: the caption says so; every row tied on F1: nothing is "best".
    rows = table_rows([[0.6, 0.6], [0.6, 0.6], [0.5, 0.5]], ["A", "B", "C"], seeds=(0, 1))
    table = build_table(rows, ReportOptions(synthetic=True))
    assert table.caption.startswith("Synthetic data. ")
    assert [c.bold for c in table.column("F1")] == [True, True, False]  # a shared best is still best
    tied = build_table(table_rows([[0.6, 0.6], [0.6, 0.6]], ["A", "B"], seeds=(0, 1)))
    assert not any(c.bold for c in tied.column("F1")) and not any("Bold" in n for n in tied.notes)


def test_learning_curve_band_stays_within_0_and_100_percent_with_integer_epochs(
    tmp_path: Path, drawn: dict[str, Any]
) -> None:
    # Seeds far apart give a std wider than the mean: the band is clipped at 0 %, epochs are whole numbers.
    rows = pd.DataFrame(
        [
            result_row("s", "table", "CE", 0, seed, 0.5, history=json.dumps([{"epoch": e, "val_f1": v} for e, v in h]))
            for seed, h in enumerate([[(1, 0.0), (2, 0.02), (3, 0.99)], [(1, 0.3), (2, 0.6), (3, 1.0)]])
        ]
    )
    plots.learning_curves(rows, tmp_path)
    ax = drawn["learning_curves"].axes[0]
    bands = [c for c in ax.collections if c.get_paths()]
    ys = np.concatenate([p.vertices[:, 1] for c in bands for p in c.get_paths()])
    assert bands and ys.min() >= 0 and ys.max() <= 100
    assert int_ticks(ax.xaxis)


def test_ablation_legend_dot_is_the_panels_dot_and_the_baseline_is_named_once(
    tmp_path: Path, drawn: dict[str, Any]
) -> None:
    # The legend's marker has the colour of the dots in every panel; a baseline label that says
    # "(baseline)" is not printed as "baseline: … (baseline)".
    rows = table_rows([[0.6, 0.62], [0.65, 0.66]], ["U-Net (baseline)", "Focal"], seeds=(0, 1))
    plots.ablation_plot(rows, ReportOptions(), tmp_path)
    fig = drawn["ablation"]
    dots = {line.get_color() for ax in fig.axes for line in ax.lines if line.get_marker() == "o"}
    legend = fig.legends[0]
    marker = next(h for h in legend.legend_handles if h.get_marker() == "o")
    assert dots == {marker.get_color()}
    texts = [t.get_text() for t in legend.get_texts()]
    assert "“U-Net (baseline)”" in texts and not any(t.startswith("baseline:") for t in texts)


def test_latex_is_not_scaled_unless_asked() -> None:
    # Default: sized by \small / \footnotesize, no \resizebox and no graphicx; `scale` opts in.
    table = build_table(table_rows([[0.6, 0.62], [0.65, 0.66]], seeds=(0, 1)))
    plain, scaled = render_latex(table), render_latex(table, scale=True)
    assert r"\resizebox" not in plain and "graphicx" not in plain.splitlines()[0]
    assert r"\small\rmaunetTabular" in plain and r"\footnotesize\setlength{\tabcolsep}{3pt}\rmaunetTabular" in plain
    assert r"\resizebox{\rmaunetTableWidth}{!}" in scaled and "graphicx" in scaled.splitlines()[0]
