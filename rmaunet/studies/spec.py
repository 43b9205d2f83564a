"""Study specs: the YAML schema under search_spaces/, validated before anything runs.

A spec names a study, a dataset, a base config, seeds, the selection metric, per-trial
resources and one of the kinds below; every error names the file, the line and the
reason (`SpecError`).

    name: paper_table4_losses
    kind: table                  # table | ladder | loco | threshold | search
    dataset: landslide4sense
    base: {preset: baseline}     # TrialConfig fields; `preset` picks a starting point
    seeds: [0, 1, 2]
    select: val_f1
    resources: {cpu: 1, gpu: 1}
    smoke: {epochs: 1}           # extra overrides applied by --smoke (after the built-in ones)
    rows:                        # kind table: overrides against the base
      - {label: "U-Net & Cross Entropy (baseline)"}
      - {label: "U-Net & Focal Loss", set: {loss: focal}}
    steps:                       # kind ladder: cumulative, each adds one technique
      - {label: "Combined loss", set: {loss: focal_iou}}
    full: {preset: rmaunet}      # kind loco: the full model …
    components:                  # … and one row per component left out
      - {label: "Multiple heads", remove: {heads: single}}
    thresholds: [0.4, 0.5, 0.95] # kind threshold: post-processing of `base`, zero training
    space: {…}, budget: 20       # kind search (see rmaunet.studies.search)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rmaunet.config import PRESETS, TrialConfig
from rmaunet.errors import ConfigError, SpecError

__all__ = ["StudySpec", "Row", "load_spec", "KINDS", "SMOKE_OVERRIDES"]

KINDS = ("table", "ladder", "loco", "threshold", "search")
TOP_KEYS = {
    "name", "kind", "description", "dataset", "base", "seeds", "select", "resources", "smoke",
    "rows", "steps", "full", "components", "thresholds", "space", "budget", "scheduler", "max_concurrent",
    "baseline", "report",
}
SELECT_METRICS = ("val_f1", "val_miou", "val_iou", "val_precision", "val_recall")
RESOURCE_KEYS = {"cpu", "gpu", "workers"}

# --smoke shrinks any spec to CPU minutes without editing it: small widths, crops, few
# tiles, one epoch. The spec's own `smoke:` block is applied on top.
SMOKE_OVERRIDES: dict[str, Any] = {
    "base_filters": 4,
    "depth": 2,
    "crop": 32,
    "max_tiles": 40,
    "epochs": 1,
    "batch_size": 8,
}


@dataclass(frozen=True)
class Row:
    label: str
    config: TrialConfig  # without the seed applied
    steps: tuple[str, ...] = ()


@dataclass
class StudySpec:
    name: str
    kind: str
    path: Path
    dataset: str
    base: TrialConfig
    seeds: tuple[int, ...]
    select: str
    resources: dict[str, float]
    rows: list[Row]
    thresholds: tuple[float, ...] = ()
    space: dict[str, Any] = field(default_factory=dict)
    budget: int = 0
    scheduler: str = "asha"
    max_concurrent: int | None = None
    description: str = ""


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping so errors can cite it."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = _LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return mapping


class _LineDict(dict):
    line: int = 0
    key_lines: dict[str, int] = {}


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Context:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: Any, reason: str, key: str | None = None) -> SpecError:
        line = 0
        if isinstance(where, _LineDict):
            line = where.key_lines.get(key, where.line) if key else where.line
        elif isinstance(where, int):
            line = where
        loc = f"{self.path}:{line}" if line else str(self.path)
        return SpecError(f"{loc}: {reason}")


def load_spec(path: Path | str, *, smoke: bool = False) -> StudySpec:
    path = Path(path)
    ctx = _Context(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror or exc})") from None
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping")

    for key in doc:
        if key not in TOP_KEYS:
            raise ctx.fail(doc, f"unknown key {key!r} (known: {', '.join(sorted(TOP_KEYS))})", key)
    for required in ("name", "kind"):
        if required not in doc:
            raise ctx.fail(doc, f"missing required key {required!r}")
    kind = doc["kind"]
    if kind not in KINDS:
        raise ctx.fail(doc, f"kind: unknown value {kind!r} (choose one of: {', '.join(KINDS)})", "kind")
    name = str(doc["name"])

    base_values = dict(doc.get("base") or {})
    dataset = doc.get("dataset", base_values.get("dataset", "landslide4sense"))
    base_values["dataset"] = dataset
    base = _config(ctx, doc.get("base") or doc, base_values, None, "base")
    smoke_values = {**SMOKE_OVERRIDES, **dict(doc.get("smoke") or {})} if smoke else {}

    seeds = doc.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ctx.fail(doc, "seeds: expected a non-empty list of non-negative integers", "seeds")
    if len(set(seeds)) != len(seeds):
        raise ctx.fail(doc, "seeds: each seed may appear once", "seeds")
    select = doc.get("select", "val_f1")
    if select not in SELECT_METRICS:
        raise ctx.fail(doc, f"select: unknown metric {select!r} (choose one of: {', '.join(SELECT_METRICS)})", "select")
    resources = _resources(ctx, doc)

    rows: list[Row] = []
    thresholds: tuple[float, ...] = ()
    if kind == "table":
        items = _list(ctx, doc, "rows")
        for item in items:
            values = _item(ctx, item, ("label", "set"))
            rows.append(Row(values["label"], _config(ctx, item, values.get("set") or {}, base, "set")))
    elif kind == "ladder":
        current = base
        rows.append(Row(str(doc.get("baseline", "Baseline")), base))
        steps: list[str] = []
        for item in _list(ctx, doc, "steps"):
            values = _item(ctx, item, ("label", "set"))
            current = _config(ctx, item, values.get("set") or {}, current, "set")
            steps.append(values["label"])
            rows.append(Row(" + ".join(steps), current, tuple(steps)))
    elif kind == "loco":
        if "full" not in doc:
            raise ctx.fail(doc, "kind loco needs `full:` (the complete model's config)")
        full = _config(ctx, doc["full"], dict(doc["full"] or {}), base, "full")
        items = _list(ctx, doc, "components")
        names = [_item(ctx, item, ("label", "remove"))["label"] for item in items]
        rows.append(Row(str(doc.get("baseline", "Full model")), full, tuple(names)))
        for item, label in zip(items, names):
            removed = _config(ctx, item, item.get("remove") or {}, full, "remove")
            rows.append(Row(f"without {label}", removed, tuple(n for n in names if n != label)))
    elif kind == "threshold":
        raw = doc.get("thresholds")
        if not isinstance(raw, list) or not raw:
            raise ctx.fail(doc, "kind threshold needs `thresholds:` (a list of numbers in (0, 1))", "thresholds")
        for t in raw:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
                raise ctx.fail(doc, f"thresholds: {t!r} is outside (0, 1)", "thresholds")
        thresholds = tuple(float(t) for t in raw)
        rows.append(Row(str(doc.get("baseline", name)), base))
    else:  # search
        if "space" not in doc or not isinstance(doc["space"], dict) or not doc["space"]:
            raise ctx.fail(doc, "kind search needs `space:` (a mapping of config fields to distributions)")
        budget = doc.get("budget", 0)
        if not isinstance(budget, int) or budget < 1:
            raise ctx.fail(doc, "budget: expected a positive number of trials", "budget")
        from rmaunet.studies.search import parse_space

        try:
            parse_space(dict(doc["space"]), base)
        except ConfigError as exc:
            bad = str(exc).split(":", 1)[0].removeprefix("space.").removeprefix("space")
            raise ctx.fail(doc["space"], str(exc), bad if bad in doc["space"] else None) from None
        if doc.get("scheduler", "asha") not in ("asha", "fifo"):
            raise ctx.fail(doc, "scheduler: choose asha or fifo", "scheduler")
        rows.append(Row(name, base))

    if kind in ("table",) and len({r.label for r in rows}) != len(rows):
        raise ctx.fail(doc, "rows: two rows share a label", "rows")

    if smoke_values:
        rows = [Row(r.label, _config(ctx, doc, smoke_values, r.config, "smoke"), r.steps) for r in rows]
        base = _config(ctx, doc, smoke_values, base, "smoke")

    max_concurrent = doc.get("max_concurrent")
    if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
        raise ctx.fail(doc, "max_concurrent: expected a positive integer", "max_concurrent")
    return StudySpec(
        name=name, kind=kind, path=path, dataset=dataset, base=base, seeds=tuple(seeds), select=select,
        resources=resources, rows=rows, thresholds=thresholds, space=dict(doc.get("space") or {}),
        budget=int(doc.get("budget", 0) or 0), scheduler=str(doc.get("scheduler", "asha")),
        max_concurrent=max_concurrent, description=str(doc.get("description", "")),
    )


def _list(ctx: _Context, doc: dict, key: str) -> list:
    items = doc.get(key)
    if not isinstance(items, list) or not items:
        raise ctx.fail(doc, f"kind {doc['kind']} needs `{key}:` (a non-empty list)", key if key in doc else None)
    for item in items:
        if not isinstance(item, dict):
            raise ctx.fail(doc, f"{key}: each entry must be a mapping with a label", key)
    return items


def _item(ctx: _Context, item: dict, allowed: tuple[str, ...]) -> dict:
    for key in item:
        if key not in allowed:
            raise ctx.fail(item, f"unknown key {key!r} (allowed here: {', '.join(allowed)})", key)
    if "label" not in item or not str(item["label"]).strip():
        raise ctx.fail(item, "missing `label`")
    return {**item, "label": str(item["label"])}


def _config(ctx: _Context, where: Any, values: dict, base: TrialConfig | None, section: str) -> TrialConfig:
    """Overrides -> TrialConfig, with unknown names and bad values cited by line."""
    from rmaunet.data.bands import resolve_bands

    values = dict(values)
    preset = values.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ctx.fail(where, f"{section}: unknown preset {preset!r} (known: {', '.join(PRESETS)})", "preset")
        preset_config = PRESETS[preset]
        base = preset_config if base is None else base.replace(**_differences(preset_config))
    key_where = where.get(section) if isinstance(where, dict) and isinstance(where.get(section), _LineDict) else where
    try:
        config = TrialConfig.from_dict(values, base=base)
        resolve_bands(config.bands, config.dataset)
    except (ConfigError, TypeError) as exc:
        message = str(exc)
        key = message.split(":", 1)[0].split(".")[0].strip()
        key = key.replace("unknown config key ", "").strip("'\"")
        raise ctx.fail(key_where, f"{section}: {message}", key if key in values else None) from None
    _check_loss(ctx, key_where, config, section)
    return config


def _differences(config: TrialConfig) -> dict[str, Any]:
    """The fields where a preset differs from the defaults."""
    default = TrialConfig().to_dict()
    return {k: v for k, v in config.to_dict().items() if default[k] != v}


def _check_loss(ctx: _Context, where: Any, config: TrialConfig, section: str) -> None:
    from rmaunet.studies.search import check_loss_params

    try:
        check_loss_params(config)
    except ConfigError as exc:
        raise ctx.fail(where, f"{section}: {exc}", "loss_params") from None


def _resources(ctx: _Context, doc: dict) -> dict[str, float]:
    res = doc.get("resources") or {}
    if not isinstance(res, dict):
        raise ctx.fail(doc, "resources: expected a mapping like {cpu: 1, gpu: 1}", "resources")
    for key, value in res.items():
        if key not in RESOURCE_KEYS:
            raise ctx.fail(res, f"resources: unknown key {key!r} (known: {', '.join(sorted(RESOURCE_KEYS))})", key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ctx.fail(res, f"resources.{key}: expected a non-negative number, got {value!r}", key)
    out = {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0)), "workers": float(res.get("workers", 1))}
    if out["workers"] < 1 or out["workers"] != int(out["workers"]):
        raise ctx.fail(res, "resources.workers: expected a positive integer", "workers")
    return out
