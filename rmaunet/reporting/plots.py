"""Report figures (PNG and PDF): threshold curve, ablation bars, learning curves, search plots.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot's global state, so reports can be written from worker threads and headless nodes.
Only the search figures use pyplot, because Optuna's own plotting functions do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rmaunet.errors import StoreError
from rmaunet.reporting.inputs import ReportOptions, parse_json_list
from rmaunet.reporting.tables import (
    METRIC_LABELS,
    choose_threshold_row,
    group_rows,
    label_search_trials,
    ok_rows,
    study_name,
    threshold_of,
    varied_parameters,
)

__all__ = [
    "WrittenFigure",
    "threshold_curve",
    "ablation_bars",
    "learning_curves",
    "search_figures",
    "write_figures",
    "FIGURE_FORMATS",
]

FIGURE_FORMATS = ("png", "pdf")
_SPLIT_NAMES = {"val": "validation", "test": "test"}


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


def _save(fig: Any, base: Path, tight: bool = False) -> tuple[Path, ...]:
    """PNG and PDF; `tight` crops to the drawn content (Optuna's figures clip long parameter names)."""
    paths = []
    for fmt in FIGURE_FORMATS:
        path = base.with_suffix(f".{fmt}")
        # PDFs carry a creation date by default; without it a regenerated report is byte-identical.
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(path, dpi=150, metadata=metadata, bbox_inches="tight" if tight else None)
        paths.append(path)
    return tuple(paths)


def threshold_curve(rows: pd.DataFrame, options: ReportOptions, out_dir: Path) -> WrittenFigure | None:
    """Test F1 and mIoU against the threshold; the threshold chosen on validation marked."""
    groups = group_rows(ok_rows(rows))
    numeric = sorted((g for g in groups if not math.isnan(threshold_of(g))), key=threshold_of)
    if not numeric:
        return None
    chosen, split = choose_threshold_row(groups, options.selection_metric)
    fig = _new_figure()
    ax = fig.add_subplot()
    x = np.array([threshold_of(g) for g in numeric])
    for i, metric in enumerate(options.metrics[:2]):
        stats = [g.stats(f"test_{metric}") for g in numeric]
        mean = np.array([s.mean for s in stats]) * 100
        std = np.nan_to_num(np.array([s.std for s in stats]) * 100)
        color = f"C{i}"
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color=color, label=f"test {METRIC_LABELS[metric]}")
        for g in groups:
            if math.isnan(threshold_of(g)):  # the unthresholded model, for comparison
                ax.axhline(g.stats(f"test_{metric}").mean * 100, color=color, linestyle=":", linewidth=1, label=f"{g.label} ({METRIC_LABELS[metric]})")
        if chosen in numeric:
            j = numeric.index(chosen)
            ax.plot(x[j], mean[j], marker="*", markersize=16, color=color, markeredgecolor="black", zorder=5)
    if chosen in numeric:
        ax.axvline(threshold_of(chosen), color="grey", linestyle="--", linewidth=1, label=f"chosen on {_SPLIT_NAMES[split]} ({chosen.label})")
    ax.set_xlabel("decision threshold")
    ax.set_ylabel("test metric (%)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    choice = f"★ the threshold chosen on {_SPLIT_NAMES[split]}" if chosen in numeric else f"{_SPLIT_NAMES[split]} chose no threshold ({chosen.label}, dotted)"
    caption = f"Threshold curve: test {' and '.join(METRIC_LABELS[m] for m in options.metrics[:2])} against the threshold; {choice}."
    return WrittenFigure("threshold_curve", caption, _save(fig, out_dir / "threshold_curve"))


def ablation_bars(rows: pd.DataFrame, options: ReportOptions, out_dir: Path) -> WrittenFigure | None:
    """Each row's test metrics as horizontal bars, mean ± std over seeds as error bars."""
    groups = group_rows(ok_rows(rows))
    if not groups:
        return None
    metrics = options.metrics[:2]
    height = 1.2 + 0.45 * len(groups) * len(metrics)
    fig = _new_figure(7.0, min(height, 14.0))
    ax = fig.add_subplot()
    y = np.arange(len(groups))
    bar = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        stats = [g.stats(f"test_{metric}") for g in groups]
        mean = np.nan_to_num(np.array([s.mean for s in stats]) * 100)
        std = np.nan_to_num(np.array([s.std for s in stats]) * 100)
        ax.barh(y + (i - (len(metrics) - 1) / 2) * bar, mean, height=bar, xerr=std, capsize=3, color=f"C{i}", label=f"test {METRIC_LABELS[metric]}")
    ax.set_yticks(y, [g.label for g in groups])
    ax.invert_yaxis()  # table order, top to bottom
    low = min((g.stats(f"test_{m}").mean * 100 for g in groups for m in metrics if g.stats(f"test_{m}").n), default=0.0)
    ax.set_xlim(left=max(0.0, math.floor(low / 10) * 10 - 10))  # differences of a point must stay visible
    ax.set_xlabel("test metric (%)")
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    n = max(g.stats(f"test_{metrics[0]}").n for g in groups)
    spread = "error bars: std over seeds" if n > 1 else "one seed per row, no error bars"
    caption = f"Ablation: test {' and '.join(METRIC_LABELS[m] for m in metrics)} per row ({spread})."
    return WrittenFigure("ablation_bars", caption, _save(fig, out_dir / "ablation_bars"))


def _metric_name(column: str) -> str:
    split, _, metric = column.partition("_")
    return f"{_SPLIT_NAMES.get(split, split)} {METRIC_LABELS.get(metric, metric)}"


def learning_curves(rows: pd.DataFrame, out_dir: Path, metric: str = "val_f1") -> WrittenFigure | None:
    """Validation metric per epoch for every trial (one colour per table row, one line per seed)."""
    groups = group_rows(ok_rows(rows))
    fig = _new_figure()
    ax = fig.add_subplot()
    drawn = 0
    seen_trials: set[str] = set()
    for i, g in enumerate(groups):
        labelled = False
        for _, record in g.frame.iterrows():
            trial = str(record.get("trial_id", "")) or f"{g.label}/{record.get('seed')}"
            if trial in seen_trials:  # threshold rows share one training: draw it once
                continue
            history = [h for h in parse_json_list(record.get("history")) if isinstance(h, dict) and metric in h]
            if not history:
                continue
            seen_trials.add(trial)
            epochs = [h.get("epoch", k + 1) for k, h in enumerate(history)]
            values = [float(h[metric]) * 100 for h in history]
            ax.plot(epochs, values, color=f"C{i % 10}", alpha=0.8, marker="." if len(epochs) < 15 else None, label=None if labelled else g.label)
            labelled = True
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{_metric_name(metric)} (%)")
    if len(groups) <= 12:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    caption = f"Learning curves: {_metric_name(metric)} per epoch, one line per trial ({drawn} trials)."
    return WrittenFigure("learning_curves", caption, _save(fig, out_dir / "learning_curves"))


# ------------------------------------------------------------------ searches (Optuna's own plots)
def _study_from_rows(rows: pd.DataFrame, metric: str) -> Any:
    """An in-memory Optuna study holding the search's trials, so Optuna's plots apply to any results table."""
    import optuna

    ok = label_search_trials(ok_rows(rows))
    params = varied_parameters(ok)
    distributions = {}
    for col in params:
        values = ok[col].dropna()
        name = col.removeprefix("cfg_")
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            distributions[name] = optuna.distributions.CategoricalDistribution(sorted(values.astype(str).unique()))
        elif pd.api.types.is_integer_dtype(values):
            distributions[name] = optuna.distributions.IntDistribution(int(values.min()), int(values.max()))
        else:
            low, high = float(values.min()), float(values.max())
            distributions[name] = optuna.distributions.FloatDistribution(low, high, log=low > 0 and high / low >= 100)
    study = optuna.create_study(direction="maximize", study_name=study_name(rows))
    order = "finished_at" if "finished_at" in ok.columns else "row_index" if "row_index" in ok.columns else None
    groups = group_rows(ok)
    if order:
        groups.sort(key=lambda g: str(g.frame[order].min()) if order == "finished_at" else float(g.frame[order].min()))
    for g in groups:
        value = g.stats(f"val_{metric}").mean
        if math.isnan(value):
            continue
        chosen = {}
        for col in params:
            raw = g.first(col)
            if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                break
            dist = distributions[col.removeprefix("cfg_")]
            chosen[col.removeprefix("cfg_")] = str(raw) if isinstance(dist, optuna.distributions.CategoricalDistribution) else raw.item() if hasattr(raw, "item") else raw
        else:
            used = {k: distributions[k] for k in chosen}
            study.add_trial(optuna.trial.create_trial(params=chosen, distributions=used, value=value))
    return study


def _load_study(options: ReportOptions, rows: pd.DataFrame) -> Any:
    import optuna

    name = options.study or study_name(rows)
    try:
        return optuna.load_study(study_name=name, storage=options.optuna_storage)
    except Exception as exc:  # any storage failure (URL, driver, missing study) is the user's to fix
        raise StoreError(f"{options.optuna_storage}: cannot open Optuna study {name!r} ({type(exc).__name__}: {exc})") from None


def _importance_evaluator() -> Any:
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    try:
        import sklearn  # noqa: F401  fANOVA (Optuna's default) needs scikit-learn
    except ImportError:
        return PedAnovaImportanceEvaluator()
    return FanovaImportanceEvaluator(seed=0)  # seeded: the same report twice draws the same bars


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
    else:
        study, source = _study_from_rows(rows, options.selection_metric), "the results rows"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures: list[WrittenFigure] = []
    if not complete:
        return figures
    # Optuna's plots switch pyplot to its "ggplot" style globally; rc_context restores the
    # caller's style afterwards, so figures drawn later look like the rest of the report.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = ovm.plot_optimization_history(study)
        figures.append(WrittenFigure("optimization_history", f"Optimisation history: objective per trial and best so far (from {source}).", _save(ax.figure, out_dir / "optimization_history", tight=True)))
        plt.close(ax.figure)
        if len(complete) >= 2 and complete[0].params:
            try:
                ax = ovm.plot_param_importances(study, evaluator=_importance_evaluator())
            except (RuntimeError, ValueError):  # too few distinct trials for the evaluator
                return figures
            figures.append(WrittenFigure("param_importances", f"Parameter importances of the objective (Optuna, from {source}).", _save(ax.figure, out_dir / "param_importances", tight=True)))
            plt.close(ax.figure)
    return figures


def write_figures(rows: pd.DataFrame, layout: str, options: ReportOptions, out_dir: Path) -> list[WrittenFigure]:
    """Every figure that suits the layout and the data present (a figure with nothing to draw is skipped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: Sequence[WrittenFigure | None]
    if layout == "threshold":
        figures = [threshold_curve(rows, options, out_dir)]
    elif layout in ("one_factor", "ladder"):
        figures = [ablation_bars(rows, options, out_dir)]
    elif layout == "search":
        figures = list(search_figures(rows, options, out_dir))
    else:
        figures = []
    figures = [*figures, learning_curves(rows, out_dir)]
    return [f for f in figures if f is not None]
