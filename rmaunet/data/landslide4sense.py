"""Landslide4Sense reader: the official competition layout, as published.

    TrainData/img/image_N.h5   key 'img'  H×W×14 (float32 or float64)
    TrainData/mask/mask_N.h5   key 'mask' H×W    uint8 {0, 1}

Files are matched by number and sorted numerically (image_2 before image_10).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from rmaunet.errors import DataError

__all__ = ["Landslide4Sense"]

_NUMBER = re.compile(r"_(\d+)\.h5$")


def _numbered(folder: Path, prefix: str) -> dict[int, Path]:
    files = {}
    for path in folder.glob(f"{prefix}_*.h5"):
        m = _NUMBER.search(path.name)
        if m:
            files[int(m.group(1))] = path
    return dict(sorted(files.items()))


class Landslide4Sense:
    """One split folder of Landslide4Sense; `load()` returns (images, masks, paths)."""

    band_names = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem")
    split_folders = {"train": "TrainData", "validation": "ValidData", "test": "TestData"}

    def __init__(self, root: Path | str, split: str = "train", *, require_masks: bool = True) -> None:
        if split not in self.split_folders:
            raise DataError(f"{root}: unknown Landslide4Sense split {split!r} (train, validation, test)")
        self.root = Path(root)
        self.split = split
        folder = self.root / self.split_folders[split]
        self.img_dir, self.mask_dir = folder / "img", folder / "mask"
        if not self.img_dir.is_dir():
            raise DataError(f"{self.img_dir}: folder not found (expected the official Landslide4Sense layout)")
        self.images = _numbered(self.img_dir, "image")
        if not self.images:
            raise DataError(f"{self.img_dir}: no image_N.h5 files")
        self.masks = _numbered(self.mask_dir, "mask") if self.mask_dir.is_dir() else {}
        if require_masks:
            missing = [n for n in self.images if n not in self.masks]
            if missing:
                raise DataError(f"{self.mask_dir / f'mask_{missing[0]}.h5'}: missing mask for image_{missing[0]}.h5")

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, number: int) -> np.ndarray:
        path = self.images[number]
        array = _read_h5(path, "img")
        if array.ndim != 3 or array.shape[-1] != len(self.band_names):
            raise DataError(f"{path}: expected H×W×{len(self.band_names)} bands, got shape {array.shape}")
        return array.astype(np.float32, copy=False)

    def read_mask(self, number: int, shape: tuple[int, int]) -> np.ndarray:
        path = self.masks[number]
        array = _read_h5(path, "mask")
        if array.shape != shape:
            raise DataError(f"{path}: mask shape {array.shape} does not match image shape {shape}")
        return (array > 0).astype(np.uint8)

    def load(self) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
        images, masks = [], []
        for number in self.images:
            image = self.read_image(number)
            if images and image.shape != images[0].shape:
                raise DataError(f"{self.images[number]}: shape {image.shape} differs from {images[0].shape}")
            images.append(image)
            if number in self.masks:
                masks.append(self.read_mask(number, image.shape[:2]))
        x = np.stack(images)
        y = np.stack(masks) if len(masks) == len(images) else None
        return x, y, list(self.images.values())


def _read_h5(path: Path, key: str) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DataError(f"{path}: no dataset {key!r} (found: {', '.join(f.keys()) or 'none'})")
            return np.asarray(f[key][()])
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read HDF5 file ({exc.__class__.__name__}: {exc})") from None
