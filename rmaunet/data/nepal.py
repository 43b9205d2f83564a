"""Nepal landslide dataset reader (Landsat-8 RGB), image / mask pairs per split::

    train/image/NAME.{png,tif,tiff,npy}        H×W×3 (channels-first 3×H×W is accepted)
    train/mask/NAME.{png,tif,tiff,npy}         H×W, {0, 1} or {0, 255}
    validation/…   test/…

`images`/`img` and `masks`/`labels` are accepted as folder names, `val`/`valid` for
validation. Images and masks are matched by file name without extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmaunet.data.reader import Sample, TileReader, numeric_key, read_array, tile_file
from rmaunet.datasets import NEPAL
from rmaunet.errors import DataError

__all__ = ["Nepal"]

_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
_SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val", "valid"), "test": ("test",)}
_IMAGE_FOLDERS = ("image", "images", "img")
_MASK_FOLDERS = ("mask", "masks", "label", "labels")


def _first_dir(parent: Path, names: tuple[str, ...]) -> Path | None:
    return next((parent / n for n in names if (parent / n).is_dir()), None)


def _by_stem(folder: Path | None) -> dict[str, Path]:
    if folder is None:
        return {}
    files = sorted(
        (tile_file(p) for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES),
        key=lambda p: numeric_key(p.name),
    )
    return {p.stem: p for p in files}


class Nepal(TileReader):
    """One split folder of the Nepal dataset; every sample must have a mask."""

    info = NEPAL
    splits = ("train", "validation", "test")
    labelled_splits = ("train", "validation", "test")

    @classmethod
    def split_folder(cls, root: Path | str, split: str) -> Path | None:
        return _first_dir(Path(root), _SPLIT_FOLDERS[split])

    @classmethod
    def available_splits(cls, root: Path | str) -> tuple[str, ...]:
        return tuple(s for s in cls.splits if cls.split_folder(root, s) is not None)

    def _find_samples(self) -> list[Sample]:
        folder = self.split_folder(self.root, self.split)
        if folder is None:
            names = " or ".join(_SPLIT_FOLDERS[self.split])
            raise DataError(
                f"{self.root}: no {names} folder (expected the Nepal layout {self.split}/image, {self.split}/mask)"
            )
        self.folder = folder
        self.image_dir = _first_dir(folder, _IMAGE_FOLDERS)
        if self.image_dir is None:
            raise DataError(f"{folder}: no image folder (expected one of: {', '.join(_IMAGE_FOLDERS)})")
        self.mask_dir = _first_dir(folder, _MASK_FOLDERS)
        images, masks = _by_stem(self.image_dir), _by_stem(self.mask_dir)
        self.orphan_masks = [p for stem, p in masks.items() if stem not in images]
        return [Sample(stem, path, masks.get(stem)) for stem, path in images.items()]

    def _describe_empty(self) -> Path:
        return self.image_dir if self.image_dir is not None else self.root

    def expected_mask(self, sample: Sample) -> str:
        folder = self.mask_dir if self.mask_dir is not None else self.folder / "mask"
        return f"{folder / sample.name}{{.png,.tif,.npy}}"

    def read_image(self, sample: Sample) -> np.ndarray:
        array = read_array(sample.image)
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = np.moveaxis(array, 0, -1)  # channels-first TIFF / NPY
        if array.ndim == 3 and array.shape[-1] == 4 and sample.image.suffix.lower() == ".png":
            array = array[..., :3]  # PNG alpha channel
        if array.dtype.kind not in "fiu":
            raise DataError(f"{sample.image}: image dtype {array.dtype} is not numeric")
        return array.astype(np.float32, copy=False)
