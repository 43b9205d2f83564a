"""Landslide4Sense reader: both published layouts, as released.

Official (Zenodo / competition) layout::

    TrainData/img/image_N.h5     key 'img'  H×W×14, float32 or float64
    TrainData/mask/mask_N.h5     key 'mask' H×W, uint8 {0, 1}
    ValidData/img/…  TestData/img/…   (masks optional)

Hugging Face mirror layout::

    images/{train,validation,test}/image_N.h5
    annotations/{train,validation,test}/mask_N.h5

Files are matched by number and sorted numerically (image_2 before image_10).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rmaunet.data.reader import Sample, TileReader, read_array, tile_file
from rmaunet.datasets import LANDSLIDE4SENSE
from rmaunet.errors import DataError

__all__ = ["Landslide4Sense"]

_NUMBER = re.compile(r"^(?:image|mask)_(\d+)\.h5$")


def _numbered(folder: Path) -> dict[int, Path]:
    files = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = _NUMBER.match(path.name)
            if m:
                files[int(m.group(1))] = tile_file(path)
    return dict(sorted(files.items()))


class Landslide4Sense(TileReader):
    """One split of Landslide4Sense: `load()` stacks it, `read(sample)` reads one tile."""

    info = LANDSLIDE4SENSE
    splits = ("train", "validation", "test")
    labelled_splits = ("train",)
    split_folders = {"train": "TrainData", "validation": "ValidData", "test": "TestData"}

    def __init__(
        self, root: Path | str, split: str = "train", *, bands: Iterable[str] = (), require_masks: bool | None = None
    ) -> None:
        root = Path(root)
        if split in self.splits:
            self.img_dir, self.mask_dir = self._folders(root, split)
        super().__init__(root, split, bands=bands, require_masks=require_masks)

    @classmethod
    def _folders(cls, root: Path, split: str) -> tuple[Path, Path]:
        official = root / cls.split_folders[split]
        if official.is_dir() or not (root / "images").is_dir():
            return official / "img", official / "mask"
        return root / "images" / split, root / "annotations" / split

    @classmethod
    def available_splits(cls, root: Path | str) -> tuple[str, ...]:
        return tuple(s for s in cls.splits if cls._folders(Path(root), s)[0].is_dir())

    def _find_samples(self) -> list[Sample]:
        if not self.img_dir.is_dir():
            raise DataError(
                f"{self.img_dir}: folder not found (expected the official layout "
                f"{self.split_folders[self.split]}/img/image_N.h5 or the Hugging Face layout "
                f"images/{self.split}/image_N.h5)"
            )
        self.images = _numbered(self.img_dir)
        self.masks = _numbered(self.mask_dir)
        self.orphan_masks = [path for n, path in self.masks.items() if n not in self.images]
        return [Sample(f"image_{n}", path, self.masks.get(n)) for n, path in self.images.items()]

    def _describe_empty(self) -> Path:
        return self.img_dir

    def expected_mask(self, sample: Sample) -> str:
        return str(self.mask_dir / (sample.name.replace("image_", "mask_") + ".h5"))

    def read_image(self, sample: Sample) -> np.ndarray:
        array = read_array(sample.image, "img")
        if array.dtype.kind not in "fiu":
            raise DataError(f"{sample.image}: image dtype {array.dtype} is not numeric")
        return array.astype(np.float32, copy=False)

    def read_raw_mask(self, path: Path) -> np.ndarray:
        return read_array(path, "mask")
