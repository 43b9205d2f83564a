"""A table of hundreds of rows (2,000 results rows) prints what a per-row computation gives: the
grouped statistics and paired tests are checked against scipy, row by row, written out here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel
from test_reporting_support import result_row

from rmaunet.reporting import write_study_report
from rmaunet.reporting.inputs import ReportOptions
from rmaunet.reporting.tables import one_factor_table

TABLE_ROWS, SEEDS = 400, 5


@pytest.fixture(scope="module")
def many_rows() -> pd.DataFrame:
    """400 table rows of up to 5 seeds (2,000 results rows less a few): some rows miss seeds,
    some hold a NaN, some differ from the baseline by the same amount on every seed."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.5, 0.7, SEEDS)
    records = []
    for k in range(TABLE_ROWS):
        seeds = [s for s in range(SEEDS) if k == 0 or k % 7 != s]  # every 7th row misses one seed
        f1 = base + 0.01 if k % 50 == 3 else rng.uniform(0.5, 0.7, SEEDS)  # a constant shift: no variance
        if k == 0:
            f1 = base
        for s in seeds:
            value = math.nan if k % 97 == 5 and s == 1 else float(f1[s])
            records.append(result_row("many", "table", f"row {k}", k, s, value))
    rows = pd.DataFrame(records)
    return rows.sample(frac=1.0, random_state=1).reset_index(drop=True)  # as a store lists its files


def _expected_p(rows: pd.DataFrame) -> dict[str, float | None]:
    """Per row: scipy's paired t-test on test F1 against row 0 over the seeds both have, then
    Holm over the rows that have a p (NaN: the same difference on every seed; None: < 2 seeds)."""
    by_seed = rows.pivot(index="row", columns="seed", values="test_f1")
    base = by_seed.loc["row 0"]
    raw: dict[str, float | None] = {}
    for label, values in by_seed.drop(index="row 0").iterrows():
        both = pd.DataFrame({"base": base, "other": values}).dropna()
        diffs = both["other"] - both["base"]
        if len(both) < 2:
            raw[label] = None
        elif diffs.max() - diffs.min() <= 1e-12 * max(1.0, diffs.abs().max()):
            raw[label] = math.nan
        else:
            raw[label] = float(ttest_rel(both["other"], both["base"]).pvalue)
    tested = sorted((p, label) for label, p in raw.items() if p is not None and not math.isnan(p))
    adjusted, running = dict(raw), 0.0
    for k, (p, label) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - k) * p))
        adjusted[label] = running
    return adjusted


def test_a_table_of_400_rows_prints_per_row_means_stds_and_holm_adjusted_paired_tests(many_rows: pd.DataFrame) -> None:
    # Every cell of F1, Δ, n and p equals what scipy and numpy give for that row alone.
    table = one_factor_table(many_rows, ReportOptions(metrics=("f1",)))
    expected_p = _expected_p(many_rows)
    cells = {c[0].text: {h: cell.text for h, cell in zip(table.header, c)} for c in table.rows}
    assert len(cells) == TABLE_ROWS
    base_mean = many_rows.loc[many_rows["row"] == "row 0", "test_f1"].mean()
    for label, f1 in many_rows.groupby("row")["test_f1"]:
        values = f1.dropna().to_numpy()
        printed = cells[label]
        assert printed["F1"] == f"{values.mean() * 100:.2f} ± {values.std(ddof=1) * 100:.2f}", label
        assert printed["n"] == str(len(values))
        if label == "row 0":
            assert printed["Δ F1"] == "—" and printed["p"] == "baseline"
            continue
        assert printed["Δ F1"] == f"{(values.mean() - base_mean) * 100:+.2f}", label
        p = expected_p[label]
        if p is None:
            assert printed["p"] == "< 2 shared seeds", label
        elif math.isnan(p):
            assert printed["p"] == "no variance", label
        else:
            text = "<0.001" if p < 0.001 else f"{p:.3f}"
            assert printed["p"] == text + ("*" if p < 0.05 else ""), label
    assert sum(p is not None and math.isnan(p) for p in expected_p.values()) >= 5  # the constant shifts


@pytest.mark.slow
def test_a_report_of_400_rows_names_the_rows_its_per_row_figures_draw(many_rows: pd.DataFrame, tmp_path: Path) -> None:
    # The ablation plot numbers the rows instead of naming 400; the learning curves draw the first 20 and say so.
    paths = write_study_report(many_rows, tmp_path, options=ReportOptions(metrics=("f1",)))
    index = paths["index"].read_text()
    assert "ablation.png" in paths and "learning_curves.png" in paths
    curves = next(line for line in index.splitlines() if line.startswith("- [learning_curves.png]"))
    assert "Drawn for the first 20 rows of the table (of 400)." in curves
    drawn = many_rows[many_rows["row_index"] < 20]
    assert f"; {len(drawn)} trials)" in curves and len(drawn) < 20 * SEEDS  # rows 0-19, some missing a seed
