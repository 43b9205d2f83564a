"""Report figures (PNG and PDF): threshold curves, ablation intervals, learning curves, search plots.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot's global state, so reports can be written from worker threads and headless nodes.
Only the search figures use pyplot, because Optuna's own plotting functions do.

What a reader can trust: a value is a dot (its position, not a bar's length, carries it, so
the axis need not start at zero); a line through it is drawn only when there is a spread to
show (std over two or more seeds, or a bootstrap interval over test tiles, labelled as such);
legends sit outside the data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from rmaunet.errors import StoreError
from rmaunet.reporting.inputs import ReportOptions, parse_json_list
from rmaunet.reporting.tables import (
    METRIC_LABELS,
    SEARCH_TOP,
    RowGroup,
    baseline_group,
    baseline_name,
    choose_layout,
    choose_threshold_row,
    first_table_rows,
    group_rows,
    label_search_trials,
    ok_rows,
    run_mark,
    searched_values,
    shown_search_rows,
    study_name,
    threshold_of,
)

__all__ = [
    "WrittenFigure",
    "threshold_curve",
    "ablation_plot",
    "learning_curves",
    "search_figures",
    "write_figures",
    "FIGURE_FORMATS",
]

FIGURE_FORMATS = ("png", "pdf")
_SPLIT_NAMES = {"val": "validation", "test": "test"}
_CHOSEN = {
    "marker": "*",
    "markersize": 13,
    "markeredgecolor": "black",
    "markeredgewidth": 0.6,
    "linestyle": "none",
    "zorder": 5,
}
_SPREAD_ALPHA = 0.2
# An ablation plot names at most this many rows (and grows no taller): beyond, it numbers them.
_LABELLED_ROWS = 40
# A study of more than SEARCH_TOP table rows gets threshold panels for this many (20 panels took
# seconds per format); small studies get a panel per row.
_PANELS = 6


@dataclass(frozen=True)
class WrittenFigure:
    """A written figure: its name, one-line caption and files (one per format)."""

    name: str
    caption: str
    paths: tuple[Path, ...]


def _new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, base: Path, options: ReportOptions | None, tight: bool = False) -> tuple[Path, ...]:
    """PNG and PDF, marked when the run was a smoke or synthetic one; `tight` crops to the drawn
    content (Optuna's figures clip long parameter names)."""
    _mark(fig, options)
    paths = []
    for fmt in FIGURE_FORMATS:
        path = base.with_suffix(f".{fmt}")
        # PDFs carry a creation date by default; without it a regenerated report is byte-identical.
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(path, dpi=150, metadata=metadata, bbox_inches="tight" if tight else None)
        paths.append(path)
    return tuple(paths)


def _legend_below(fig: Figure, handles: Sequence[Any], columns: int = 3) -> None:
    """One legend for the whole figure, under the axes: it never hides a data point."""
    if handles:
        fig.legend(
            handles=list(handles),
            loc="outside lower center",
            ncols=min(columns, len(handles)),
            fontsize="small",
            frameon=False,
        )


def _mark(fig: Any, options: ReportOptions | None) -> None:
    """A smoke or synthetic run says so on the figure itself, not only in its caption."""
    mark = run_mark(options) if options is not None else ""
    if mark:
        fig.suptitle(mark, color="firebrick", fontsize="small")


def _marked(caption: str, options: ReportOptions | None) -> str:
    mark = run_mark(options) if options is not None else ""
    return f"{mark}. {caption}" if mark else caption


def _band(ax: Any, x: Any, mean: Any, std: Any, color: str) -> None:
    """± std around a curve in percent, clipped to [0, 100]: a score has no values outside."""
    low = np.clip(np.asarray(mean - np.nan_to_num(std), dtype=float), 0, 100)
    high = np.clip(np.asarray(mean + np.nan_to_num(std), dtype=float), 0, 100)
    ax.fill_between(x, low, high, color=color, alpha=_SPREAD_ALPHA, linewidth=0)


def _seed_curves(groups: Sequence[RowGroup], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per group: mean and std over seeds of `column` (std NaN below two seeds), and the most seeds."""
    stats = [g.stats(column) for g in groups]
    mean = np.array([s.mean for s in stats]) * 100
    std = np.array([s.std if s.n > 1 else math.nan for s in stats]) * 100
    return mean, std, np.array([s.n for s in stats]), max((s.n for s in stats), default=0)


def _spread_text(most_seeds: int, bootstrap: bool) -> str:
    parts = []
    if most_seeds > 1:
        parts.append("bands/lines: ± std over seeds")
    if bootstrap:
        parts.append("95 % bootstrap interval over test tiles for one-seed rows")
    return "; ".join(parts) if parts else "one seed per row: no spread to show"


# ------------------------------------------------------------------ threshold curves
def threshold_curve(rows: pd.DataFrame, options: ReportOptions, out_dir: Path) -> WrittenFigure | None:
    """Validation and test F1 against the threshold, the threshold chosen on validation marked.

    A threshold study has one row per threshold; any other study draws one panel per table row
    from the rows' `threshold_curve` column (the sweep a trial stored from its probability maps).
    """
    groups = group_rows(ok_rows(rows))
    if choose_layout(rows, options) == "threshold":
        numeric = sorted((g for g in groups if not math.isnan(threshold_of(g))), key=threshold_of)
        return _threshold_rows_curve(groups, numeric, options, out_dir) if numeric else None
    return _stored_threshold_curves(groups, options, out_dir)


def _threshold_rows_curve(
    groups: list[RowGroup], numeric: list[RowGroup], options: ReportOptions, out_dir: Path
) -> WrittenFigure | None:
    metric = options.selection_metric
    chosen, split = choose_threshold_row(groups, metric)
    fig = _new_figure(6.0, 4.4)
    ax = fig.add_subplot()
    x = np.array([threshold_of(g) for g in numeric])
    handles: list[Any] = []
    most = 0
    for split_name, style in (("val", "--"), ("test", "-")):
        mean, std, _, seeds = _seed_curves(numeric, f"{split_name}_{metric}")
        if np.isnan(mean).all():
            continue
        most = max(most, seeds)
        color = "C0" if split_name == "val" else "C1"
        (line,) = ax.plot(
            x,
            mean,
            style,
            marker="o",
            markersize=4,
            color=color,
            label=f"{_SPLIT_NAMES[split_name]} {METRIC_LABELS.get(metric, metric)}",
        )
        handles.append(line)
        if not np.isnan(std).all():
            _band(ax, x, mean, std, color)
        for g in groups:
            if math.isnan(threshold_of(g)):  # the unthresholded model, for comparison
                value = g.stats(f"{split_name}_{metric}").mean * 100
                if not math.isnan(value):
                    handles.append(
                        ax.axhline(
                            value,
                            color=color,
                            linestyle=":",
                            linewidth=1,
                            label=f"{_SPLIT_NAMES[split_name]}, {g.label}",
                        )
                    )
        if chosen in numeric:
            j = numeric.index(chosen)
            ax.plot(x[j], mean[j], color=color, **_CHOSEN)
    if chosen in numeric:
        ax.axvline(threshold_of(chosen), color="grey", linestyle="-", linewidth=0.8, zorder=0)
        handles.append(
            Line2D(
                [],
                [],
                color="white",
                label=f"chosen on {_SPLIT_NAMES[split]} ({chosen.label})",
                **{**_CHOSEN, "markerfacecolor": "white"},
            )
        )
    ax.set_xlabel("decision threshold")
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.grid(alpha=0.3)
    _legend_below(fig, handles, columns=2)
    name = METRIC_LABELS.get(metric, metric)
    choice = (
        f"★ the threshold chosen on {_SPLIT_NAMES[split]}"
        if chosen in numeric
        else f"{_SPLIT_NAMES[split]} chose no threshold ({chosen.label}, dotted)"
    )
    caption = (
        f"Threshold curve: validation (dashed) and test (solid) {name} per threshold row; {choice}; "
        f"{_spread_text(most, False)}."
    )
    return WrittenFigure("threshold_curve", caption, _save(fig, out_dir / "threshold_curve", options))


def _curve_frame(group: RowGroup) -> pd.DataFrame:
    """The group's stored sweeps, one line per (seed, threshold), from its `threshold_curve` cells."""
    records = []
    for seed, cell in zip(group.frame["seed"], group.frame["threshold_curve"]):
        for point in parse_json_list(cell):
            if isinstance(point, dict) and "threshold" in point:
                records.append({"seed": seed, **point})
    return pd.DataFrame(records)


def _stored_threshold_curves(groups: list[RowGroup], options: ReportOptions, out_dir: Path) -> WrittenFigure | None:
    curves = [(g, _curve_frame(g)) for g in groups if "threshold_curve" in g.frame.columns]
    curves = [(g, c) for g, c in curves if not c.empty]
    if not curves:
        return None
    columns = 2 if len(curves) in (2, 4) else min(3, len(curves))
    panel_rows = math.ceil(len(curves) / columns)
    fig = _new_figure(3.2 * columns, 2.6 * panel_rows + 0.6)
    axes = fig.subplots(panel_rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    most, tuned_any, fixed_any = 0, False, False
    for ax, (g, curve) in zip(axes, curves):
        curve = curve.drop_duplicates(["seed", "threshold"]).sort_values("threshold")
        for key, style, color in (("val_f1", "--", "C0"), ("test_f1", "-", "C1")):
            if key not in curve.columns:
                continue
            by = pd.to_numeric(curve[key], errors="coerce").groupby(curve["threshold"])
            mean, std, seeds = by.mean() * 100, by.std() * 100, by.count()
            most = max(most, int(seeds.max()))
            ax.plot(mean.index, mean.to_numpy(), style, color=color)
            if int(seeds.max()) > 1:
                _band(ax, mean.index, mean, std.fillna(0), color)
            for used in _used_thresholds(g):
                if key == "val_f1" and len(mean):
                    ax.plot(used, float(np.interp(used, mean.index, mean.to_numpy())), color=color, **_CHOSEN)
        protocol = str(g.first("threshold_protocol") or "").lower() if "threshold_protocol" in g.frame.columns else ""
        tuned_any |= protocol == "tuned"
        fixed_any |= protocol != "tuned"
        for used in _used_thresholds(g):
            ax.axvline(used, color="grey", linewidth=0.8, zorder=0)
        ax.set_title(g.label, fontsize="small")
        ax.grid(alpha=0.3)
    for k, ax in enumerate(axes):
        if k >= len(curves):
            ax.set_visible(False)
        elif k + columns >= len(curves):  # nothing drawn below it: it carries the x axis
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("decision threshold")
        if k % columns == 0:
            ax.set_ylabel("F1 (%)")
    marked = "chosen on validation" if tuned_any and not fixed_any else "used for the row's metrics"
    handles = [
        Line2D([], [], color="C0", linestyle="--", label="validation F1"),
        Line2D([], [], color="C1", linestyle="-", label="test F1"),
        Line2D([], [], color="white", label=f"threshold {marked}", **{**_CHOSEN, "markerfacecolor": "white"}),
    ]
    _legend_below(fig, handles)
    caption = (
        f"Threshold curves per row: validation (dashed) and test (solid) F1 from each trial's stored sweep; "
        f"★ the threshold {marked}; {_spread_text(most, False)}."
    )
    return WrittenFigure("threshold_curve", caption, _save(fig, out_dir / "threshold_curve", options))


def _used_thresholds(group: RowGroup) -> list[float]:
    if "threshold" not in group.frame.columns:
        return []
    return sorted(set(pd.to_numeric(group.frame["threshold"], errors="coerce").dropna().tolist()))


# ------------------------------------------------------------------ ablation
def ablation_plot(rows: pd.DataFrame, options: ReportOptions, out_dir: Path) -> WrittenFigure | None:
    """Each row's test metrics as dots, one panel per metric, with an interval only where there is one.

    Several seeds: ± std over seeds. One seed with per-tile counts: the 95 % tile bootstrap
    interval (a different line style, named in the legend). Otherwise the dot alone.
    The baseline's value is a vertical line, so each row reads as better or worse than it.
    """
    groups = group_rows(ok_rows(rows))
    if not groups:
        return None
    metrics = [m for m in options.metrics[:2] if any(g.stats(f"test_{m}").n for g in groups)]
    if not metrics:
        return None
    base = baseline_group(groups, options, study_name(rows))
    labelled = len(groups) <= _LABELLED_ROWS
    label_width = max(len(g.label) for g in groups) if labelled else 0
    fig = _new_figure(2.6 * len(metrics) + min(0.07 * label_width, 3.5), 1.3 + 0.38 * min(len(groups), _LABELLED_ROWS))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(groups))
    used_std = used_boot = False
    color = "C0"  # one colour in every panel: the legend's dot is each panel's dot
    for ax, metric in zip(axes, metrics):
        # One artist per kind of mark, not per row: a table of 3,000 rows drew 9,000 artists.
        mean, std, n, _ = _seed_curves(groups, f"test_{metric}")
        spread = n > 1
        if spread.any():
            ax.errorbar(mean[spread], y[spread], xerr=std[spread], fmt="none", ecolor=color, capsize=3, linewidth=1.4)
            used_std = True
        intervals = [(k, i) for k in np.flatnonzero(n == 1).tolist() if (i := groups[k].interval(metric)) is not None]
        if intervals:
            segments = [[(i.low * 100, k), (i.high * 100, k)] for k, i in intervals]
            ax.add_collection(LineCollection(segments, colors=color, linewidths=1.4, linestyles=[(0, (2, 1))]))
            used_boot = True
        present = n > 0
        dot = {"markersize": 6, "markeredgecolor": "black", "markeredgewidth": 0.5, "zorder": 4}
        ax.plot(mean[present], y[present], "o", color=color, **dot)
        b = base.stats(f"test_{metric}")
        if not b.missing:
            ax.axvline(b.mean * 100, color="grey", linestyle=":", linewidth=1, zorder=0)
        ax.set_title(f"test {METRIC_LABELS[metric]} (%)", fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    if labelled:
        axes[0].set_yticks(y, [g.label for g in groups])
    else:  # too many rows to name: their numbers in the table, from 1
        axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value + 1:.0f}"))
        axes[0].set_ylabel("table row")
    axes[0].invert_yaxis()  # table order, top to bottom
    most = max(g.stats(f"test_{metrics[0]}").n for g in groups)
    value = "mean over seeds" if most > 1 else "value (one seed)"
    handles: list[Any] = [
        Line2D([], [], marker="o", color=color, markeredgecolor="black", linestyle="none", label=value)
    ]
    if used_std:
        handles.append(Line2D([], [], color=color, linewidth=1.4, label="± std over seeds"))
    if used_boot:
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                linewidth=1.4,
                linestyle=(0, (2, 1)),
                label="95 % bootstrap over test tiles (one seed)",
            )
        )
    handles.append(Line2D([], [], color="grey", linestyle=":", label=baseline_name(base.label)))
    _legend_below(fig, handles, columns=2)
    names = " and ".join(METRIC_LABELS[m] for m in metrics)
    caption = f"Ablation: test {names} per row (dots); {_spread_text(most, used_boot)}; dotted: the baseline."
    return WrittenFigure("ablation", caption, _save(fig, out_dir / "ablation", options))


# ------------------------------------------------------------------ learning curves
def _metric_name(column: str) -> str:
    split, _, metric = column.partition("_")
    return f"{_SPLIT_NAMES.get(split, split)} {METRIC_LABELS.get(metric, metric)}"


def _histories(group: RowGroup, metric: str, seen_trials: set[str]) -> list[tuple[pd.Series, float]]:
    """Per trial of the group: its metric per epoch, and its chosen epoch (`best_epoch`; NaN if not stored)."""
    out = []
    for _, record in group.frame.iterrows():
        trial = str(record.get("trial_id", "")) or f"{group.label}/{record.get('seed')}"
        if trial in seen_trials:  # threshold rows share one training: draw it once
            continue
        history = [h for h in parse_json_list(record.get("history")) if isinstance(h, dict) and metric in h]
        if not history:
            continue
        seen_trials.add(trial)
        curve = pd.Series(
            [float(h[metric]) * 100 for h in history], index=[int(h.get("epoch", k + 1)) for k, h in enumerate(history)]
        )
        best = pd.to_numeric(pd.Series([record.get("best_epoch")]), errors="coerce").iloc[0]
        out.append((curve[~curve.index.duplicated(keep="last")], float(best) if best and best > 0 else math.nan))
    return out


def learning_curves(
    rows: pd.DataFrame, out_dir: Path, metric: str = "val_f1", options: ReportOptions | None = None
) -> WrittenFigure | None:
    """Validation metric per epoch: per table row the mean over seeds, ± std band, ★ each trial's chosen epoch."""
    groups = group_rows(ok_rows(rows))
    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    handles: list[Any] = []
    seen_trials: set[str] = set()
    trials = most = 0
    marked = False
    for i, g in enumerate(groups):
        histories = _histories(g, metric, seen_trials)
        if not histories:
            continue
        color = f"C{i % 10}"
        table = pd.concat([h for h, _ in histories], axis=1)
        mean, std = table.mean(axis=1), table.std(axis=1)
        (line,) = ax.plot(
            mean.index, mean.to_numpy(), color=color, marker="." if len(mean) < 15 else None, label=g.label
        )
        handles.append(line)
        if len(histories) > 1:
            _band(ax, mean.index, mean, std.fillna(0), color)
        for curve, best in histories:
            if not math.isnan(best) and best in curve.index:
                ax.plot(best, curve[best], color=color, **{**_CHOSEN, "markersize": 11})
                marked = True
        trials += len(histories)
        most = max(most, len(histories))
    if not trials:
        return None
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{_metric_name(metric)} (%)")
    ax.grid(alpha=0.3)
    if marked:
        handles.append(
            Line2D(
                [],
                [],
                color="white",
                label="epoch chosen on validation",
                **{**_CHOSEN, "markersize": 11, "markerfacecolor": "white"},
            )
        )
    if len(handles) <= 13:
        _legend_below(fig, handles, columns=2)
    band = "mean over seeds, band ± std" if most > 1 else "one trial per row"
    chosen = "; ★ each trial's chosen epoch at its own value" if marked else ""
    caption = f"Learning curves: {_metric_name(metric)} per epoch ({band}; {trials} trials){chosen}."
    return WrittenFigure("learning_curves", caption, _save(fig, out_dir / "learning_curves", options))


# ------------------------------------------------------------------ searches (Optuna's own plots)
def _row_trials(rows: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[tuple[RowGroup, float]]]:
    """A search's trials from its results rows: the searched values of the successful rows, and
    each trial (by its number in the table) with its validation `metric` and every parameter."""
    ok = label_search_trials(ok_rows(rows))
    values = searched_values(ok)
    incomplete = values.isna().any(axis=1).to_numpy()  # by position in `ok`, whose index has gaps where rows failed
    groups = sorted(group_rows(ok), key=lambda g: _table_number(g) or 0)
    trials = [(g, g.stats(f"val_{metric}").mean) for g in groups]
    return values, [(g, value) for g, value in trials if not math.isnan(value) and not incomplete[g.position]]


def _table_number(group: RowGroup) -> int | None:
    number = group.label.removeprefix("trial ")
    return int(number) if number.isdigit() else None


def _study_from_rows(name: str, values: pd.DataFrame, trials: Sequence[tuple[RowGroup, float]]) -> Any:
    """An in-memory Optuna study holding the search's trials (`_row_trials`), so Optuna's plots
    apply to any results table; each trial keeps the number the search table gives it (user attr
    `table_trial`)."""
    import optuna

    distributions = {}
    for name_ in values.columns:
        column = values[name_].dropna()
        numeric = pd.to_numeric(column, errors="coerce")
        if pd.api.types.is_bool_dtype(column) or numeric.isna().any():
            distributions[name_] = optuna.distributions.CategoricalDistribution(sorted(column.astype(str).unique()))
        elif (numeric == numeric.round()).all() and pd.api.types.is_integer_dtype(column):
            distributions[name_] = optuna.distributions.IntDistribution(int(numeric.min()), int(numeric.max()))
        else:
            low, high = float(numeric.min()), float(numeric.max())
            distributions[name_] = optuna.distributions.FloatDistribution(low, high, log=low > 0 and high / low >= 100)
    study = optuna.create_study(direction="maximize", study_name=name)
    for g, value in trials:
        chosen = {
            key: str(raw)
            if isinstance(distributions[key], optuna.distributions.CategoricalDistribution)
            else (int(raw) if isinstance(distributions[key], optuna.distributions.IntDistribution) else float(raw))
            for key, raw in values.iloc[g.position].items()
        }
        number = _table_number(g)
        study.add_trial(
            optuna.trial.create_trial(
                params=chosen,
                distributions={k: distributions[k] for k in chosen},
                value=value,
                user_attrs={"table_trial": number} if number is not None else {},
            )
        )
    return study


def _load_study(options: ReportOptions, rows: pd.DataFrame) -> Any:
    import optuna

    name = options.study or study_name(rows)
    try:
        return optuna.load_study(study_name=name, storage=options.optuna_storage)
    except Exception as exc:  # any storage failure (URL, driver, missing study) is the user's to fix
        raise StoreError(
            f"{options.optuna_storage}: cannot open Optuna study {name!r} ({type(exc).__name__}: {exc})"
        ) from None


def _importance_evaluator() -> Any:
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    try:
        import sklearn  # noqa: F401  fANOVA (Optuna's default) needs scikit-learn
    except ImportError:
        return PedAnovaImportanceEvaluator()
    return FanovaImportanceEvaluator(seed=0)  # seeded: the same report twice draws the same bars


def _history_figure(
    points: Sequence[tuple[int, float]], numbered: bool, options: ReportOptions, source: str, out_dir: Path
) -> WrittenFigure:
    """The search's objective per trial (dots, %) and the best so far (a step line), drawn like
    the report's other figures: integer trial numbers, the metric in percent. `points`: (trial
    number, objective) of each complete trial; `numbered`: numbered as the search table numbers
    them (else Optuna's numbers)."""
    metric = METRIC_LABELS.get(options.selection_metric, options.selection_metric)
    points = sorted((number, value * 100) for number, value in points)
    numbers, values = np.array([n for n, _ in points]), np.array([v for _, v in points])
    fig = _new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    ax.plot(numbers, values, "o", color="C0", markersize=5, markeredgecolor="black", markeredgewidth=0.5, zorder=4)
    ax.step(numbers, np.maximum.accumulate(values), where="post", color="C1", linewidth=1.4)
    best = int(np.argmax(values))
    ax.plot(numbers[best], values[best], color="C1", **_CHOSEN)
    # From the rows, trials are numbered as the search table numbers them; Optuna's storage
    # numbers them in the order they started, which the table cannot know.
    ax.set_xlabel("trial (as numbered in the table)" if numbered else "trial (Optuna's number)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric} (%)")
    ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker="o", color="C0", markeredgecolor="black", linestyle="none", label="trial"),
        Line2D([], [], color="C1", linewidth=1.4, label="best so far"),
        Line2D([], [], color="white", label="best trial", **{**_CHOSEN, "markerfacecolor": "C1"}),
    ]
    _legend_below(fig, handles)
    caption = (
        f"Optimisation history: validation {metric} of each trial (the search's objective) and the best so far; "
        f"★ the best trial (from {source})."
    )
    return WrittenFigure("optimization_history", caption, _save(fig, out_dir / "optimization_history", options))


def search_figures(rows: pd.DataFrame, options: ReportOptions, out_dir: Path) -> list[WrittenFigure]:
    """Optuna's optimisation history and parameter importances, from its storage or from the rows."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as ovm
    from matplotlib import pyplot as plt

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if options.optuna_storage:
        study, source = _load_study(options, rows), f"Optuna storage {options.optuna_storage.split('://')[0]}"
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        points = [(t.user_attrs.get("table_trial", t.number), t.value) for t in complete]
        numbered = all("table_trial" in t.user_attrs for t in complete)
        searched = bool(complete) and bool(complete[0].params)
    else:
        # The history needs each trial's number and value only: an Optuna study of 10,000 trials
        # took seconds to build, so it is built only for the importances, when parameters vary.
        study, source = None, "the results rows"
        values, trials = _row_trials(rows, options.selection_metric)
        numbers = [_table_number(g) for g, _ in trials]
        points = [(k if n is None else n, value) for k, (n, (_, value)) in enumerate(zip(numbers, trials))]
        numbered = all(n is not None for n in numbers)
        searched = len(values.columns) > 0
    figures: list[WrittenFigure] = []
    if not points:
        return figures
    figures.append(_history_figure(points, numbered, options, source, out_dir))
    # Optuna's plots switch pyplot to its "ggplot" style globally; rc_context restores the
    # caller's style afterwards, so figures drawn later look like the rest of the report.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        if len(points) >= 2 and searched:
            study = study or _study_from_rows(study_name(rows), values, trials)
            try:
                ax = ovm.plot_param_importances(study, evaluator=_importance_evaluator())
            except (RuntimeError, ValueError):  # too few distinct trials for the evaluator
                return figures
            figures.append(
                WrittenFigure(
                    "param_importances",
                    f"Parameter importances of the objective (Optuna, from {source}).",
                    _save(ax.figure, out_dir / "param_importances", options, tight=True),
                )
            )
            plt.close(ax.figure)
    return figures


def _per_row(rows: pd.DataFrame, layout: str, options: ReportOptions, top: int) -> tuple[pd.DataFrame, str]:
    """The rows a figure with a panel or a line per table row draws, and what its caption adds:
    all of them up to SEARCH_TOP table rows; beyond, a search's `top` best trials on validation
    (the first the table shows) or a table's first `top` rows. A line or a panel per row of a
    study of thousands takes minutes and shows nothing."""
    if layout == "search":
        count = len(group_rows(label_search_trials(ok_rows(rows))))
        if count <= SEARCH_TOP:
            return rows, ""
        return shown_search_rows(rows, options, top), f" Drawn for the {top} best trials on validation (of {count})."
    count = len(group_rows(ok_rows(rows)))
    if count <= SEARCH_TOP:
        return rows, ""
    return first_table_rows(rows, top), f" Drawn for the first {top} rows of the table (of {count})."


def write_figures(rows: pd.DataFrame, layout: str, options: ReportOptions, out_dir: Path) -> list[WrittenFigure]:
    """Every figure that suits the layout and the data present (a figure with nothing to draw is skipped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[WrittenFigure | None] = []
    if layout in ("one_factor", "ladder"):
        figures.append(ablation_plot(rows, options, out_dir))
    if layout == "search":
        figures += search_figures(rows, options, out_dir)
    # A threshold table's curve has a point per row (its thresholds), not a panel per row: all rows.
    panels, panels_note = (rows, "") if layout == "threshold" else _per_row(rows, layout, options, _PANELS)
    lines, lines_note = _per_row(rows, layout, options, SEARCH_TOP)
    threshold = threshold_curve(panels, replace(options, layout=layout), out_dir)
    curves = learning_curves(lines, out_dir, options=options)
    for figure, note in ((threshold, panels_note), (curves, lines_note)):
        if figure is not None:
            figures.append(replace(figure, caption=figure.caption + note))
    return [replace(f, caption=_marked(f.caption, options)) for f in figures if f is not None]
