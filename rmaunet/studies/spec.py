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

The command line changes a spec without editing it: `--set KEY=VALUE` overrides a key of
`base` (dotted for a nested mapping, `loss_params.alpha=0.3`) and `--seeds 0,1` its seeds
(`load_spec(overrides=…, seeds=…)`). They apply before the rows are built, so every row
inherits them (a row that sets the key itself keeps its own value) and every trial's identity
includes them: a trial trained with `epochs=5` is never reused for 20.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmaunet.config import PRESETS, TrialConfig
from rmaunet.errors import ConfigError, SpecError
from rmaunet.safe_input import SAFE_NAME, LineDict, is_safe_name, parse_yaml, read_yaml
from rmaunet.training.quiet import native_stderr_held_back

__all__ = [
    "StudySpec",
    "Row",
    "load_spec",
    "parse_set",
    "parse_seeds",
    "override_keys",
    "KINDS",
    "SMOKE_OVERRIDES",
    "RESOURCE_LIMITS",
]

KINDS = ("table", "ladder", "loco", "threshold", "search")
TOP_KEYS = {
    "name",
    "kind",
    "description",
    "dataset",
    "base",
    "seeds",
    "select",
    "resources",
    "smoke",
    "rows",
    "steps",
    "full",
    "components",
    "thresholds",
    "space",
    "budget",
    "scheduler",
    "max_concurrent",
    "baseline",
    "report",
}
SELECT_METRICS = ("val_f1", "val_miou", "val_iou", "val_precision", "val_recall")
# Per trial (per worker with `workers` > 1): more than this is a typo, not a machine.
RESOURCE_LIMITS = {"cpu": 1024, "gpu": 64, "workers": 4096}
MAX_LABEL_CHARS = 200
MAX_SEED = 2**31 - 1  # TrialConfig.seed's range
MAX_BUDGET = 100_000

# Errors a TrialConfig (or a loss factory) raises for a value of the wrong type or size
# deep inside its checks; at spec load they are the user's mistake, cited by line.
_VALUE_ERRORS = (ConfigError, TypeError, ValueError, OverflowError)

# Values echoed in a message are cut short: the line is about the file, not the value.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 60, 40, 60, 6, 4
# No config field needs an integer this large; past it, float conversion overflows.
_MAX_INT = 2**53

# The presets' losses, known to build: a spec that keeps them needs no loss check.
_PRESET_LOSSES = {(preset.loss, preset.loss_params) for preset in PRESETS.values()}

# --smoke shrinks any spec to CPU minutes without editing it: small widths, crops, few
# tiles, one epoch. The spec's own `smoke:` block is applied on top.
SMOKE_RESOURCES: dict[str, float] = {"cpu": 1, "gpu": 0, "workers": 1}
SMOKE_OVERRIDES: dict[str, Any] = {
    "base_filters": 4,
    "depth": 2,
    "crop": 32,
    "max_tiles": 40,
    "epochs": 1,
    "batch_size": 8,
}

# Config fields that --set may not override, and why: one trial's seed is the study's seeds,
# and the selection metric is the study's (its top-level `select:`), not the base's.
_NOT_OVERRIDABLE = {
    "seed": "the seeds are the study's: use --seeds (e.g. --seeds 0,1,2)",
    "select": "the selection metric is the study's: edit the spec's top-level `select:`",
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
    smoke: bool = False  # shrunk by --smoke
    overrides: dict[str, Any] = field(default_factory=dict)  # --set: base keys (dotted when nested) -> values
    seeds_given: bool = False  # `seeds` came from --seeds, not from the spec

    def changes(self) -> str:
        """What the command line changed of the spec: "epochs=5, batch_size=8; seeds 0, 1" ("" for nothing)."""
        parts = [", ".join(f"{key}={_value_text(value)}" for key, value in self.overrides.items())]
        if self.seeds_given:
            parts.append(f"seeds {', '.join(map(str, self.seeds))}")
        return "; ".join(part for part in parts if part)

    def rows_keeping_their_own(self) -> dict[str, list[str]]:
        """Per --set key, the rows that set that key themselves (a table row's `set`, a ladder
        step, loco's `full`) and so keep their own value: the override is the base's."""
        base = self.base.to_dict()
        keeping: dict[str, list[str]] = {}
        for key in self.overrides:
            if self.kind == "search" and key.split(".")[0] in self.space:
                keeping[key] = ["the search's space"]
                continue
            labels = [r.label for r in self.rows if _lookup(r.config.to_dict(), key) != _lookup(base, key)]
            if labels:
                keeping[key] = labels
        return keeping


class _Context:
    """Where a refusal points: the spec file and line of the value."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Checks that build losses (and so import TensorFlow): run last, once the rest of
        # the spec is known to be valid, so that most refusals never start TensorFlow.
        self.deferred: list[Callable[[], None]] = []

    def fail(self, where: Any, reason: str, key: Any = None) -> SpecError:
        line = 0
        if isinstance(where, LineDict):
            line = where.line_of(key) if key is not None else where.line
        elif isinstance(where, int):
            line = where
        loc = f"{self.path}:{line}" if line else str(self.path)
        return SpecError(f"{loc}: {reason}")


class _FlagContext(_Context):
    """A refusal caused by --set points at the assignment, not at a line of the file. Its
    deferred checks (the overridden loss) run with the spec's own, in order."""

    def __init__(self, spec: _Context, overrides: Mapping[str, Any]) -> None:
        super().__init__(spec.path)
        self.deferred = spec.deferred
        self.overrides = overrides

    def fail(self, where: Any, reason: str, key: Any = None) -> SpecError:
        named = [k for k in self.overrides if k.split(".")[0] == key] or list(self.overrides)
        return SpecError(f"{' '.join(f'--set {k}={_value_text(self.overrides[k])}' for k in named)}: {reason}")


def override_keys() -> tuple[str, ...]:
    """The keys `--set` may override: the base config's fields and `preset`."""
    return tuple(sorted({"preset", *TrialConfig.field_names()} - set(_NOT_OVERRIDABLE)))


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items -> {KEY: value}. A value reads as it would in the spec (YAML 1.2):
    `epochs=5` is 5, `learning_rate=1e-4` a number, `crop=null` nothing, `loss=focal` text,
    `loss_params={alpha: 0.3}` a mapping. The keys and values are checked by load_spec."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item}: expected KEY=VALUE, e.g. --set epochs=5")
        if key in overrides:
            raise SpecError(f"--set {item}: {key} is set twice")
        overrides[key] = parse_yaml(text, f"--set {item}", lines=False)
    return overrides


def parse_seeds(text: str) -> tuple[int, ...]:
    """`--seeds 0,1,2` -> (0, 1, 2); their range and uniqueness are checked by load_spec."""
    items = [item.strip() for item in text.split(",")]
    if not all(re.fullmatch(r"[0-9]{1,10}", item) for item in items):
        raise SpecError(f"--seeds {text}: expected integers in [0, {MAX_SEED}] separated by commas, e.g. --seeds 0,1,2")
    return tuple(int(item) for item in items)


def load_spec(
    path: Path | str,
    *,
    smoke: bool = False,
    build_checks: bool = True,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
) -> StudySpec:
    """Read and validate a spec. `build_checks=False` skips the checks that build models and
    losses (TensorFlow; seconds each): for listing specs already known to be valid.
    `overrides` (--set) replace keys of its `base`, `seeds` (--seeds) its seeds, before any
    row is built; a refusal of either names the flag."""
    path = Path(path)
    overrides = {str(key): value for key, value in (overrides or {}).items()}
    ctx = _Context(path)
    doc = read_yaml(path, "spec")
    if not isinstance(doc, dict):
        raise SpecError(f"{path}:1: a spec must be a YAML mapping (key: value lines)")

    for key in doc:
        if key not in TOP_KEYS:
            raise ctx.fail(doc, f"unknown key {_SHORT.repr(key)} (known: {', '.join(sorted(TOP_KEYS))})", key)
    for required in ("name", "kind"):
        if required not in doc:
            raise ctx.fail(doc, f"missing required key {required!r}")
    kind = doc["kind"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise ctx.fail(doc, f"kind: unknown value {_SHORT.repr(kind)} (choose one of: {', '.join(KINDS)})", "kind")
    if not is_safe_name(doc["name"]):
        raise ctx.fail(
            doc,
            f"name: {_SHORT.repr(doc['name'])} cannot name the study's files (it must match {SAFE_NAME.pattern}: "
            "letters, digits, '_', '.', '-', not starting with '.')",
            "name",
        )
    name = str(doc["name"])
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ctx.fail(doc, "description: expected text", "description")

    select = doc.get("select", "val_f1")
    if not isinstance(select, str) or select not in SELECT_METRICS:
        known = ", ".join(SELECT_METRICS)
        raise ctx.fail(doc, f"select: unknown metric {_SHORT.repr(select)} (choose one of: {known})", "select")
    base_section = _section(ctx, doc, "base")
    base_values = dict(base_section)
    if "dataset" in doc and "dataset" in base_values and doc["dataset"] != base_values["dataset"]:
        raise ctx.fail(
            doc,
            f"dataset: {_SHORT.repr(doc['dataset'])} conflicts with base.dataset {_SHORT.repr(base_values['dataset'])} "
            "(name the dataset once)",
            "dataset",
        )
    # The study's selection metric is every trial's: it picks the kept epoch and a tuned threshold.
    if "select" in base_values:
        reason = "base: select is the study's; set it once, at the top level (select: val_…)"
        raise ctx.fail(base_section, reason, "select")
    base_values["select"] = select.removeprefix("val_")
    dataset = doc.get("dataset", base_values.get("dataset", "landslide4sense"))
    base_values["dataset"] = dataset
    base = _config(ctx, base_section or doc, base_values, None, "base")
    # Checked with or without --smoke: a typo there should not wait for the first smoke run.
    smoke_values = {**SMOKE_OVERRIDES, **_section(ctx, doc, "smoke")}
    _config(ctx, doc, smoke_values, base, "smoke")
    if overrides:
        flags = _FlagContext(ctx, overrides)
        base = _overridden(flags, base_values, base)
        dataset = base.dataset
        # What --set names stays as set: the command line's explicit value outranks --smoke's.
        overridden = {key.split(".")[0] for key in overrides}
        smoke_values = {key: value for key, value in smoke_values.items() if key not in overridden}
        if smoke:
            _config(flags, {}, smoke_values, base, "smoke")

    seeds_given = seeds is not None
    if seeds is None:
        seeds = doc.get("seeds", [0])
        problem = _seeds_problem(seeds)
        if problem:
            raise ctx.fail(doc, f"seeds: {problem}", "seeds")
    else:
        problem = _seeds_problem(seeds)
        if problem:
            shown = ",".join(map(str, seeds)) if isinstance(seeds, (list, tuple)) else _SHORT.repr(seeds)
            raise SpecError(f"--seeds {shown}: {problem}")
    resources = _resources(ctx, doc)

    rows: list[Row] = []
    thresholds: tuple[float, ...] = ()
    budget = 0
    if kind == "table":
        for item in _list(ctx, doc, "rows"):
            values = _item(ctx, item, ("label", "set"))
            rows.append(Row(values["label"], _config(ctx, item, _section(ctx, item, "set"), base, "set")))
    elif kind == "ladder":
        current = base
        rows.append(Row(_label(ctx, doc, doc.get("baseline", "Baseline"), "baseline"), base))
        steps: list[str] = []
        for item in _list(ctx, doc, "steps"):
            values = _item(ctx, item, ("label", "set"))
            current = _config(ctx, item, _section(ctx, item, "set"), current, "set")
            steps.append(values["label"])
            rows.append(Row(" + ".join(steps), current, tuple(steps)))
    elif kind == "loco":
        if "full" not in doc:
            raise ctx.fail(doc, "kind loco needs `full:` (the complete model's config)")
        full_section = _section(ctx, doc, "full")
        full = _config(ctx, full_section or doc, full_section, base, "full")
        items = _list(ctx, doc, "components")
        names = [_item(ctx, item, ("label", "remove"))["label"] for item in items]
        rows.append(Row(_label(ctx, doc, doc.get("baseline", "Full model"), "baseline"), full, tuple(names)))
        for item, label in zip(items, names):
            removed = _config(ctx, item, _section(ctx, item, "remove"), full, "remove")
            rows.append(Row(f"without {label}", removed, tuple(n for n in names if n != label)))
    elif kind == "threshold":
        raw = doc.get("thresholds")
        if not isinstance(raw, list) or not raw:
            raise ctx.fail(doc, "kind threshold needs `thresholds:` (a list of numbers in (0, 1))", "thresholds")
        for t in raw:
            if not _is_number(t) or not 0 < t < 1:
                raise ctx.fail(doc, f"thresholds: {_SHORT.repr(t)} is outside (0, 1)", "thresholds")
        thresholds = tuple(float(t) for t in raw)
        rows.append(Row(_label(ctx, doc, doc.get("baseline", name), "baseline"), base))
    else:  # search
        space = _section(ctx, doc, "space")
        if not space:
            raise ctx.fail(doc, "kind search needs `space:` (a mapping of config fields to distributions)")
        budget = doc.get("budget", 0)
        if not _is_int(budget) or not 1 <= budget <= MAX_BUDGET:
            raise ctx.fail(doc, f"budget: expected a number of trials in [1, {MAX_BUDGET}]", "budget")
        if resources["workers"] > 1:
            # Its trials train on one worker each (studies.search): a larger group would not be honoured.
            where = doc["resources"] if isinstance(doc.get("resources"), dict) else doc
            reason = "resources.workers: a search trains each sampled configuration on one worker"
            raise ctx.fail(where, reason, "workers")
        if doc.get("scheduler", "asha") not in ("asha", "fifo"):
            raise ctx.fail(doc, "scheduler: choose asha or fifo", "scheduler")
        ctx.deferred.append(functools.partial(_check_space, ctx, space, base))
        rows.append(Row(name, base))

    # A row's label names its results in the store: two rows with one label plan two results and keep one.
    labels = [r.label for r in rows]
    shared = next((label for label in labels if labels.count(label) > 1), None)
    if shared is not None:
        section = {"table": "rows", "ladder": "steps", "loco": "components"}.get(kind)
        raise ctx.fail(doc, f"two rows share the label {_SHORT.repr(shared)} (each row's label must differ)", section)

    if smoke:
        rows = [Row(r.label, _config(ctx, doc, smoke_values, r.config, "smoke"), r.steps) for r in rows]
        base = _config(ctx, doc, smoke_values, base, "smoke")
        # A smoke run is for a CPU: the paper specs' {cpu: 4, gpu: 1} would wait forever for a GPU.
        resources = {**resources, **SMOKE_RESOURCES}

    max_concurrent = doc.get("max_concurrent")
    if max_concurrent is not None and (not _is_int(max_concurrent) or not 1 <= max_concurrent <= MAX_BUDGET):
        raise ctx.fail(doc, f"max_concurrent: expected an integer in [1, {MAX_BUDGET}]", "max_concurrent")

    if ctx.deferred and build_checks:
        with native_stderr_held_back():
            for check in ctx.deferred:
                check()
    return StudySpec(
        name=name,
        kind=kind,
        path=path,
        dataset=dataset,
        base=base,
        seeds=tuple(seeds),
        select=select,
        resources=resources,
        rows=rows,
        thresholds=thresholds,
        space=dict(doc.get("space") or {}),
        budget=budget,
        scheduler=str(doc.get("scheduler", "asha")),
        max_concurrent=max_concurrent,
        description=description,
        smoke=smoke,
        overrides=overrides,
        seeds_given=seeds_given,
    )


def _seeds_problem(seeds: Any) -> str:
    """Why `seeds` cannot be a study's seeds ("" when they can)."""
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(_is_int(s) and 0 <= s <= MAX_SEED for s in seeds):
        return f"expected a non-empty list of integers in [0, {MAX_SEED}]"
    if len(set(seeds)) != len(seeds):
        return "each seed may appear once"
    return ""


def _overridden(ctx: _FlagContext, values: dict, base: TrialConfig) -> TrialConfig:
    """The spec's base (its `base:` values, already valid) with --set applied, checked as a
    whole: a key by name (with the close match), a value by the config's own rules."""
    values = dict(values)
    effective = base.to_dict()  # a nested key starts from the value the base has (a preset's loss_params)
    allowed = override_keys()
    changed: set[str] = set()
    for key, value in ctx.overrides.items():
        top, *inner = key.split(".")
        if top in _NOT_OVERRIDABLE:
            raise ctx.fail(None, _NOT_OVERRIDABLE[top], top)
        if top not in allowed:
            close = difflib.get_close_matches(top, allowed, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(allowed)}"
            raise ctx.fail(None, f"unknown key {_SHORT.repr(top)} of the base config ({hint})", top)
        if not inner:
            values[top] = value
            changed.add(top)
            continue
        # After `--set loss_params={…}` or `.alpha=…`, `--set loss_params.gamma=…` changes that mapping.
        tree = node = copy.deepcopy(values[top] if top in changed else effective.get(top))
        for part in inner[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ctx.fail(None, f"{key}: the base's {top} is not a mapping ({_SHORT.repr(effective.get(top))})", top)
        node[inner[-1]] = value
        values[top] = tree
        changed.add(top)
    return _config(ctx, {}, values, None, "base")


def _value_text(value: Any) -> str:
    """A value as --set would take it: text as is, anything else as YAML's flow style reads it."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    """values["a"]["b"] for key "a.b"; None where the path ends early."""
    for part in key.split("."):
        if not isinstance(values, Mapping):
            return None
        values = values.get(part)
    return values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a finite float (YAML's true / false are not numbers here)."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _kind_of(value: Any) -> str:
    """How YAML spells a value's type, for messages."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return {bool: "true/false", type(None): "nothing", str: "text"}.get(type(value), type(value).__name__)


def _section(ctx: _Context, parent: dict, key: str) -> dict:
    """parent[key] as a mapping with text keys ({} when absent or empty); anything else is refused."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.fail(parent, f"{key}: expected a mapping (field: value), got {_kind_of(value)}", key)
    for inner in value:
        if not isinstance(inner, str):
            raise ctx.fail(value, f"{key}: keys must be names, got {_SHORT.repr(inner)}", inner)
    return value


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
            raise ctx.fail(item, f"unknown key {_SHORT.repr(key)} (allowed here: {', '.join(allowed)})", key)
    if "label" not in item:
        raise ctx.fail(item, "missing `label`")
    return {**item, "label": _label(ctx, item, item["label"], "label")}


def _label(ctx: _Context, where: dict, value: Any, key: str) -> str:
    """A row label: text or a number, one printable line (it becomes a table row)."""
    if not (isinstance(value, str) or _is_number(value)):
        raise ctx.fail(where, f"{key}: expected text or a number, got {_kind_of(value)}", key)
    text = str(value)
    if not text.strip() or len(text) > MAX_LABEL_CHARS or not text.isprintable():
        raise ctx.fail(where, f"{key}: expected one line of 1-{MAX_LABEL_CHARS} printable characters", key)
    return text


def _config(ctx: _Context, where: Any, values: dict, base: TrialConfig | None, section: str) -> TrialConfig:
    """Overrides -> TrialConfig, with unknown names and bad values cited by line."""
    from rmaunet.data.bands import resolve_bands

    values = dict(values)
    key_where = where.get(section) if isinstance(where, dict) and isinstance(where.get(section), LineDict) else where
    if "select" in values and section != "base":
        reason = f"{section}: select is the study's; set it once, at the top level (select: val_…)"
        raise ctx.fail(key_where, reason, "select")
    preset = values.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            known = ", ".join(PRESETS)
            raise ctx.fail(key_where, f"{section}: unknown preset {_SHORT.repr(preset)} (known: {known})", "preset")
        preset_config = PRESETS[preset]
        base = preset_config if base is None else base.replace(**_differences(preset_config))
    for key, value in values.items():
        if _is_int(value) and abs(value) > _MAX_INT:
            raise ctx.fail(key_where, f"{section}: {key}: {_SHORT.repr(value)} is far too large", key)
    loss_params = values.get("loss_params")
    if loss_params is not None and not isinstance(loss_params, dict):
        raise ctx.fail(key_where, f"{section}: loss_params: expected a mapping like {{alpha: 0.5}}", "loss_params")
    try:
        config = TrialConfig.from_dict(values, base=base)
        resolve_bands(config.bands, config.dataset)
    except _VALUE_ERRORS as exc:
        message = str(exc)
        key = message.split(":", 1)[0].split(".")[0].strip()
        key = key.replace("unknown config key ", "").strip("'\"")
        raise ctx.fail(key_where, f"{section}: {message}", key if key in values else None) from None
    ctx.deferred.append(functools.partial(_check_loss, ctx, key_where, config, section))
    return config


def _differences(config: TrialConfig) -> dict[str, Any]:
    """The fields where a preset differs from the defaults."""
    default = TrialConfig().to_dict()
    return {k: v for k, v in config.to_dict().items() if default[k] != v}


def _check_loss(ctx: _Context, where: Any, config: TrialConfig, section: str) -> None:
    from rmaunet.studies.search import check_loss_params

    try:
        if (config.loss, config.loss_params) in _PRESET_LOSSES:
            return  # builds (a test builds every preset's loss): no TensorFlow import to prove it again
    except TypeError:  # an unhashable parameter value: let the loss factory judge it
        pass
    try:
        check_loss_params(config)
    except ConfigError as exc:
        raise ctx.fail(where, f"{section}: {exc}", "loss_params") from None
    except _VALUE_ERRORS as exc:  # a parameter of the wrong shape, met inside the loss factory
        params = _SHORT.repr(config.loss_kwargs)
        reason = f"{section}: loss {config.loss}: bad loss_params {params} ({exc})"
        raise ctx.fail(where, reason, "loss_params") from None


def _check_space(ctx: _Context, space: dict, base: TrialConfig) -> None:
    from rmaunet.studies.search import parse_space

    try:
        parse_space(dict(space), base)
    except _VALUE_ERRORS as exc:
        bad = str(exc).split(":", 1)[0].removeprefix("space.").removeprefix("space")
        raise ctx.fail(space, str(exc), bad if bad in space else None) from None


def _resources(ctx: _Context, doc: dict) -> dict[str, float]:
    res = doc.get("resources") or {}
    if not isinstance(res, dict):
        raise ctx.fail(doc, "resources: expected a mapping like {cpu: 1, gpu: 1}", "resources")
    for key, value in res.items():
        if key not in RESOURCE_LIMITS:
            known = ", ".join(sorted(RESOURCE_LIMITS))
            raise ctx.fail(res, f"resources: unknown key {_SHORT.repr(key)} (known: {known})", key)
        if not _is_number(value) or not 0 <= value <= RESOURCE_LIMITS[key]:
            limit = RESOURCE_LIMITS[key]
            raise ctx.fail(res, f"resources.{key}: expected a number in [0, {limit}], got {_SHORT.repr(value)}", key)
    out = {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0)), "workers": float(res.get("workers", 1))}
    if out["workers"] < 1 or out["workers"] != int(out["workers"]):
        raise ctx.fail(res, "resources.workers: expected a positive integer", "workers")
    return out
