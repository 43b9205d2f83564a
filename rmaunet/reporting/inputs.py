"""What a report reads: results rows (store folder, Parquet or CSV), reference rows, spec options."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rmaunet.errors import SpecError, StoreError
from rmaunet.reporting.latex import LATEX_STYLES

__all__ = [
    "ReportOptions",
    "ReferenceRow",
    "load_results",
    "load_studies",
    "normalise_results",
    "load_references",
    "options_from_spec",
    "REFERENCE_METRICS",
    "parse_json_list",
    "spec_record",
    "options_from_record",
    "study_options",
]

# Reference rows are typed in as the other paper prints them: percentages, blank for n/a.
REFERENCE_METRICS = ("f1", "precision", "recall", "miou", "det_f1", "det_accuracy", "det_precision", "det_recall")
_LAYOUTS = ("one_factor", "ladder", "threshold", "cross_dataset", "search")
_METRICS = ("f1", "miou", "iou", "precision", "recall")


@dataclass(frozen=True)
class ReferenceRow:
    """A published result shown beside ours (Table XI), e.g. another paper's number."""

    dataset: str
    model: str
    source: str = ""  # citation as printed, e.g. "[38]"
    values: Mapping[str, float] = field(default_factory=dict)  # REFERENCE_METRICS -> percent


@dataclass(frozen=True)
class ReportOptions:
    metrics: tuple[str, ...] = ("f1", "miou")  # test metrics of the one-factor / ladder / threshold tables
    # Row label or row_index of the baseline (a threshold table: a threshold); None: the first row (threshold 0.5).
    baseline: str | int | float | None = None
    layout: str | None = None  # force a layout; None: from the rows' `kind`
    caption: str = ""
    row_header: str = "Configuration"
    selection_metric: str = "f1"  # validation metric that picks the best threshold / search trial
    references: tuple[ReferenceRow, ...] = ()
    optuna_storage: str | None = None  # RDB URL of a search's Optuna study (figures from Optuna's own records)
    study: str | None = None  # the spec's study: what `--spec` reports, and its Optuna study's name
    latex_style: str = "float"  # table.tex as a float (table, or table* when wider than a column) or a bare "tabular"
    latex_scale: bool = False  # shrink a table wider than its column (opt-in: venues refuse scaled fonts)
    smoke: bool = False  # the study ran with --smoke: every output says it is a pipeline check, not a result
    synthetic: bool = False  # the study ran on synthetic data: every output says so
    overrides: str = ""  # what --set / --seeds changed of the spec ("epochs=5; seeds 0, 1"): every output says so

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in _METRICS]
        if unknown or not self.metrics:
            raise SpecError(f"report metrics: unknown {unknown or 'empty list'} (choose from {', '.join(_METRICS)})")
        if self.layout is not None and self.layout not in _LAYOUTS:
            raise SpecError(f"report layout: unknown {self.layout!r} (choose from {', '.join(_LAYOUTS)})")
        if self.latex_style not in LATEX_STYLES:
            raise SpecError(f"report latex_style: unknown {self.latex_style!r} (choose from {', '.join(LATEX_STYLES)})")


def load_results(path: Path | str, study: str | None = None) -> pd.DataFrame:
    """Rows from a results store (a folder, or an s3:// / gs:// URI), or from one Parquet /
    CSV results table."""
    from rmaunet.store import ResultsStore, is_uri

    if not str(path).strip():  # Path("") is the working directory
        raise StoreError("the results store is an empty name: give a folder, a .parquet / .csv file or a URI")
    if is_uri(str(path)):
        df = ResultsStore(str(path)).read(study)
        if df.empty:
            raise StoreError(f"{path}: no results rows" + (f" for study {study!r}" if study else ""))
        return df.reset_index(drop=True)
    path = Path(path)
    if path.is_dir():
        df = ResultsStore(path).read(study)
    elif path.is_file():
        suffix = path.suffix.lower()
        try:
            if suffix in (".parquet", ".pq"):
                df = pd.read_parquet(path)
            elif suffix in (".csv", ".tsv"):
                # pandas would read the label "None" (Table IX's untuned row) as missing.
                na = ["", "NaN", "nan", "NA", "n/a"]
                df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False, na_values=na)
            else:
                raise StoreError(f"{path}: not a results store folder, .parquet or .csv file")
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable results table ({exc})") from None
        df = normalise_results(df, path)
        if study is not None:
            df = df[df["study"].astype(str) == study]
    else:
        raise StoreError(f"{path}: no such results store or results table")
    if df.empty:
        raise StoreError(f"{path}: no results rows" + (f" for study {study!r}" if study else ""))
    return df.reset_index(drop=True)


def load_studies(path: Path | str, study: str | None = None) -> dict[str, pd.DataFrame]:
    """Each study's rows by name (sorted), or `study`'s alone. From a store, each study is read
    as `study run` reads it (a column's type settled by its own rows), every row file once."""
    from rmaunet.store import ResultsStore, is_uri

    if study is None and str(path).strip() and (is_uri(str(path)) or Path(path).is_dir()):
        studies = ResultsStore(str(path) if is_uri(str(path)) else Path(path)).read_studies()
        if not studies:
            raise StoreError(f"{path}: no results rows")
    else:
        df = load_results(path, study)
        if "study" not in df.columns:
            raise StoreError(f"{path}: results rows have no `study` column")
        studies = {name: rows.reset_index(drop=True) for name, rows in df.groupby("study", sort=True)}
    return dict(sorted(studies.items(), key=lambda item: str(item[0])))


def normalise_results(df: pd.DataFrame, source: Path | str) -> pd.DataFrame:
    """Fill what a hand-made table may leave out and refuse what would print wrong numbers."""
    if "row" not in df.columns:
        raise StoreError(f"{source}: results table has no `row` column (the row label)")
    metric_cols = [
        c for c in df.columns if c.startswith(("test_", "val_")) and c.split("_")[-1] in _METRICS + ("accuracy",)
    ]
    if not metric_cols:
        raise StoreError(f"{source}: results table has no metric column (test_f1, test_miou, …)")
    df = df.copy()
    _refuse_non_text(df, "row", source, allow_missing=False)
    if "study" in df.columns:
        _refuse_non_text(df, "study", source, allow_missing=True)
    df["row"] = df["row"].astype(str)
    defaults: dict[str, Any] = {"study": Path(source).stem, "kind": "table", "seed": 0, "status": "ok"}
    for col, value in defaults.items():
        df[col] = (
            df[col].fillna(value) if col in df.columns else value
        )  # blank cells too: a row without a study would vanish
    if "row_index" not in df.columns:  # table order = order of first appearance
        order = {label: i for i, label in enumerate(dict.fromkeys(df["row"]))}
        df["row_index"] = df["row"].map(order)
    if "threshold" in df.columns:  # "None" or blank typed for the untuned row
        df["threshold"] = pd.to_numeric(df["threshold"], errors="coerce")
    for col in metric_cols:
        values = pd.to_numeric(df[col], errors="coerce")
        text = df[col].notna() & values.isna() & (df[col].astype(str).str.strip().str.lower() != "nan")
        if text.any():  # coerced to NaN, the row would silently drop out of the table
            first = df.loc[text, col].iloc[0]
            raise StoreError(
                f"{source}: {col} holds {int(text.sum())} value(s) that are not numbers (first: {first!r})"
            )
        if (values > 1.0 + 1e-9).any():
            raise StoreError(
                f"{source}: {col} has values above 1; results tables hold fractions (0-1), divide percentages by 100"
            )
        df[col] = values
    return df


def _refuse_non_text(df: pd.DataFrame, column: str, source: Path | str, *, allow_missing: bool) -> None:
    """A label column (row, study) holds text or numbers: a list or a blank label cannot be printed or grouped."""
    bad = df[column].map(lambda v: isinstance(v, (list, dict, tuple, set, np.ndarray)))
    if not allow_missing:
        bad |= df[column].isna()
    if bad.any():
        what = "empty" if not allow_missing and df[column].isna().any() else "not text"
        raise StoreError(f"{source}: `{column}` is {what} in {int(bad.sum())} row(s); every row needs a {column} label")


def load_references(source: Path | str | Sequence[Mapping[str, Any] | ReferenceRow] | None) -> tuple[ReferenceRow, ...]:
    """Published rows from a CSV or YAML file (or already-parsed dicts, or ReferenceRows).

    Columns / keys: dataset, model, source (optional) and any of REFERENCE_METRICS in percent,
    e.g. `nepal,U-Net,[38],67.00,61.00,74.00,,,,,`. Empty cells print as n/a.
    """
    if source is None:
        return ()
    name = "references"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise SpecError(f"{path}: no such references file")
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            try:
                records = yaml.safe_load(path.read_text()) or []
            except yaml.YAMLError as exc:
                raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        else:
            try:
                records = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
            except (OSError, ValueError) as exc:
                raise SpecError(f"{path}: unreadable references CSV ({exc})") from None
    else:
        records = list(source)
    if not isinstance(records, list):
        raise SpecError(f"{name}: expected a list of rows (dataset, model, metrics)")
    rows = []
    for i, record in enumerate(records, start=1):
        if isinstance(record, ReferenceRow):
            rows.append(record)
            continue
        if not isinstance(record, Mapping) or not record.get("dataset") or not record.get("model"):
            raise SpecError(f"{name}: reference row {i} needs `dataset` and `model`")
        unknown = set(record) - {"dataset", "model", "source", *REFERENCE_METRICS}
        if unknown:
            raise SpecError(
                f"{name}: reference row {i} has unknown keys {sorted(unknown)} "
                f"(metrics: {', '.join(REFERENCE_METRICS)})"
            )
        values = {}
        for metric in REFERENCE_METRICS:
            raw = record.get(metric)
            if raw is None or str(raw).strip().lower() in ("", "n/a", "na", "-", "nan"):
                continue
            try:
                values[metric] = float(raw)
            except ValueError:
                raise SpecError(f"{name}: reference row {i}: {metric}={raw!r} is not a number") from None
            if not 0.0 <= values[metric] <= 100.0 or math.isnan(values[metric]):
                raise SpecError(f"{name}: reference row {i}: {metric}={raw} is not a percentage (0-100)")
        rows.append(ReferenceRow(str(record["dataset"]), str(record["model"]), str(record.get("source") or ""), values))
    return tuple(rows)


def options_from_spec(spec: Mapping[str, Any] | Path | str | None, base: ReportOptions | None = None) -> ReportOptions:
    """Report options from a study spec (YAML path, parsed mapping or `StudySpec`).

    Reads the spec's `name`, `description` (the default caption), its selection metric
    `select` (e.g. val_f1) and an optional
    `report:` section with any of: metrics, baseline (a row label or row_index; default the
    first row), layout, caption, row_header, latex_style (float or tabular), latex_scale
    (true: shrink a table wider than its column), references (a CSV/YAML file, relative to
    the spec), optuna_storage (an RDB URL).
    Everything else belongs to the study engine.
    """
    options = base or ReportOptions()
    if spec is None:
        return options
    spec_dir, where = Path("."), "spec"
    if isinstance(spec, (str, Path)):
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise SpecError(f"{path}: no such spec file")
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        spec_dir, where = path.parent, str(path)
    if not isinstance(spec, Mapping):  # a parsed StudySpec: its fields, and its file's folder for references
        where = str(getattr(spec, "path", where))
        spec_dir = Path(where).parent
        spec = {k: v for k, v in vars(spec).items() if not k.startswith("_")}
    report = spec.get("report") or {}
    if not isinstance(report, Mapping):
        raise SpecError(f"{where}: `report` must be a mapping (metrics, baseline, layout, …)")
    changes: dict[str, Any] = {}
    if "metrics" in report:
        metrics = report["metrics"]
        changes["metrics"] = tuple([metrics] if isinstance(metrics, str) else metrics)
    baseline = report.get("baseline")
    if isinstance(baseline, (str, int, float)) and not isinstance(baseline, bool):  # a float: a threshold row
        changes["baseline"] = baseline
    for key in ("layout", "caption", "row_header", "latex_style"):
        if report.get(key) is not None:
            changes[key] = str(report[key])
    if isinstance(report.get("latex_scale"), bool):
        changes["latex_scale"] = report["latex_scale"]
    if "caption" not in changes and isinstance(spec.get("description"), str) and spec["description"].strip():
        changes["caption"] = " ".join(spec["description"].split()).rstrip(".")  # the spec's one-line purpose
    select = spec.get("select")
    if isinstance(select, str):
        changes["selection_metric"] = select.removeprefix("val_")
    storage = report.get("optuna_storage")
    if isinstance(storage, str):
        changes["optuna_storage"] = storage
    if spec.get("name"):
        changes["study"] = str(spec["name"])
    if report.get("references") is not None:
        refs = report["references"]
        changes["references"] = load_references(spec_dir / refs if isinstance(refs, str) else refs)
    try:
        return replace(options, **changes)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def parse_json_list(value: Any) -> list[Any]:
    """`history` / `steps` cells: JSON text in the store, already a list in a hand-made frame."""
    if isinstance(value, list):
        return value
    if hasattr(value, "tolist") and not isinstance(value, str):
        return list(value.tolist())
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return []
    return parsed if isinstance(parsed, list) else []


def spec_record(spec: Any, *, smoke: bool, synthetic: bool) -> dict[str, Any]:
    """What a results store keeps of the spec a study ran with (`ResultsStore.write_spec`).

    The spec's own text, so a report made later from the store alone reads the same caption,
    baseline and `report:` section; its reference rows resolved (the file they name sits beside
    the spec, which the store does not have); and how the study ran (--smoke, synthetic data,
    what --set and --seeds changed of the spec), which every table and figure of its report states.
    """
    import yaml

    path = Path(spec.path)
    text = path.read_text(encoding="utf-8")
    options = options_from_spec(path)
    references = [{"dataset": r.dataset, "model": r.model, "source": r.source, **r.values} for r in options.references]
    return {
        "study": spec.name,
        "spec_file": path.name,
        "spec": text,
        "references": references if "references" in ((yaml.safe_load(text) or {}).get("report") or {}) else None,
        "smoke": smoke,
        "synthetic": synthetic,
        "overrides": spec.changes(),
    }


def options_from_record(record: Mapping[str, Any], base: ReportOptions | None = None) -> ReportOptions:
    """Report options from a kept spec record: the spec's own, then how the study ran."""
    import yaml

    where = f"kept spec {record.get('spec_file', '')} of study {record.get('study', '')!r}"
    try:
        doc = yaml.safe_load(str(record.get("spec") or "")) or {}
    except yaml.YAMLError as exc:
        raise StoreError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise StoreError(f"{where}: not a mapping")
    if record.get("references") is not None and isinstance(doc.get("report"), dict):
        doc["report"] = {**doc["report"], "references": list(record["references"])}
    return _how_it_ran(options_from_spec(doc, base), record)


def _how_it_ran(options: ReportOptions, record: Mapping[str, Any]) -> ReportOptions:
    """Facts of the run a kept spec record states, whatever spec file the report reads."""
    return replace(
        options,
        smoke=bool(record.get("smoke")),
        synthetic=bool(record.get("synthetic")),
        overrides=str(record.get("overrides") or ""),
    )


def study_options(
    store: Path | str, study: str, rows: pd.DataFrame, spec: Path | None = None, base: ReportOptions | None = None
) -> ReportOptions:
    """The options a study's report is drawn with: an explicit spec file, else the spec the store
    kept when the study ran, else the defaults. One rule for `rmaunet report` and `study run`,
    so both draw the same report. A search's Optuna history comes from the store's SQLite
    study when it has one."""
    from rmaunet.store import ResultsStore, is_uri

    results = ResultsStore(str(store)) if is_uri(str(store)) or Path(store).is_dir() else None
    record = results.read_spec(study) if results is not None else None
    if spec is not None:
        options = options_from_spec(spec, base)
        if record is not None:  # how it ran is a fact of the run, not of the spec file
            options = _how_it_ran(options, record)
    elif record is not None:
        options = options_from_record(record, base)
    else:
        options = base or ReportOptions()
    options = replace(options, study=options.study or study)
    searched = "kind" in rows.columns and (rows["kind"].astype(str) == "search").any()
    if searched and options.optuna_storage is None and results is not None and results.root is not None:
        database = results.root / "optuna.db"
        if database.is_file():
            options = replace(options, optuna_storage=f"sqlite:///{database}")
    return options
