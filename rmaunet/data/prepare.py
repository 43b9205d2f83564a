"""From a dataset folder to model-ready arrays: `prepare_splits(config, root)` is what a trial calls.

It reads the dataset (through the on-disk cache), engineers the configured bands, splits
train / validation / test deterministically and normalises with training-split statistics.

Splits follow each dataset's declared `SplitPolicy` (rmaunet.datasets; Section II-C of the
paper, plus a validation part for every selection decision):

- Landslide4Sense: TrainData (or the mirror's `train`), 80:20 train:test, stratified by
  "has a landslide"; validation carved from train.
- Bijie: all tiles, 70:30 train:test, stratified; validation carved from train.
- Nepal: its own folders: the test folder is the test split; the train and validation
  folders together are the development pool that train and validation are carved from
  (a missing test folder is carved from the pool instead).

With `split_groups`, every split holds whole regions (rmaunet.data.splits.grouped_split)
instead of tiles stratified one by one.

The test split depends on the data (and `max_tiles`, `test_fraction`) only, never on
`config.seed`: every trial of a study is scored on the same images. Validation is carved
from train with `config.seed` and `config.val_fraction`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rmaunet.data.bands import resolve_bands
from rmaunet.data.bijie import Bijie
from rmaunet.data.cache import CachedSplit
from rmaunet.data.fingerprint import fingerprint, fingerprint_of
from rmaunet.data.landslide4sense import Landslide4Sense
from rmaunet.data.nepal import Nepal
from rmaunet.data.reader import TileReader
from rmaunet.data.splits import holdout_split, tile_groups
from rmaunet.datasets import DATASET_INFO, LANDSLIDE4SENSE, DatasetInfo, dataset_info
from rmaunet.errors import ConfigError, DataError

if TYPE_CHECKING:
    from rmaunet.config import TrialConfig

__all__ = [
    "Splits",
    "prepare_splits",
    "validate_data",
    "check_trainable",
    "split_sizes",
    "DataSummary",
    "fingerprint",
    "fingerprint_of",
    "READERS",
    "open_reader",
    "OFFICIAL_L4S_MEAN",
    "OFFICIAL_L4S_STD",
]

log = logging.getLogger(__name__)

# The reader of each declared dataset (a test checks that every declaration has one).
READERS: dict[str, type[TileReader]] = {cls.info.name: cls for cls in (Landslide4Sense, Bijie, Nepal)}
OFFICIAL_L4S_MEAN = LANDSLIDE4SENSE.official_mean  # B1 … B12, slope, dem
OFFICIAL_L4S_STD = LANDSLIDE4SENSE.official_std
_TEST_SEED = 0  # fixed: the test split must not move with the trial seed


@dataclass
class Splits:
    """Model-ready arrays: images float32 NHWC (normalised), masks uint8 NHW {0, 1},
    per-image "has a landslide" labels uint8 N (derived from the masks when not given)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    band_names: tuple[str, ...]
    fingerprint: str
    yd_train: np.ndarray | None = None
    yd_val: np.ndarray | None = None
    yd_test: np.ndarray | None = None
    norm_mean: np.ndarray | None = None  # what was subtracted per band (None: not normalised)
    norm_std: np.ndarray | None = None
    nan_pixels: int = 0  # non-finite input values replaced while reading
    test_groups: tuple[str, ...] | None = None  # each test tile's region (config.split_groups), for the bootstrap
    source_size: int = 0  # the side of the tiles as read (before a crop): engineered bands are computed over it

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            if getattr(self, f"yd_{part}") is None:
                y = getattr(self, f"y_{part}")
                setattr(self, f"yd_{part}", y.reshape(len(y), -1).any(axis=1).astype(np.uint8))

    @property
    def num_bands(self) -> int:
        return self.x_train.shape[-1]


def open_reader(dataset: str, root: Path | str, split: str, **kwargs: Any) -> TileReader:
    """The reader of one split of a dataset (`split="all"` for Bijie)."""
    return READERS[dataset_info(dataset).name](root, split, **kwargs)


# ---------------------------------------------------------------------- splits
class _Pool:
    """Cached splits seen as one sequence of tiles (Nepal pools train and validation)."""

    def __init__(self, sources: list[CachedSplit]) -> None:
        self.sources = sources
        self.offsets = np.cumsum([0] + [len(s.images) for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def paths(self) -> list[Path]:
        """Each tile's image file, in pool order (what split_groups names regions by)."""
        return [Path(p) for source in self.sources for p in source.paths]

    def has_landslide(self) -> np.ndarray:
        labels = []
        for source in self.sources:
            if source.masks is None:
                raise DataError(f"{source.reader.root}: the {source.reader.split} split has images without masks")
            labels.append(np.asarray(source.masks).reshape(len(source.masks), -1).any(axis=1))
        return np.concatenate(labels)

    def pieces(self, index: np.ndarray) -> list[tuple[CachedSplit, np.ndarray]]:
        index = np.sort(index)
        return [
            (source, index[(index >= lo) & (index < hi)] - lo)
            for source, lo, hi in zip(self.sources, self.offsets[:-1], self.offsets[1:])
            if ((index >= lo) & (index < hi)).any()
        ]

    def images(self, index: np.ndarray, names: tuple[str, ...], window: tuple[slice, slice] | None) -> np.ndarray:
        return np.concatenate([s.stack(names, i, window) for s, i in self.pieces(index)])

    def masks(self, index: np.ndarray, window: tuple[slice, slice] | None) -> np.ndarray:
        return np.concatenate([s.masks_at(i, window) for s, i in self.pieces(index)])


def _plan(
    config: TrialConfig, names: tuple[str, ...], root: Path, fp: str
) -> tuple[_Pool, dict[str, np.ndarray], _Pool, np.ndarray]:
    """The development pool with its train and validation tiles, and the test pool's tiles,
    as the dataset's split policy says."""
    policy = dataset_info(config.dataset).split
    present = READERS[config.dataset].available_splits(root)

    def cached(split: str, limit: int | None) -> CachedSplit:
        return CachedSplit(open_reader(config.dataset, root, split, bands=names), fp, limit)

    # The first development split is required (its reader explains a wrong layout) and is
    # where max_tiles applies; the others join when present. A test split is kept whole.
    first, *others = policy.development
    dev = test_pool = _Pool([cached(first, config.max_tiles)] + [cached(s, None) for s in others if s in present])
    if policy.test_split in present:
        test_pool = _Pool([cached(policy.test_split, None)])
    labels = dev.has_landslide()  # one pass over the (memory-mapped) masks
    groups = None if config.split_groups is None else np.asarray(tile_groups(dev.paths(), config.split_groups))
    parts, test = _split_indices(config, labels, None if test_pool is dev else len(test_pool), groups)
    return dev, parts, test_pool, test


def _split_indices(
    config: TrialConfig, labels: np.ndarray, test_tiles: int | None, groups: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Train and validation indices into the development pool (whose per-tile "has a
    landslide" is `labels`, and region `groups` for a grouped split) and the test indices:
    into a test split of `test_tiles` tiles, or, when None, into the pool, carved with the
    fixed test seed."""
    if test_tiles is None:
        fraction = config.test_fraction or dataset_info(config.dataset).split.test_fraction
        rest, test = holdout_split(labels, fraction, _TEST_SEED, groups)
    else:
        rest, test = np.arange(len(labels)), np.arange(test_tiles)
    train_rel, val_rel = holdout_split(labels[rest], config.val_fraction, config.seed, _at(groups, rest))
    return {"train": rest[train_rel], "val": rest[val_rel]}, test


def _at(groups: np.ndarray | None, index: np.ndarray) -> list[str] | None:
    return None if groups is None else groups[index].tolist()


def _centre_window(shape: tuple[int, ...], crop: int | None) -> tuple[slice, slice] | None:
    h, w = shape[1:3]
    if crop is None or (crop >= h and crop >= w):
        return None
    top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
    return slice(top, top + crop), slice(left, left + crop)


def _band_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation in float64, tile batch by tile batch (a
    float64 copy of a whole training set would not fit in memory)."""
    n = x.shape[0] * x.shape[1] * x.shape[2]
    total = np.zeros(x.shape[-1])
    for start in range(0, len(x), 256):
        total += x[start : start + 256].sum(axis=(0, 1, 2), dtype=np.float64)
    mean = total / n
    squares = np.zeros(x.shape[-1])
    for start in range(0, len(x), 256):
        squares += np.square(x[start : start + 256] - mean).sum(axis=(0, 1, 2))
    return mean, np.sqrt(squares / n)


def _normalisation(
    config: TrialConfig, info: DatasetInfo, x_train: np.ndarray, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    if config.normalisation == "none":
        return None
    mean, std = _band_moments(x_train)
    if config.normalisation == "official":
        if info.official_mean is None or info.official_std is None:
            published = [d.name for d in DATASET_INFO.values() if d.official_mean is not None]
            raise ConfigError(
                f"normalisation: 'official' constants exist for {', '.join(published)} only, not {info.name} "
                "(use train_stats)"
            )
        # The official constants cover the originals; engineered bands use training statistics.
        for k, name in enumerate(names):
            if name in info.bands:
                mean[k] = info.official_mean[info.bands.index(name)]
                std[k] = info.official_std[info.bands.index(name)]
    return mean, np.where(std > 1e-8, std, 1.0)


@dataclass(frozen=True)
class DataSummary:
    """What `validate_data` learnt that decides whether a config can train on the data."""

    root: Path
    tile_shape: tuple[int, ...]  # (H, W, bands) of the development pool's tiles
    labels: np.ndarray  # per development tile: has a landslide
    test_tiles: int | None  # tiles of a separate test split; None: test is carved from the pool


def validate_data(config: TrialConfig, root: Path | str) -> DataSummary:
    """Read every file a trial of `config` would read, one tile at a time, and raise a
    DataError naming the first it would fail on: what a study checks before any trial
    starts, so bad data fails once, fast, instead of in every trial and every retry.
    Returns what `check_trainable` needs to judge each config against the data."""
    policy = dataset_info(config.dataset).split
    present = READERS[config.dataset].available_splits(root)
    names = resolve_bands(config.bands, config.dataset)
    first, *others = policy.development
    development = [(first, config.max_tiles)] + [(s, None) for s in others if s in present]
    test = [(policy.test_split, None)] if policy.test_split in present else []
    shape: tuple[int, ...] | None = None
    pool, test_tiles = [], None
    for split, limit in development + test:
        reader = open_reader(config.dataset, root, split, bands=names)
        split_shape, labels = reader.validate(limit)
        if config.split_groups is not None:  # every tile must have a region before any trial starts
            tile_groups([sample.image for sample in reader.subset(limit)], config.split_groups)
        if (split, limit) in test:
            test_tiles = len(labels)
        else:
            shape = shape or split_shape
            pool.append(labels)
    assert shape is not None  # the first development split's reader refuses a split without tiles
    return DataSummary(Path(root), shape, np.concatenate(pool), test_tiles)


def check_trainable(config: TrialConfig, data: DataSummary) -> None:
    """Refuse (DataError) a config that would fail on this data in every trial and retry:
    empty tiles, a tile side (after `crop`) the architecture cannot take, a split left
    empty, fewer training tiles than one batch. Plain arithmetic on `validate_data`'s summary."""
    height, width = data.tile_shape[:2]
    if height == 0 or width == 0:
        raise DataError(f"{data.root}: its tiles are {height}×{width} pixels (empty)")
    side = (min(height, config.crop or height), min(width, config.crop or width))
    multiple = config.size_multiple()
    if side[0] % multiple or side[1] % multiple:
        cropped = f" (crop {config.crop})" if config.crop else ""
        raise DataError(
            f"{data.root}: tiles of {side[0]}×{side[1]} pixels{cropped} cannot train backbone {config.backbone!r} "
            f"at depth {config.depth}: each side must be a multiple of {multiple}"
        )
    sizes = split_sizes(config, data)
    if not all(sizes.values()):
        shown = ", ".join(f"{name} {n}" for name, n in sizes.items())
        raise DataError(f"{data.root}: {len(data.labels)} tiles are too few for train / validation / test ({shown})")
    if sizes["train"] < config.batch_size:
        raise DataError(
            f"{data.root}: {sizes['train']} training tiles are fewer than batch_size {config.batch_size} "
            f"(of {len(data.labels)} tiles; lower batch_size or add tiles)"
        )


def split_sizes(config: TrialConfig, data: DataSummary) -> dict[str, int]:
    """Tiles in train / validation / test for `config` on this data, from `validate_data`'s
    summary without reading a tile (a grouped split: its sizes by tile, approximately)."""
    parts, test = _split_indices(config, data.labels, data.test_tiles)
    return {"train": len(parts["train"]), "validation": len(parts["val"]), "test": len(test)}


def prepare_splits(config: TrialConfig, root: Path | str) -> Splits:
    """Read (cached), engineer `config.bands`, split, crop and normalise one dataset."""
    root = Path(root)
    info = dataset_info(config.dataset)
    names = resolve_bands(config.bands, info.name)
    fp = fingerprint(root, info.name)
    dev, dev_parts, test_pool, test = _plan(config, names, root, fp)
    parts = {"train": (dev, dev_parts["train"]), "val": (dev, dev_parts["val"]), "test": (test_pool, test)}
    if any(len(index) == 0 for _, index in parts.values()):
        sizes = ", ".join(f"{name} {len(index)}" for name, (_, index) in parts.items())
        raise DataError(f"{root}: too few tiles for train / validation / test splits ({sizes})")
    sources = list({id(s): s for pool in (dev, test_pool) for s in pool.sources}.values())
    nan_pixels = sum(s.nan_pixels for s in sources)
    if nan_pixels:
        files = [f for s in sources for f in s.nan_files]
        log.warning(
            f"{root}: replaced {nan_pixels} NaN or infinite pixel values by 0 in {len(files)} files (first: {files[0]})"
        )
    window = _centre_window(dev.sources[0].images.shape, config.crop)
    arrays = {}
    for name, (pool, index) in parts.items():
        arrays[f"x_{name}"] = pool.images(index, names, window)
        arrays[f"y_{name}"] = pool.masks(index, window)
    moments = _normalisation(config, info, arrays["x_train"], names)
    if moments is not None:
        mean, std = (m.astype(np.float32) for m in moments)
        for name in parts:
            x = arrays[f"x_{name}"]
            for start in range(0, len(x), 256):  # in place, batch by batch: no float64 copies
                x[start : start + 256] -= mean
                x[start : start + 256] /= std
    return Splits(
        **arrays,
        band_names=names,
        fingerprint=fp,
        norm_mean=None if moments is None else moments[0],
        norm_std=None if moments is None else moments[1],
        nan_pixels=nan_pixels,
        test_groups=_test_groups(config, test_pool, test),
        source_size=int(dev.sources[0].images.shape[1]),
    )


def _test_groups(config: TrialConfig, pool: _Pool, test: np.ndarray) -> tuple[str, ...] | None:
    if config.split_groups is None:
        return None
    groups = tile_groups(pool.paths(), config.split_groups)
    return tuple(groups[i] for i in test)
