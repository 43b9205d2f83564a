"""A study's report folder: tables, figures (PNG + PDF), index page with provenance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_reporting_support import capture_figures, int_ticks, result_row, table_rows, with_tile_counts

from rmaunet.errors import SpecError, StoreError
from rmaunet.reporting import write_study_report
from rmaunet.reporting.inputs import ReportOptions
from rmaunet.reporting.plots import (
    ablation_plot,
    learning_curves,
    search_figures,
    threshold_curve,
)


def _links(index: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", index)


@pytest.mark.parametrize(
    "kind, labels, figures",
    [
        ("table", ["CE", "Focal"], {"ablation", "learning_curves"}),
        ("threshold", ["None", "0.5", "0.95"], {"threshold_curve", "learning_curves"}),
    ],
)
def test_report_folder_has_tables_figures_and_an_index_linking_them(
    tmp_path: Path, kind: str, labels: list[str], figures: set[str]
) -> None:
    # table.md, table.tex, each figure as PNG and PDF, and a README.md whose every link exists.
    rows = table_rows([[0.6 + i / 50, 0.61 + i / 50] for i in range(len(labels))], labels, kind=kind, seeds=(0, 1))
    paths = write_study_report(rows, tmp_path / "study", title="Table IV")
    assert paths["markdown"] == tmp_path / "study" / "table.md"
    assert paths["latex"] == tmp_path / "study" / "table.tex"
    drawn = {Path(name).stem for name in paths if "." in name}
    assert drawn == figures
    for name in figures:
        with Image.open(tmp_path / "study" / f"{name}.png") as image:
            assert image.size[0] > 300
        assert (tmp_path / "study" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    index = paths["index"].read_text()
    links = _links(index)
    assert {"table.md", "table.tex", *(f"{n}.png" for n in figures), *(f"{n}.pdf" for n in figures)} <= set(links)
    assert all((tmp_path / "study" / link).is_file() for link in links)


def test_index_footer_states_provenance(tmp_path: Path) -> None:
    # Commit, data fingerprint, trials and GPU-hours; threshold rows sharing a training count once.
    rows = table_rows([[0.6, 0.61], [0.62, 0.63]], ["None", "0.9"], kind="threshold", seeds=(0, 1))
    rows["trial_id"] = rows["seed"].map(lambda s: f"trial-{s}")  # two trainings, four rows
    index = write_study_report(rows, tmp_path, figures=False)["index"].read_text()
    footer = index.strip().splitlines()[-1]
    assert "commit c0ffee123456" in footer
    assert "data fingerprint fp0123456789" in footer
    assert "2 trials" in footer and "0.50 GPU-hours" in footer and "4 results rows" in footer


def test_mixed_commits_are_flagged_in_provenance(tmp_path: Path) -> None:
    # Rows trained by different code versions must not look like one run.
    rows = table_rows([[0.6], [0.7]], seeds=(0,))
    rows.loc[1, "git_commit"] = "deadbeef0000"
    index = write_study_report(rows, tmp_path, figures=False)["index"].read_text()
    assert "commit mixed (c0ffee123456, deadbeef0000)" in index


def test_learning_curves_are_skipped_without_history(tmp_path: Path) -> None:
    # A results table typed in from a paper has no per-epoch history: no empty figure.
    rows = table_rows([[0.6], [0.7]], seeds=(0,), history="")
    paths = write_study_report(rows, tmp_path)
    assert "learning_curves.png" not in paths and "ablation.png" in paths


def test_formats_select_the_table_files(tmp_path: Path) -> None:
    # --format latex writes no table.md; an unknown format is refused.
    rows = table_rows([[0.6], [0.7]], seeds=(0,))
    paths = write_study_report(rows, tmp_path, formats=("latex",), figures=False)
    assert "markdown" not in paths and not (tmp_path / "table.md").exists()
    with pytest.raises(SpecError, match="unknown"):
        write_study_report(rows, tmp_path, formats=("html",))


def test_spec_report_section_and_references_file(tmp_path: Path) -> None:
    # A spec's report: section sets metrics and baseline; a references CSV adds published rows.
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nkind: table\nselect: val_f1\nreport:\n  metrics: [f1, recall]\n  baseline: Focal\n")
    rows = table_rows([[0.6], [0.7]], ["CE", "Focal"], seeds=(0,))
    text = write_study_report(rows, tmp_path / "a", spec=spec, figures=False)["markdown"].read_text()
    assert "| Configuration | F1 | Recall | Δ F1 | Δ Recall | n |" in text
    assert "| CE | 60.00 | 64.00 | -10.00 | -10.00 | 1 |" in text
    refs = tmp_path / "refs.csv"
    refs.write_text("dataset,model,source,f1,det_accuracy\nnepal,U-Net,[38],67.00,\n")
    text = write_study_report(rows, tmp_path / "b", references=refs, figures=False)["markdown"].read_text()
    assert "| Nepal | U-Net \\[38\\] | 67.00 | n/a |" in text


@pytest.mark.parametrize(
    "content, message",
    [
        ("dataset,model,f1\nnepal,U-Net,167\n", "not a percentage"),
        ("dataset,model,f2\nnepal,U-Net,67\n", "unknown keys"),
        ("model,f1\nU-Net,67\n", "needs `dataset` and `model`"),
    ],
)
def test_bad_references_file_is_refused_with_the_file_named(tmp_path: Path, content: str, message: str) -> None:
    # Reference rows are checked: percentages only, known metrics, dataset and model present.
    refs = tmp_path / "refs.csv"
    refs.write_text(content)
    with pytest.raises(SpecError, match=message) as err:
        write_study_report(table_rows([[0.6]], seeds=(0,)), tmp_path, references=refs)
    assert str(refs) in str(err.value)


def _search_rows(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame(
        [
            result_row(
                "joint_search",
                "search",
                f"trial {i}",
                i,
                0,
                0.6 + 0.02 * (i % 4),
                cfg_learning_rate=[1e-4, 4e-4, 1e-3, 3e-3][i % 4],
                cfg_attention="se" if i % 2 else "mha",
                finished_at=f"2026-01-01T00:{i:02d}:00",
            )
            for i in range(n)
        ]
    )


def test_search_report_draws_optuna_history_and_importances_from_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without an Optuna storage the rows become an in-memory study for Optuna's importance plot,
    # and Optuna's global plot style does not leak into the figures drawn after them. The history
    # is drawn in the report's style: F1 in %, trials numbered as in the table, whole-number ticks.
    import matplotlib

    facecolor = matplotlib.rcParams["axes.facecolor"]
    drawn = capture_figures(monkeypatch)
    paths = write_study_report(_search_rows(), tmp_path)
    assert {"optimization_history.png", "param_importances.png", "optimization_history.pdf"} <= set(paths)
    assert "from the results rows" in paths["index"].read_text()
    assert matplotlib.rcParams["axes.facecolor"] == facecolor
    ax = drawn["optimization_history"].axes[0]
    dots = next(line for line in ax.lines if line.get_marker() == "o")
    assert list(dots.get_xdata()) == list(range(8))
    assert np.allclose(dots.get_ydata(), [61 + 2 * (i % 4) for i in range(8)])  # val F1 = test + 1 point
    assert ax.get_ylabel() == "validation F1 (%)" and int_ticks(ax.xaxis)
    table = paths["markdown"].read_text()
    assert "| trial 3 | 0.003 | se | **67.00** |" in table


def test_search_figures_read_an_optuna_storage(tmp_path: Path) -> None:
    # With a storage URL the history is Optuna's record of the search itself.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        study_name="joint_search", storage=url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(
        lambda t: -((t.suggest_float("alpha", 0, 1) - 0.3) ** 2) - 0.01 * t.suggest_int("depth", 2, 5), n_trials=6
    )
    figures = search_figures(_search_rows(), ReportOptions(optuna_storage=url, study="joint_search"), tmp_path)
    assert [f.name for f in figures] == ["optimization_history", "param_importances"]
    assert "Optuna storage sqlite" in figures[0].caption


def test_unreachable_optuna_storage_is_a_store_error(tmp_path: Path) -> None:
    # A study name the storage lacks is the user's to fix: one line, naming the storage.
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(StoreError, match="cannot open Optuna study 'nope'"):
        search_figures(_search_rows(), ReportOptions(optuna_storage=url, study="nope"), tmp_path)


def test_spec_description_is_the_default_caption(tmp_path: Path) -> None:
    # A spec's description captions the table unless its report: section sets a caption.
    spec = {"name": "t", "description": "Effect of the loss function.\n", "select": "val_f1"}
    text = write_study_report(table_rows([[0.6], [0.7]], seeds=(0,)), tmp_path, spec=spec, figures=False)[
        "latex"
    ].read_text()
    assert r"\caption{Effect of the loss function. Test split, metrics in \%; one training seed per row.}" in text


@pytest.mark.parametrize(
    "seeds, tiles, spread",
    [
        ((0,), False, "one seed per row: no spread to show"),
        ((0,), True, "95 % bootstrap interval over test tiles for one-seed rows"),
        ((0, 1, 2), False, "± std over seeds"),
    ],
)
def test_ablation_plot_draws_an_interval_only_where_there_is_one(
    tmp_path: Path, seeds: tuple[int, ...], tiles: bool, spread: str
) -> None:
    # One seed: dots alone (no zero-width caps); one seed with tile counts: the bootstrap interval; seeds: std.
    rows = table_rows(
        [[0.60, 0.61, 0.62][: len(seeds)], [0.65, 0.66, 0.64][: len(seeds)]], ["CE", "Focal"], seeds=seeds
    )
    rows = with_tile_counts(rows) if tiles else rows
    figure = ablation_plot(rows, ReportOptions(), tmp_path)
    assert figure is not None and figure.name == "ablation"
    assert spread in figure.caption
    assert "bootstrap" not in figure.caption or tiles


def _histories(rows: pd.DataFrame, epochs: int = 4) -> pd.DataFrame:
    return rows.assign(
        history=[
            json.dumps([{"epoch": e, "val_f1": f1 * e / epochs} for e in range(1, epochs + 1)])
            for f1 in rows["test_f1"]
        ]
    )


@pytest.mark.parametrize(
    "best_epoch, seeds, expected",
    [
        (None, (0,), "one trial per row; 2 trials)."),
        (3, (0, 1), "band ± std; 4 trials); ★ each trial's chosen epoch"),
    ],
)
def test_learning_curves_show_the_seed_band_and_the_chosen_epoch_when_stored(
    tmp_path: Path, best_epoch: int | None, seeds: tuple[int, ...], expected: str
) -> None:
    # The chosen epoch is marked only when rows carry best_epoch; several seeds draw a mean with a ± std band.
    rows = _histories(table_rows([[0.6, 0.62][: len(seeds)], [0.7, 0.68][: len(seeds)]], seeds=seeds))
    if best_epoch is not None:
        rows["best_epoch"] = best_epoch
    figure = learning_curves(rows, tmp_path)
    assert figure is not None and expected in figure.caption
    assert ("★" in figure.caption) == (best_epoch is not None)


def _curve(peak: float) -> str:
    points = [
        {"threshold": t / 10, "val_f1": peak - (t / 10 - 0.4) ** 2, "test_f1": peak - (t / 10 - 0.5) ** 2}
        for t in range(1, 10)
    ]
    return json.dumps(points)


@pytest.mark.parametrize(
    "protocol, marked",
    [("tuned", "★ the threshold chosen on validation"), ("fixed", "★ the threshold used for the row's metrics")],
)
def test_a_table_study_with_stored_sweeps_gets_a_threshold_curve(tmp_path: Path, protocol: str, marked: str) -> None:
    # Rows carrying threshold_curve draw validation and test F1 per row, the threshold the row used marked
    # and named as the rows record it; without the column there is no threshold figure.
    rows = table_rows([[0.6], [0.7]], ["CE", "Focal"], seeds=(0,), threshold=0.4, threshold_protocol=protocol)
    assert "threshold_curve.png" not in write_study_report(rows, tmp_path / "plain")
    rows["threshold_curve"] = [_curve(0.6), _curve(0.7)]
    paths = write_study_report(rows, tmp_path / "swept")
    assert {"threshold_curve.png", "threshold_curve.pdf", "ablation.png"} <= set(paths)
    figure = threshold_curve(rows, ReportOptions(), tmp_path)
    assert figure is not None and marked in figure.caption
    assert figure.caption.startswith(
        "Threshold curves per row: validation (dashed) and test (solid) F1 from each trial's stored sweep"
    )


def test_threshold_study_curve_plots_validation_and_test(tmp_path: Path) -> None:
    # Table IX's figure: validation and test F1 per threshold row, the validation choice starred.
    rows = table_rows([[0.6], [0.7], [0.65]], ["None", "0.5", "0.9"], kind="threshold", seeds=(0,))
    figure = threshold_curve(rows, ReportOptions(), tmp_path)
    assert figure is not None
    assert figure.caption.startswith(
        "Threshold curve: validation (dashed) and test (solid) F1 per threshold row; "
        "★ the threshold chosen on validation"
    )
