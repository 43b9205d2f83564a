"""TrialConfig: every knob of the paper in one frozen, validated dataclass.

Defaults are the paper's U-Net baseline (Section III): 14 bands, double conv, no
attention, one head, cross-entropy with L2 1e-4, Adam at 4e-4, 30 epochs. The content
hash covers only what changes a training run, so a threshold sweep or a change of the
number of data-parallel workers reuses an existing trial. What decides which epoch a trial
keeps (its `select` metric, and its threshold when fixed: the epoch is chosen at the
threshold the row is scored at) is part of the hash.

This module imports neither TensorFlow nor Ray: the study engine validates specs with it
before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmaunet.datasets import DATASET_INFO
from rmaunet.errors import ConfigError

__all__ = [
    "TrialConfig",
    "PRESETS",
    "DATASETS",
    "LOSSES",
    "BLOCKS",
    "ATTENTIONS",
    "HEADS",
    "TASKS",
    "BACKBONES",
    "AUGMENTATIONS",
    "PRECISIONS",
    "NORMALISATIONS",
    "LR_SCHEDULES",
    "SELECT_METRICS",
    "TUNED",
    "POST_TRAINING_FIELDS",
    "EXECUTION_FIELDS",
    "DEEPLAB_STRIDE",
    "DEEPLAB_RATES",
    "aspp_rates",
    "aspp_too_small",
    "learning_rate_at",
]

# The catalogue of names a spec may use. Each registry (rmaunet.losses, rmaunet.models)
# is checked against these tuples by a test, so the two cannot drift apart. The datasets
# are declared in rmaunet.datasets.
DATASETS = tuple(DATASET_INFO)
LOSSES = (
    "cross_entropy",
    "focal",
    "log_cosh",
    "iou",
    "tversky",
    "lovasz",
    "boundary",
    "signed_distance",
    "center",
    "focal_iou",
    "weighted_sum",
)
BLOCKS = ("double_conv", "res_conv")
ATTENTIONS = ("none", "se", "cbam", "mha")
HEADS = ("single", "multi_resolution")
TASKS = ("segmentation", "detection", "segmentation+detection")
BACKBONES = ("unet", "deeplabv3", "mobilenetv3", "efficientnetv2")
AUGMENTATIONS = ("rotation", "cutmix")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
NORMALISATIONS = ("train_stats", "official", "none")
# How the learning rate moves over the epochs (learning_rate_at): held, or cosine-decayed
# from `learning_rate` in epoch 1 towards 0 after the last, so the curves settle by the end.
LR_SCHEDULES = ("constant", "cosine")
# The threshold protocol that chooses the decision threshold on validation, per trial.
TUNED = "tuned"
# The thresholds a tuned protocol and checkpoint selection choose among (rmaunet.thresholds
# re-exports it as GRID). 0.05 steps, with 0.01 steps below 0.05 and above 0.95: a
# class-balanced focal loss puts its best threshold near 0.05, and a grid that stopped there
# could not tell whether the optimum lay below it (the demo's Focal & IoU trials chose its
# edge). Stored maps are uint8, so 0.01 apart is still distinct.
THRESHOLD_GRID = (0.01, 0.02, 0.03, 0.04) + tuple(round(0.05 * k, 2) for k in range(1, 20)) + (0.96, 0.97, 0.98, 0.99)
# Validation metrics a trial may select its checkpoint by (a spec's `select: val_<metric>`).
SELECT_METRICS = ("f1", "miou", "iou", "precision", "recall")

# DeepLab-V3 (Chen et al. 2017): ResNet-50 at output stride 16, ASPP at these rates for its
# 513-px crops. Here and in reporting (which says when a table's inputs are too small for them).
DEEPLAB_STRIDE = 16
DEEPLAB_RATES = (6, 12, 18)
_DEEPLAB_CROP = 512  # the published crop, to the stride: its map is what the rates were set for


def aspp_rates(size: int) -> tuple[int, ...]:
    """DeepLab-V3's ASPP rates for `size`-px inputs: the published rates scaled by size / 512,
    so each branch sees the same share of the map as in the paper (at least rate 1).
    128 px: (2, 3, 5); 512 px: (6, 12, 18)."""
    return tuple(max(1, math.floor(rate * size / _DEEPLAB_CROP + 0.5)) for rate in DEEPLAB_RATES)


def aspp_too_small(size: int) -> bool:
    """True when `size`-px inputs are too small for ASPP: scaled rates that coincide (the
    pyramid loses scales) or reach past the stride-16 map (a branch sees only padding)."""
    rates, side = aspp_rates(size), size // DEEPLAB_STRIDE
    return len(set(rates)) < len(rates) or max(rates) >= side


# Fields that do not change what a training run learns: excluded from the training hash
# (which epoch the thresholds make a trial keep enters it as the selection rule).
POST_TRAINING_FIELDS = ("threshold", "det_threshold")
EXECUTION_FIELDS = ("num_workers",)


# keras.applications encoders find their skips by size (strides up to 32); DeepLab-V3's
# output stride is 16 (rmaunet.models.backbones.DEEPLAB_STRIDE). Others: 2**depth.
_SIZE_MULTIPLES = {"mobilenetv3": 32, "efficientnetv2": 32, "deeplabv3": 16}


@dataclass(frozen=True)
class TrialConfig:
    """One trial's complete description. Construct with keywords; validated on creation."""

    # data
    dataset: str = "landslide4sense"
    bands: str = "14"  # a named set of Table VI ("14", "17", … "26") or comma-separated band names
    crop: int | None = None  # train / evaluate on centre crops of this side (None: full tiles)
    max_tiles: int | None = None  # a seeded random subset of this many tiles of the training folder
    # Optional region of each tile, so that whole regions fall in one split (rmaunet.data.splits):
    # "regex:<pattern>" (the pattern's first group, else its whole match, in the file name)
    # or "csv:<path>" (columns `file`, `group`). None: random per tile, as the paper's splits.
    split_groups: str | None = None
    augment: tuple[str, ...] = ("rotation", "cutmix")
    val_fraction: float = 0.1
    test_fraction: float | None = None  # None: the dataset's own (L4S 0.2, Bijie 0.3)
    normalisation: str = "train_stats"
    # model
    backbone: str = "unet"
    block: str = "double_conv"
    attention: str = "none"
    heads: str = "single"
    task: str = "segmentation"
    base_filters: int = 64
    depth: int = 4
    # loss and optimisation
    loss: str = "cross_entropy"
    loss_params: tuple[tuple[str, Any], ...] = ()
    l2: float = 1e-4
    learning_rate: float = 4e-4
    lr_schedule: str = "constant"
    epochs: int = 30
    batch_size: int = 16
    seed: int = 0
    select: str = "f1"  # validation metric that picks the checkpoint and a tuned threshold
    precision: str = "float32"
    xla: bool = False
    # post-processing
    # "tuned": chosen per trial on validation (by `select`) from the stored probability
    # maps; or a fixed decision threshold in (0, 1), the paper's protocol.
    threshold: float | str = TUNED
    # The detection head's threshold: "tuned" (per trial on validation, by image-level F1) or fixed in (0, 1).
    det_threshold: float | str = TUNED
    # execution
    num_workers: int = 1

    def __post_init__(self) -> None:
        # Normalise containers so equal configs hash equally whatever the caller passed.
        params = self.loss_params.items() if isinstance(self.loss_params, Mapping) else self.loss_params
        object.__setattr__(self, "loss_params", tuple(sorted((str(k), _freeze(v)) for k, v in params)))
        if isinstance(self.augment, str):
            object.__setattr__(self, "augment", tuple(a for a in self.augment.split(",") if a))
        else:
            object.__setattr__(self, "augment", tuple(self.augment))
        if isinstance(self.bands, int):
            object.__setattr__(self, "bands", str(self.bands))
        self._validate()

    def size_multiple(self) -> int:
        """What each side of a tile (after `crop`) must be a multiple of for this architecture:
        2**depth for the U-Net (each level halves it), the encoder's own stride otherwise."""
        return _SIZE_MULTIPLES.get(self.backbone, 2**self.depth)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        _choice("dataset", self.dataset, DATASETS)
        _choice("loss", self.loss, LOSSES)
        _choice("select", self.select, SELECT_METRICS)
        _choice("block", self.block, BLOCKS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("heads", self.heads, HEADS)
        _choice("task", self.task, TASKS)
        _choice("backbone", self.backbone, BACKBONES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("normalisation", self.normalisation, NORMALISATIONS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for a in self.augment:
            _choice("augment", a, AUGMENTATIONS)
        if not isinstance(self.bands, str) or not self.bands.strip():
            raise ConfigError(f"bands: expected a band set name or comma-separated band names, got {self.bands!r}")
        _int_range("base_filters", self.base_filters, 1, 1024)
        _int_range("depth", self.depth, 1, 7)
        _int_range("epochs", self.epochs, 1, 10_000)
        _int_range("batch_size", self.batch_size, 1, 65_536)
        _int_range("num_workers", self.num_workers, 1, 4096)
        _int_range("seed", self.seed, 0, 2**31 - 1)
        if self.crop is not None:
            _int_range("crop", self.crop, 8, 4096)
            if self.crop % (2**self.depth) != 0:
                raise ConfigError(f"crop: {self.crop} must be divisible by 2**depth = {2**self.depth}")
        if self.max_tiles is not None:
            _int_range("max_tiles", self.max_tiles, 1, 10**9)
        _float_range("val_fraction", self.val_fraction, 0.0, 0.9, open_low=True)
        if self.test_fraction is not None:
            _float_range("test_fraction", self.test_fraction, 0.0, 0.9, open_low=True)
        _float_range("l2", self.l2, 0.0, 1.0)
        _float_range("learning_rate", self.learning_rate, 0.0, 1.0, open_low=True)
        for name in ("threshold", "det_threshold"):
            value = getattr(self, name)
            if value != TUNED:
                if isinstance(value, str):
                    raise ConfigError(f"{name}: expected {TUNED!r} or a number in (0, 1), got {value!r}")
                _float_range(name, value, 0.0, 1.0, open_low=True, open_high=True)
        if self.split_groups is not None and not (
            isinstance(self.split_groups, str)
            and self.split_groups.startswith(("regex:", "csv:"))
            and self.split_groups.split(":", 1)[1]
        ):
            raise ConfigError(
                f"split_groups: expected 'regex:<pattern>' or 'csv:<path>' naming each tile's region, "
                f"got {self.split_groups!r}"
            )
        if not isinstance(self.xla, bool):
            raise ConfigError(f"xla: expected true or false, got {self.xla!r}")
        params = dict(self.loss_params)
        if "alpha" in params:
            _float_range("loss_params.alpha", params["alpha"], 0.0, 1.0)
        for key in ("beta", "gamma"):
            if key in params:
                _float_range(f"loss_params.{key}", params[key], 0.0, 100.0)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: TrialConfig | None = None) -> TrialConfig:
        """Build from plain values (a YAML mapping); unknown keys are refused by name."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = dict(values)
        if "loss_params" in values and values["loss_params"] is None:
            values["loss_params"] = ()
        if "augment" in values and values["augment"] is None:
            values["augment"] = ()
        start = base if base is not None else cls()
        try:
            return dataclasses.replace(start, **values)
        except TypeError as exc:  # a value of the wrong type deep inside validation
            raise ConfigError(str(exc)) from None

    def replace(self, **changes: Any) -> TrialConfig:
        return TrialConfig.from_dict(changes, base=self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values; round-trips through from_dict."""
        d = dataclasses.asdict(self)
        d["loss_params"] = {k: v for k, v in self.loss_params}
        d["augment"] = list(self.augment)
        return d

    def training_dict(self) -> dict[str, Any]:
        """The fields that decide what a training run learns (hash input)."""
        d = self.to_dict()
        for name in POST_TRAINING_FIELDS + EXECUTION_FIELDS:
            d.pop(name)
        # The rule that picks the kept epoch: the best validation `select` metric over the
        # threshold grid (rmaunet.thresholds.GRID) for a tuned threshold, at the row's own
        # threshold when fixed (detection: likewise with det_threshold). Part of the identity:
        # trials selected under another rule are not reused as if they were not.
        d["checkpoint_selection"] = _selection_rule(self.threshold)
        if self.det_threshold != TUNED:
            d["detection_selection"] = _selection_rule(self.det_threshold)
        if self.max_tiles is not None:
            d["tile_subset"] = "seeded_random"  # once the first N in file order: another set of tiles
        # Fields added later leave out their defaults: every trial made before they existed
        # keeps its identity (and stays reusable).
        if self.split_groups is None:
            d.pop("split_groups")
        if self.lr_schedule == "constant":
            d.pop("lr_schedule")
        return d

    @property
    def training_hash(self) -> str:
        """Stable 16-hex content hash of training_dict (same across processes and runs)."""
        blob = json.dumps(self.training_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        return dict(self.loss_params)


def learning_rate_at(config: TrialConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based) under config.lr_schedule. A function of
    the epoch alone, so a resumed trial and every data-parallel rank use the same one."""
    if config.lr_schedule == "cosine":
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    return config.learning_rate


def _selection_rule(threshold: float | str) -> str:
    if threshold == TUNED:  # the grid is part of the rule: another grid may keep another epoch
        return f"best_over_thresholds_{THRESHOLD_GRID[0]:g}-{THRESHOLD_GRID[-1]:g}_by_{len(THRESHOLD_GRID)}"
    return f"at_threshold_{float(threshold):g}"


def _freeze(value: Any) -> Any:
    """Nested YAML values (a weighted_sum's terms) as hashable tuples; mappings as sorted pairs."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: unknown value {value!r} (choose one of: {', '.join(allowed)})")


def _int_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside [{low}, {high}]")


def _float_range(
    name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    too_low = value <= low if open_low else value < low
    too_high = value >= high if open_high else value > high
    if too_low or too_high:
        lo = "(" if open_low else "["
        hi = ")" if open_high else "]"
        raise ConfigError(f"{name}: {value} is outside {lo}{low}, {high}{hi}")


# Named presets: the paper's baseline and its final model (Section V, Table X last row).
PRESETS: dict[str, TrialConfig] = {
    "baseline": TrialConfig(),
    "rmaunet": TrialConfig(
        bands="23",
        loss="focal_iou",
        loss_params=(("alpha", 0.5),),
        heads="multi_resolution",
        block="res_conv",
        attention="mha",
    ),
}
