"""The paper's table layouts (Tables III-XI), built from results rows as layout-neutral `Table`s.

- one-factor (Tables III, IV, VI, VII, VIII; also `loco` without steps): one line per row;
- ladder (Table X, and `loco`): one ✓ column per technique in the rows' `steps`;
- threshold (Table IX): the row chosen on validation in bold;
- cross-dataset (Table XI): segmentation and detection blocks, n/a where a task does not
  apply, published reference rows beside ours;
- search: the best trials of an Optuna search with the parameters it varied.

Every number is a TEST metric in percent with two decimals. With several seeds a cell is
mean ± std and each row carries a paired t-test against the baseline, Holm-adjusted over the
table's comparisons; a row with one seed and per-tile counts shows a bootstrap interval over
test tiles instead. Captions and notes say only what the rows record (protocol.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from rmaunet.datasets import DATASET_INFO
from rmaunet.errors import SpecError, StoreError
from rmaunet.reporting.inputs import ReferenceRow, ReportOptions, parse_json_list
from rmaunet.reporting.protocol import (
    METRIC_LABELS,
    metric_label,
    metric_notes,
    protocol_notes,
    significance_notes,
    split_caption,
)
from rmaunet.reporting.stats import (
    BOOTSTRAP_METRICS,
    SIGNIFICANCE_LEVEL,
    BootstrapInterval,
    PairedTest,
    SeedStats,
    grouped_paired_tests,
    grouped_seed_stats,
    holm_adjust,
    paired_test,
    seed_stats,
    tile_bootstrap,
    tile_score,
)
from rmaunet.reporting.tabular import Cell, HeaderGroup, Table

__all__ = [
    "RowGroup",
    "GroupedRows",
    "group_rows",
    "baseline_group",
    "ok_rows",
    "choose_layout",
    "build_table",
    "one_factor_table",
    "ladder_table",
    "threshold_table",
    "cross_dataset_table",
    "search_table",
    "format_stats",
    "study_name",
    "baseline_name",
    "choose_threshold_row",
    "threshold_of",
    "varied_parameters",
    "searched_values",
    "format_parameter",
    "label_search_trials",
    "shown_search_rows",
    "first_table_rows",
    "run_mark",
    "METRIC_LABELS",
]

DATASET_NAMES = {name: info.title for name, info in DATASET_INFO.items()}
_SEG_METRICS = ("f1", "precision", "recall", "miou")  # Table XI's column order
_DET_METRICS = ("f1", "accuracy", "precision", "recall")
_NA = "n/a"
SEARCH_TOP = 20
_COUNTS_TOLERANCE = 5e-4  # a stored metric may be rounded; half a hundredth of a point is not a disagreement


class RowGroup:
    """One table row: its label and its successful results, one per seed.

    A slice of its table's `GroupedRows`, which computes each statistic for every row of the
    table at once: per row, pandas work cost milliseconds, and a search of 50,000 trials minutes.
    """

    def __init__(self, label: str, rows: GroupedRows, number: int) -> None:
        self.label = label
        self.grouped = rows
        self.number = number  # which slice of `grouped`
        self._intervals: dict[str, BootstrapInterval | None] = {}

    @cached_property
    def frame(self) -> pd.DataFrame:
        """Its results rows, indexed by their position in the frame grouped."""
        return self.grouped.frame_of(self.number)

    @property
    def position(self) -> int:
        """Where its first row is in the frame grouped."""
        return self.grouped.position(self.number)

    def values(self, column: str) -> pd.Series:
        """The column per seed (a seed stored twice, e.g. a rerun, counts once)."""
        return self.grouped.seed_values(self.number, column)

    def stats(self, column: str) -> SeedStats:
        return self.grouped.stats(column)[self.number]

    def cells(self, column: str) -> pd.Series:
        """Its rows' cells of `column` (empty when no row has the column)."""
        return self.grouped.cells(self.number, column)

    def interval(self, metric: str) -> BootstrapInterval | None:
        """The tile bootstrap interval of a test metric for a row with one seed; None otherwise.

        Several seeds already show a spread (their std); a row without per-tile counts
        (older rows, typed-in tables) has nothing to resample.
        """
        if metric not in self._intervals:
            self._intervals[metric] = self._bootstrap(metric)
        return self._intervals[metric]

    def _bootstrap(self, metric: str) -> BootstrapInterval | None:
        if metric not in BOOTSTRAP_METRICS or "test_tile_counts" not in self.grouped.frame.columns:
            return None
        if self.stats(f"test_{metric}").n != 1:
            return None
        counts = next((c for c in map(parse_json_list, self.cells("test_tile_counts")) if c), None)
        if counts is None:
            return None
        groups = next((g for g in map(parse_json_list, self.cells("test_tile_groups")) if g), None)
        try:
            interval = tile_bootstrap(counts, metric, groups=groups)
        except ValueError:
            raise StoreError(
                f"row {self.label!r}: test_tile_counts is not a list of [tp, fp, fn] per test tile"
            ) from None
        # The interval is printed beside the stored value: both must come from the same pixels.
        stored = self.stats(f"test_{metric}").mean
        recounted = tile_score(counts, metric)
        if abs(recounted - stored) > _COUNTS_TOLERANCE:
            raise StoreError(
                f"row {self.label!r}: test_tile_counts give test_{metric} {recounted:.4f}, the row says {stored:.4f}"
                " (counts from another threshold or split?)"
            )
        return interval

    def first(self, column: str) -> Any:
        cells = self.cells(column)
        return cells.iloc[0] if len(cells) else None


class GroupedRows:
    """A table's rows put in group order once, each table row a slice of them, and each
    column's statistics computed for all the slices together (grouped_seed_stats), then kept."""

    def __init__(self, rows: pd.DataFrame, number: np.ndarray) -> None:
        """`rows` (index 0..n-1) and the table row (0, 1, …) each of them belongs to."""
        order = np.argsort(number, kind="stable")
        self.frame = rows.iloc[order]
        self.groups = int(number.max()) + 1 if len(number) else 0
        self.bounds = np.searchsorted(number[order], np.arange(self.groups + 1))
        self._numeric: dict[str, np.ndarray] = {}
        self._stats: dict[str, list[SeedStats]] = {}

    def frame_of(self, group: int) -> pd.DataFrame:
        return self.frame.iloc[self.bounds[group] : self.bounds[group + 1]]

    def position(self, group: int) -> int:
        return int(self.frame.index[self.bounds[group]])

    def cells(self, group: int, column: str) -> pd.Series:
        if column not in self.frame.columns:
            return pd.Series(dtype=object)
        return self.frame[column].iloc[self.bounds[group] : self.bounds[group + 1]]

    @cached_property
    def _by_seed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:
        """The rows that have a seed, by group then seed (stable), as the per-seed groupby of one
        group orders them: their positions, each group's bounds among them, their seeds, and
        the groups where a seed repeats (a rerun), whose per-seed means take pandas' own path."""
        codes, seeds = pd.factorize(self.frame["seed"].to_numpy(), sort=True)
        group = np.repeat(np.arange(self.groups), np.diff(self.bounds))
        order = np.lexsort((codes, group))
        order = order[codes[order] >= 0]  # a groupby by seed leaves rows without one out
        group, codes = group[order], codes[order]
        repeated = (group[1:] == group[:-1]) & (codes[1:] == codes[:-1])
        bounds = np.searchsorted(group, np.arange(self.groups + 1))
        return order, bounds, np.asarray(seeds)[codes], set(group[1:][repeated].tolist())

    def numeric(self, column: str) -> np.ndarray:
        if column not in self._numeric:
            values = pd.to_numeric(self.frame[column], errors="coerce")
            self._numeric[column] = values.to_numpy(dtype=float, na_value=np.nan)
        return self._numeric[column]

    def seed_values(self, group: int, column: str) -> pd.Series:
        """`column` per seed of one group (sorted by seed), the mean of a seed's rows."""
        if column not in self.frame.columns:
            return pd.Series(dtype=float)
        order, bounds, seeds, reruns = self._by_seed
        if group in reruns:
            return self._rerun_values(group, column)
        rows = slice(bounds[group], bounds[group + 1])
        return pd.Series(self.numeric(column)[order[rows]], index=seeds[rows])

    def stats(self, column: str) -> list[SeedStats]:
        """`seed_stats` of `column` per seed, for every group."""
        if column not in self._stats:
            if column not in self.frame.columns:
                self._stats[column] = [seed_stats([])] * self.groups
            else:
                order, bounds, _, reruns = self._by_seed
                stats = grouped_seed_stats(self.numeric(column)[order], bounds)
                for group in reruns:
                    stats[group] = seed_stats(self._rerun_values(group, column))
                self._stats[column] = stats
        return self._stats[column]

    def paired_tests(self, base: int, column: str) -> list[PairedTest | None]:
        """`paired_test` of every group's `column` per seed against group `base`'s, all at once."""
        baseline = self.seed_values(base, column)
        if column not in self.frame.columns:
            return [None] * self.groups
        order, bounds, seeds, reruns = self._by_seed
        tests = grouped_paired_tests(baseline, self.numeric(column)[order], seeds, bounds)
        for group in reruns:
            tests[group] = paired_test(baseline, self._rerun_values(group, column))
        return tests

    def _rerun_values(self, group: int, column: str) -> pd.Series:
        """A group whose seeds repeat: the mean per seed as pandas computes it (for such
        groups its summation is not numpy's)."""
        values = pd.to_numeric(self.cells(group, column), errors="coerce")
        return values.groupby(self.cells(group, "seed").to_numpy()).mean()


def ok_mask(rows: pd.DataFrame) -> pd.Series:
    """True for rows that trained fine; a row without a status counts as ok."""
    if "status" not in rows.columns:
        return pd.Series(True, index=rows.index)
    return rows["status"].fillna("ok").astype(str) == "ok"


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[ok_mask(rows)]


def group_rows(rows: pd.DataFrame, by: tuple[str, ...] = ()) -> list[RowGroup]:
    """Rows in table order (spec's row_index, then first appearance), grouped by label (and `by`).

    Rows match a group by their keys as text (a label 1 and "1" are one row).
    """
    rows = rows.reset_index(drop=True)
    keys = [*by, "row"]
    text = rows[keys].astype(str)
    number = text.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()  # by first appearance
    if not len(number):
        return []
    index = pd.to_numeric(rows["row_index"], errors="coerce").fillna(math.inf) if "row_index" in rows.columns else 0
    lowest = pd.Series(index, index=rows.index, dtype=float).groupby(number).min().to_numpy()
    in_table = np.argsort(lowest, kind="stable")  # ties keep the order of first appearance
    place = np.empty_like(in_table)
    place[in_table] = np.arange(len(in_table))
    _, firsts = np.unique(number, return_index=True)
    labels = text["row"].to_numpy()[firsts[in_table]]
    grouped = GroupedRows(rows, place[number])
    return [RowGroup(str(label), grouped, k) for k, label in enumerate(labels)]


# ------------------------------------------------------------------ formatting
def format_stats(stats: SeedStats, interval: BootstrapInterval | None = None, scale: float = 100.0) -> str:
    """ "61.00 ± 1.00" over seeds, "61.00 [58.10, 63.20]" for one seed with a tile interval."""
    if stats.missing:
        return _NA
    if stats.n == 1 or math.isnan(stats.std):
        if interval is not None:
            return f"{stats.mean * scale:.2f} [{interval.low * scale:.2f}, {interval.high * scale:.2f}]"
        return f"{stats.mean * scale:.2f}"
    return f"{stats.mean * scale:.2f} ± {stats.std * scale:.2f}"


def _printed(stats: SeedStats) -> float:
    """The mean as printed (percent, two decimals): bold goes to every value that reads as the best."""
    return math.nan if stats.missing else round(stats.mean * 100, 2)


def _best_printed(column: Sequence[SeedStats], options: ReportOptions) -> float:
    """The value bold goes to; NaN (nothing bold) in a smoke run, or when every row prints the
    same value: a column of ties (a smoke run's zeros) has no best row."""
    present = [_printed(s) for s in column if not s.missing]
    if options.smoke or not present or (len(present) > 1 and len(set(present)) == 1):
        return math.nan
    return max(present)


def _any_bold(body: Sequence[Sequence[Cell]], skip: int = 1) -> bool:
    return any(cell.bold for line in body for cell in line[skip:])


def run_mark(options: ReportOptions) -> str:
    """What every caption and figure of a smoke or synthetic run, or of a spec changed on the
    command line (--set, --seeds), says first ("" for a real run of the spec as written)."""
    if options.smoke:
        data = " on synthetic data" if options.synthetic else ""
        mark = f"Smoke run{data} (--smoke: tiny model, few tiles, one epoch): a pipeline check, not a result"
    else:
        mark = "Synthetic data" if options.synthetic else ""
    if options.overrides:
        changed = f"spec changed on the command line: {options.overrides}"
        mark = f"{mark}; {changed}" if mark else changed[0].upper() + changed[1:]
    return mark


def _format_p(p_value: float) -> str:
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _p_cell(p_value: float) -> Cell:
    return Cell(_format_p(p_value), mark="*" if p_value < SIGNIFICANCE_LEVEL else "")


def _caption(title: str, options: ReportOptions, rows: pd.DataFrame) -> str:
    head = options.caption or title
    split = split_caption(ok_rows(rows))
    text = f"{head}. {split}." if head else f"{split}."
    mark = run_mark(options)
    return f"{mark}. {text}" if mark else text


def _interval_note(groups: Sequence[RowGroup], metrics: Sequence[str]) -> list[str]:
    """States what the bracketed intervals are, when any cell shows one."""
    shown = [i for g in groups for m in metrics if (i := g.interval(m)) is not None]
    if not shown:
        return []
    tiles = sorted({i.tiles for i in shown})
    count = str(tiles[0]) if len(tiles) == 1 else f"{tiles[0]}–{tiles[-1]}"
    first = shown[0]
    unit = f"{count} test tiles" if first.regions is None else f"test regions ({count} tiles)"
    note = (
        f"[low, high]: {first.level:.0%} percentile bootstrap interval of a one-seed row, resampling its {unit} "
        f"({first.resamples} resamples, seeded); it shows how much the value depends on the test tiles, "
        "not on training randomness."
    )
    return [note]


def baseline_group(groups: list[RowGroup], options: ReportOptions, study: str) -> RowGroup:
    """The row Δ and p compare against: the spec's baseline (label or row_index), else the first."""
    wanted = options.baseline
    if wanted is None:
        return groups[0]
    for group in groups:
        if group.label == str(wanted):
            return group
    if isinstance(wanted, int):
        for group in groups:
            if (pd.to_numeric(group.cells("row_index"), errors="coerce") == wanted).any():
                return group
    raise SpecError(
        f"report baseline {wanted!r} is not a row of study {study!r} (rows: {', '.join(g.label for g in groups)})"
    )


def baseline_name(label: str) -> str:
    """ "baseline “X”", or just "“X (baseline)”" when the label already says it is the baseline."""
    return f"“{label}”" if "baseline" in label.lower() else f"baseline “{label}”"


def study_name(rows: pd.DataFrame) -> str:
    return str(rows["study"].iloc[0]) if "study" in rows.columns and len(rows) else "study"


def _failed_note(rows: pd.DataFrame) -> list[str]:
    failed = rows[~ok_mask(rows)]
    if failed.empty:
        return []
    labels = ", ".join(dict.fromkeys(failed["row"].astype(str)))
    return [f"{len(failed)} failed trial(s) left out ({labels})."]


def _require_rows(rows: pd.DataFrame) -> list[RowGroup]:
    groups = group_rows(ok_rows(rows))
    if not groups:
        raise SpecError(f"study {study_name(rows)!r}: no successful results rows to report")
    return groups


# ------------------------------------------------------------------ seed-based layouts
def _seed_table(
    rows: pd.DataFrame,
    groups: list[RowGroup],
    options: ReportOptions,
    *,
    title: str,
    label_header: str,
    lead: Sequence[tuple[str, Callable[[RowGroup], str]]] = (),
    chosen: RowGroup | None = None,  # bold this whole row instead of each column's best
    notes: Sequence[str] = (),
) -> Table:
    """Shared body of the one-factor, ladder and threshold tables."""
    base = baseline_group(groups, options, study_name(rows))
    stats = {(id(g), m): g.stats(f"test_{m}") for g in groups for m in options.metrics}
    # A metric no row has (a typed-in table with F1 only) would be a column of n/a: leave it out.
    metrics = [m for m in options.metrics if any(not stats[id(g), m].missing for g in groups)] or list(
        options.metrics[:1]
    )
    primary = metrics[0]
    best = {m: _best_printed([stats[id(g), m] for g in groups], options) for m in metrics}
    several = any(s.n > 1 for s in stats.values())

    # One test per compared row, Holm-adjusted over all of them: unadjusted, a table of ten
    # rows that all equal the baseline shows a "significant" one about four times in ten.
    column = f"test_{primary}"
    every = base.grouped.paired_tests(base.number, column)
    tests = {id(g): every[g.number] for g in groups if g is not base}
    done = [(key, test) for key, test in tests.items() if test is not None]
    adjusted = dict(zip((key for key, _ in done), holm_adjust([test.p_value for _, test in done])))

    header = [label_header, *(name for name, _ in lead), *(METRIC_LABELS[m] for m in metrics)]
    header += [f"Δ {METRIC_LABELS[m]}" for m in metrics] + ["n"] + (["p"] if several else [])
    body = []
    for g in groups:
        is_chosen = chosen is not None and g is chosen
        line = [Cell(g.label, bold=is_chosen), *(Cell(fn(g)) for _, fn in lead)]
        for m in metrics:
            s = stats[id(g), m]
            top = chosen is None and _printed(s) == best[m]
            line.append(Cell(format_stats(s, g.interval(m)), bold=top or is_chosen))
        for m in metrics:
            s, b = stats[id(g), m], stats[id(base), m]
            if g is base:
                line.append(Cell("—"))
            elif s.missing or b.missing:
                line.append(Cell(_NA))
            else:
                line.append(Cell(f"{(s.mean - b.mean) * 100:+.2f}"))
        line.append(Cell(str(stats[id(g), primary].n)))
        if several:
            if g is base:
                line.append(Cell("baseline"))
            elif tests.get(id(g)) is not None and tests[id(g)].no_variance:
                line.append(Cell("no variance"))
            elif id(g) in adjusted:
                line.append(_p_cell(adjusted[id(g)]))
            else:
                line.append(Cell("n = 1" if stats[id(g), primary].n == 1 else "< 2 shared seeds"))
        body.append(line)

    all_notes = list(notes)
    bold = " Bold: best value per column." if chosen is None and _any_bold(body, 1 + len(lead)) else ""
    details: list[str] = []
    if several:
        to = baseline_name(base.label)
        all_notes.append(f"Cells: mean ± std over n seeds; Δ: difference of the means to {to}.{bold}")
        compared = [(g, tests[id(g)]) for g in groups if tests.get(id(g)) is not None]
        with_p = [(g, t) for g, t in compared if not t.no_variance]
        all_notes += [_p_note(primary, with_p)] if with_p else []
        all_notes += significance_notes(primary, [t for _, t in compared])
        if len(with_p) > 1:
            raw = "; ".join(f"{g.label} {_format_p(t.p_value)}" for g, t in with_p)
            details.append(f"Unadjusted p: {raw}.")
    else:
        seeds = "training seed" if "trial_id" in rows.columns else "result"  # a typed-in table records no seeds
        to = baseline_name(base.label)
        all_notes.append(f"Δ: difference to {to}; one {seeds} per row (n = 1), so no spread and no test.{bold}")
    all_notes += _interval_note(groups, metrics)
    all_notes += protocol_notes(ok_rows(rows)) + _failed_note(rows)
    details += metric_notes(metrics)
    align = "l" + "c" * len(lead) + "r" * (len(header) - 1 - len(lead))
    caption = _caption(title, options, rows)
    return Table(header, body, caption=caption, notes=all_notes, details=details, align=align)


def _p_note(primary: str, tests: Sequence[tuple[RowGroup, PairedTest]]) -> str:
    text = f"p: two-sided paired t-test on test {METRIC_LABELS[primary]} against the baseline over shared seeds"
    if len(tests) > 1:
        text += f", Holm-adjusted for {len(tests)} comparisons"
    return text + f"; *: p < {SIGNIFICANCE_LEVEL:g}."


def one_factor_table(rows: pd.DataFrame, options: ReportOptions | None = None, title: str = "") -> Table:
    """Tables III, IV, VI, VII, VIII: row label, the metrics, Δ against the baseline, n, p."""
    options = options or ReportOptions()
    return _seed_table(rows, _require_rows(rows), options, title=title, label_header=options.row_header)


def _techniques(groups: list[RowGroup]) -> dict[int, list[str]]:
    steps = {}
    for g in groups:
        seen: dict[str, None] = {}
        for cell in g.cells("steps"):
            seen.update(dict.fromkeys(str(s) for s in parse_json_list(cell)))
        steps[id(g)] = list(seen)
    return steps


def ladder_table(rows: pd.DataFrame, options: ReportOptions | None = None, title: str = "") -> Table:
    """Table X (and leave-one-out): a ✓ column per technique switched on, then the metrics."""
    options = options or ReportOptions()
    groups = _require_rows(rows)
    steps = _techniques(groups)
    columns = list(dict.fromkeys(s for g in groups for s in steps[id(g)]))
    lead = [(name, (lambda g, name=name: "✓" if name in steps[id(g)] else "-")) for name in columns]
    for g in groups:
        # The engine labels a ladder row by all its steps ("A + B + C"); the ✓ columns already
        # say that, so the label keeps only the step this row adds, as the paper's Table X does.
        if steps[id(g)] and g.label == " + ".join(steps[id(g)]):
            g.label = f"+ {steps[id(g)][-1]}"
    return _seed_table(rows, groups, options, title=title, label_header=options.row_header, lead=lead)


def threshold_table(rows: pd.DataFrame, options: ReportOptions | None = None, title: str = "") -> Table:
    """Table IX: one row per threshold; bold marks the threshold chosen on VALIDATION.

    The paper picked its threshold on the test split; here the choice is made where it is
    honest and the test numbers only report it.
    """
    options = options or ReportOptions()
    # "None" (no threshold) first, then ascending, as in the paper, whatever order the rows came in.
    groups = sorted(_require_rows(rows), key=lambda g: (not math.isnan(threshold_of(g)), threshold_of(g)))
    # Δ and p against the spec's report baseline (a threshold), else the conventional 0.5.
    wanted = THRESHOLD_BASELINE if options.baseline is None else options.baseline
    match = [g for g in groups if g.label == str(wanted) or _same_number(threshold_of(g), wanted)]
    if match:
        options = replace(options, baseline=match[0].label)
    chosen, split = choose_threshold_row(groups, options.selection_metric)
    where = "validation" if split == "val" else "test"
    note = f"Bold: the threshold chosen on {where} {metric_label(options.selection_metric)} ({chosen.label})."
    if split == "test":
        note += " No validation metrics were stored, so the choice was made on test."
    return _seed_table(rows, groups, options, title=title, label_header="Threshold", chosen=chosen, notes=[note])


# The cut a probability map gets untuned: what Table IX's other thresholds are measured against.
THRESHOLD_BASELINE = 0.5


def _same_number(value: float, wanted: Any) -> bool:
    try:
        return math.isclose(value, float(wanted))
    except (TypeError, ValueError):
        return False


def threshold_of(group: RowGroup) -> float:
    """The row's decision threshold: its `threshold` column, else its label; NaN for "None"."""
    values = pd.to_numeric(group.cells("threshold"), errors="coerce").dropna()
    if len(values):
        return float(values.iloc[0])
    try:
        return float(group.label)
    except ValueError:
        return math.nan


def choose_threshold_row(groups: list[RowGroup], metric: str) -> tuple[RowGroup, str]:
    for split in ("val", "test"):
        scored = [(g.stats(f"{split}_{metric}").mean, i) for i, g in enumerate(groups)]
        scored = [(v, i) for v, i in scored if not math.isnan(v)]
        if scored:
            # Ties go to the earlier row: the spec lists the plainer setting first.
            return groups[max(scored, key=lambda t: (t[0], -t[1]))[1]], split
    return groups[0], "test"


# ------------------------------------------------------------------ Table XI
def _dataset_key(name: Any) -> str:
    return str(name).strip().lower().replace("-", "").replace(" ", "")


def _dataset_label(key: str) -> str:
    return DATASET_NAMES.get(key, key)


def cross_dataset_table(rows: pd.DataFrame, options: ReportOptions | None = None, title: str = "") -> Table:
    """Table XI: per dataset, published reference rows then ours; segmentation and detection blocks."""
    options = options or ReportOptions()
    ok = ok_rows(rows)
    if "cfg_dataset" not in ok.columns:
        ok = ok.assign(cfg_dataset="landslide4sense")
    ours = group_rows(ok, by=("cfg_dataset",)) if len(ok) else []
    datasets = list(
        dict.fromkeys(
            [_dataset_key(g.first("cfg_dataset")) for g in ours] + [_dataset_key(r.dataset) for r in options.references]
        )
    )
    if not datasets:
        raise SpecError(f"study {study_name(rows)!r}: no successful results rows or reference rows to report")
    header = [
        "Dataset",
        "Model",
        *(METRIC_LABELS[m] for m in _SEG_METRICS),
        *(METRIC_LABELS[m] for m in _DET_METRICS),
        "n",
    ]
    groups = [
        HeaderGroup("", 2),
        HeaderGroup("Segmentation task", 4),
        HeaderGroup("Detection task", 4),
        HeaderGroup("", 1),
    ]
    body: list[list[Cell]] = []
    starts: set[int] = set()
    several = False
    for key in datasets:
        block: list[list[Cell]] = []
        for ref in (r for r in options.references if _dataset_key(r.dataset) == key):
            label = f"{ref.model} {ref.source}".strip()
            seg = [_reference_cell(ref, m) for m in _SEG_METRICS]
            det = [_reference_cell(ref, f"det_{m}") for m in _DET_METRICS]
            block.append([Cell(""), Cell(label), *seg, *det, Cell("published")])
        for g in (g for g in ours if _dataset_key(g.first("cfg_dataset")) == key):
            task = str(g.first("cfg_task") or "segmentation+detection")
            seg = [_our_cell(g, m, "segmentation" in task) for m in _SEG_METRICS]
            det = [_our_cell(g, f"det_{m}", "detection" in task) for m in _DET_METRICS]
            n = max(g.stats(f"test_{m}").n for m in ("f1", "det_f1"))
            several |= n > 1
            block.append([Cell(""), Cell(g.label), *seg, *det, Cell(str(n))])
        block[0][0] = Cell(_dataset_label(key))
        starts.add(len(body))
        body += block
    notes = [f"{_NA}: the task does not apply to that dataset or model."]
    if options.references:
        notes.append("Rows marked “published” are numbers reported by their sources, not rerun here.")
    if several:
        notes.append("Cells: mean ± std over n seeds.")
    elif len(ours):
        seeds = "training seed" if "trial_id" in ok.columns else "result"
        notes.append(f"Our rows: one {seeds} each (n = 1), no spread over seeds.")
    notes += _interval_note(ours, _SEG_METRICS) + protocol_notes(ok) + _failed_note(rows)
    details = metric_notes(_SEG_METRICS, detection=True)
    caption = _caption(title, options, rows)
    return Table(
        header,
        body,
        caption=caption,
        notes=notes,
        details=details,
        groups=groups,
        align="ll" + "r" * 9,
        rule_before=starts,
    )


def _reference_cell(ref: ReferenceRow, metric: str) -> Cell:
    value = ref.values.get(metric)
    return Cell(_NA if value is None else f"{value:.2f}")


def _our_cell(group: RowGroup, metric: str, applies: bool) -> Cell:
    return Cell(format_stats(group.stats(f"test_{metric}"), group.interval(metric)) if applies else _NA)


# ------------------------------------------------------------------ search
def varied_parameters(rows: pd.DataFrame) -> list[str]:
    """Config columns a search changed between trials (the seed is not a searched parameter)."""
    out = []
    for col in rows.columns:
        if col.startswith("cfg_") and col != "cfg_seed" and rows[col].astype(str).nunique() > 1:
            out.append(col)
    return out


def searched_values(rows: pd.DataFrame) -> pd.DataFrame:
    """One column per searched parameter, named as the search space names it (`alpha`, not a
    `cfg_loss_params` JSON cell), with native values: what the table and figures show."""
    params = varied_parameters(rows)
    out = pd.DataFrame(index=rows.index)
    for col in params:
        if col == "cfg_loss_params":
            parsed = [_as_mapping(v) for v in rows[col]]
            keys = list(dict.fromkeys(k for p in parsed for k in p))
            for key in keys:
                values = pd.Series([p.get(key) for p in parsed], index=rows.index)
                if values.astype(str).nunique() > 1:
                    out[key] = values
        else:
            out[col.removeprefix("cfg_")] = rows[col]
    return out


def _as_mapping(cell: Any) -> dict[str, Any]:
    """A stored `loss_params` cell ({"alpha": 0.5} or [["alpha", 0.5]] as JSON) as a dict."""
    import json

    value = cell
    if isinstance(cell, str):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        return {str(k): v for k, v in value}
    return {}


def format_parameter(values: Sequence[Any]) -> list[str]:
    """A searched parameter's values at the fewest significant digits (2 to 6) that keep the
    shown trials' different values different: 0.55, not 0.5488135039273248."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values) or all(isinstance(v, int) for v in numbers):
        return [str(v) for v in values]
    distinct = len({float(v) for v in numbers})
    for digits in range(2, 7):
        texts = [f"{float(v):.{digits}g}" for v in numbers]
        if len(set(texts)) == distinct:
            return texts
    return texts


def label_search_trials(rows: pd.DataFrame) -> pd.DataFrame:
    """Search trials named by their number in the order they finished ("trial 3"), the x axis of
    the history figure: the engine's labels spell out the parameters, which have their own
    columns. A configuration's seeds stay one trial; when every row carries the study's one
    label, each training is its own trial."""
    if "trial_id" not in rows.columns or rows.empty:
        return rows
    unit = "row" if rows["row"].nunique() > 1 or rows["trial_id"].nunique() == 1 else "trial_id"
    key = "finished_at" if "finished_at" in rows.columns else "row_index" if "row_index" in rows.columns else None
    keys = rows[unit].astype(str)
    firsts = rows.assign(_unit=keys).groupby("_unit", sort=False)[key].min().sort_values(kind="stable") if key else None
    order = list(firsts.index) if firsts is not None else list(dict.fromkeys(keys))
    number = {unit_key: k for k, unit_key in enumerate(order)}
    return rows.assign(row="trial " + keys.map(number).astype(str))


def search_table(
    rows: pd.DataFrame, options: ReportOptions | None = None, title: str = "", top: int = SEARCH_TOP
) -> Table:
    """The best trials of a search, ranked on validation, with the parameters the search varied."""
    options = options or ReportOptions()
    rows = label_search_trials(rows)
    ok = ok_rows(rows)
    groups = _require_rows(rows)
    metric = options.selection_metric
    shown = _best_trials(groups, metric)[:top]
    values = searched_values(ok)
    params = list(values.columns)
    metric_cols = [("val", metric), *(("test", m) for m in options.metrics)]
    header = ["Trial", *(p.replace("_", " ") for p in params)]
    header += [f"{'Val.' if split == 'val' else 'Test'} {metric_label(m)}" for split, m in metric_cols]
    several = any(g.stats(f"val_{metric}").n > 1 for g in shown)
    header += ["n"] if several else []
    # The groups' positions are in `ok` (not its index: failed rows leave gaps in that).
    columns = {p: format_parameter([values[p].iloc[g.position] for g in shown]) for p in params}
    stats = {(id(g), s, m): g.stats(f"{s}_{m}") for g in shown for s, m in metric_cols}
    best = {(s, m): _best_printed([stats[id(g), s, m] for g in shown], options) for s, m in metric_cols}
    body = []
    for k, g in enumerate(shown):
        line = [Cell(g.label), *(Cell(columns[p][k]) for p in params)]
        for s, m in metric_cols:
            st = stats[id(g), s, m]
            line.append(Cell(format_stats(st), bold=_printed(st) == best[s, m]))
        if several:
            line.append(Cell(str(stats[id(g), "val", metric].n)))
        body.append(line)
    notes = [f"Trials ranked by validation {metric_label(metric)}; {len(shown)} of {len(groups)} shown."]
    if _any_bold(body, 1 + len(params)):
        notes[0] += " Bold: best value per column."
    if "threshold" in params:
        # Searched, the threshold is a parameter like the others, not chosen per trial on validation.
        notes.append(
            f"Decision threshold: a searched parameter; each trial is scored at its own, and the search "
            f"ranks trials by validation {metric_label(metric)}."
        )
        ok = ok.drop(columns=["threshold_protocol"], errors="ignore")
    notes += protocol_notes(ok) + _failed_note(rows)
    align = "l" + "r" * (len(header) - 1)
    caption = _caption(title, options, rows)
    return Table(header, body, caption=caption, notes=notes, details=metric_notes(options.metrics), align=align)


def _best_trials(groups: list[RowGroup], metric: str) -> list[RowGroup]:
    """A search's trials ranked on validation `metric`, best first (ties, and NaN last, keep their order)."""
    return sorted(groups, key=lambda g: -_nan_low(g.stats(f"val_{metric}").mean))


def shown_search_rows(rows: pd.DataFrame, options: ReportOptions, top: int = SEARCH_TOP) -> pd.DataFrame:
    """The successful rows of the trials the search table shows (its `top` best on validation),
    as given, in their order: what a per-trial figure can draw legibly (a panel or a line per
    trial of a 10,000-trial search took hours and showed nothing)."""
    ok = ok_mask(rows).to_numpy()
    groups = group_rows(label_search_trials(rows)[ok])
    return _rows_of(rows, ok, _best_trials(groups, options.selection_metric)[:top])


def first_table_rows(rows: pd.DataFrame, top: int = SEARCH_TOP) -> pd.DataFrame:
    """The successful rows of the table's first `top` rows (table order), as given, in their
    order: what a figure with a panel or a line per table row can draw legibly."""
    ok = ok_mask(rows).to_numpy()
    return _rows_of(rows, ok, group_rows(rows[ok])[:top])


def _rows_of(rows: pd.DataFrame, ok: np.ndarray, shown: Sequence[RowGroup]) -> pd.DataFrame:
    """The rows of `shown` groups (grouped from `rows[ok]`) in `rows`' order."""
    positions = np.concatenate([g.frame.index.to_numpy() for g in shown]) if shown else np.array([], int)
    return rows.iloc[np.sort(np.flatnonzero(ok)[positions])]


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


# ------------------------------------------------------------------ dispatch
_BUILDERS: dict[str, Callable[[pd.DataFrame, ReportOptions, str], Table]] = {
    "one_factor": one_factor_table,
    "ladder": ladder_table,
    "threshold": threshold_table,
    "cross_dataset": cross_dataset_table,
    "search": search_table,
}


def choose_layout(rows: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """The layout a study's rows ask for: the spec's choice, else its `kind` (and datasets)."""
    options = options or ReportOptions()
    if options.layout:
        return options.layout
    kinds = rows["kind"].dropna().astype(str) if "kind" in rows.columns else pd.Series(dtype=str)
    kind = kinds.mode().iloc[0] if len(kinds) else "table"
    if kind == "threshold":
        return "threshold"
    if kind == "search":
        return "search"
    if kind in ("ladder", "loco"):
        has_steps = "steps" in rows.columns and any(parse_json_list(s) for s in rows["steps"])
        return "ladder" if has_steps else "one_factor"
    several_datasets = "cfg_dataset" in rows.columns and rows["cfg_dataset"].dropna().nunique() > 1
    return "cross_dataset" if several_datasets or options.references else "one_factor"


def build_table(
    rows: pd.DataFrame, options: ReportOptions | None = None, title: str = "", *, layout: str | None = None
) -> Table:
    """The study's table in `layout` (default: choose_layout's pick)."""
    options = options or ReportOptions()
    return _BUILDERS[layout or choose_layout(rows, options)](rows, options, title)
