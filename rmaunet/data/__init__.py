"""Datasets: readers, synthetic scenes, bands, splits and the tf.data pipeline.

`prepare_splits(config, root)` is what a trial calls: it reads the dataset, engineers
the configured bands, splits train / validation / test deterministically and
normalises with training-split statistics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmaunet.config import TrialConfig
from rmaunet.data.bands import engineer_bands, resolve_bands
from rmaunet.data.landslide4sense import Landslide4Sense
from rmaunet.data.splits import stratified_split
from rmaunet.errors import DataError

__all__ = ["Splits", "prepare_splits", "fingerprint", "DEFAULT_TEST_FRACTION"]

DEFAULT_TEST_FRACTION = {"landslide4sense": 0.2, "bijie": 0.3, "nepal": None}


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    band_names: tuple[str, ...]
    fingerprint: str

    @property
    def num_bands(self) -> int:
        return self.x_train.shape[-1]


def fingerprint(root: Path | str, dataset: str) -> str:
    """Hash of every data file's relative path, size and modification time."""
    root = Path(root)
    h = hashlib.sha256(dataset.encode())
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"{root}: no data files found")
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def prepare_splits(config: TrialConfig, root: Path | str) -> Splits:
    if config.dataset != "landslide4sense":
        raise DataError(f"{root}: dataset {config.dataset!r} is not readable yet")
    x, y, _ = Landslide4Sense(root, "train").load()
    if config.max_tiles is not None:
        x, y = x[: config.max_tiles], y[: config.max_tiles]
    bad = ~np.isfinite(x)
    if bad.any():
        x = np.where(bad, 0.0, x).astype(np.float32)
    if config.crop is not None and config.crop < x.shape[1]:
        off = (x.shape[1] - config.crop) // 2
        x = x[:, off : off + config.crop, off : off + config.crop]
        y = y[:, off : off + config.crop, off : off + config.crop]
    names = resolve_bands(config.bands)
    x = engineer_bands(x, names)
    has = y.reshape(len(y), -1).any(axis=1)
    test_fraction = config.test_fraction or DEFAULT_TEST_FRACTION[config.dataset]
    # The test split depends on the data only, never on the trial seed: every trial of a
    # study is scored on the same images.
    rest, test = stratified_split(has, test_fraction, seed=0)
    train_rel, val_rel = stratified_split(has[rest], config.val_fraction, seed=config.seed)
    train, val = rest[train_rel], rest[val_rel]
    if len(train) == 0 or len(val) == 0 or len(test) == 0:
        raise DataError(f"{root}: {len(x)} tiles are too few for train / validation / test splits")
    xt = x[train]
    if config.normalisation == "train_stats":
        mean = xt.mean(axis=(0, 1, 2), dtype=np.float64)
        std = xt.std(axis=(0, 1, 2), dtype=np.float64)
        std = np.where(std > 1e-8, std, 1.0)
        x = ((x - mean) / std).astype(np.float32)
    return Splits(
        x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], x_test=x[test], y_test=y[test],
        band_names=names, fingerprint=fingerprint(root, config.dataset),
    )
