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

The test split depends on the data (and `max_tiles`, `test_fraction`) only, never on
`config.seed`: every trial of a study is scored on the same images. Validation is carved
from train with `config.seed` and `config.val_fraction`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rmaunet.data.bands import resolve_bands
from rmaunet.data.bijie import Bijie
from rmaunet.data.cache import CACHE_DIR_NAME, CachedSplit
from rmaunet.data.landslide4sense import Landslide4Sense
from rmaunet.data.nepal import Nepal
from rmaunet.data.reader import TileReader
from rmaunet.data.splits import stratified_split
from rmaunet.datasets import DATASET_INFO, LANDSLIDE4SENSE, DatasetInfo, dataset_info
from rmaunet.errors import ConfigError, DataError

if TYPE_CHECKING:
    from rmaunet.config import TrialConfig

__all__ = [
    "Splits",
    "prepare_splits",
    "validate_data",
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


def fingerprint(root: Path | str, dataset: str) -> str:
    """Hash of every data file's relative path, size and modification time (the band
    cache folder inside root is left out: it is derived from the files, not one of them)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != CACHE_DIR_NAME]
        for name in files:
            path = Path(folder) / name
            st = path.stat()
            entries.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    if not entries:
        raise DataError(f"{root}: no data files found")
    return fingerprint_of(dataset, entries)


def fingerprint_of(dataset: str, entries: Iterable[tuple[str, int, int]]) -> str:
    """The fingerprint of a dataset's files given as (relative path, size, mtime_ns): what
    `fingerprint` computes from a folder and rmaunet.data.staging from an object listing."""
    h = hashlib.sha256(dataset.encode())
    for rel, size, mtime in sorted(entries):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- splits
class _Pool:
    """Cached splits seen as one sequence of tiles (Nepal pools train and validation)."""

    def __init__(self, sources: list[CachedSplit]) -> None:
        self.sources = sources
        self.offsets = np.cumsum([0] + [len(s.images) for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

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
    if test_pool is dev:
        rest, test = stratified_split(labels, config.test_fraction or policy.test_fraction, seed=_TEST_SEED)
    else:
        rest, test = np.arange(len(dev)), np.arange(len(test_pool))
    train_rel, val_rel = stratified_split(labels[rest], config.val_fraction, seed=config.seed)
    return dev, {"train": rest[train_rel], "val": rest[val_rel]}, test_pool, test


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


def validate_data(config: TrialConfig, root: Path | str) -> None:
    """Read every file a trial of `config` would read, one tile at a time, and raise a
    DataError naming the first it would fail on: what a study checks before any trial
    starts, so bad data fails once, fast, instead of in every trial and every retry."""
    policy = dataset_info(config.dataset).split
    present = READERS[config.dataset].available_splits(root)
    names = resolve_bands(config.bands, config.dataset)
    first, *others = policy.development
    splits = [(first, config.max_tiles)] + [(s, None) for s in others if s in present]
    if policy.test_split in present:
        splits.append((policy.test_split, None))
    for split, limit in splits:
        open_reader(config.dataset, root, split, bands=names).validate(limit)


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
        source_size=int(dev.sources[0].images.shape[1]),
    )
