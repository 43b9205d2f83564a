"""Bijie landslide dataset reader (TripleSat RGB plus DEM), as published::

    landslide/image/NAME.png       RGB
    landslide/dem/NAME.png         elevation, one channel (8- or 16-bit)
    landslide/mask/NAME.png        0 / 255 (binarised at > 127)
    non-landslide/image/NAME.png
    non-landslide/dem/NAME.png     (no masks: the mask is empty)

The reader reads the RGB images only, as the paper does; the DEM is an opt-in fourth
channel (`bands=` naming "dem", e.g. a spec's `bands: 14,dem`), and only then are the
DEM files needed. Image, DEM and mask are matched by file name (without extension). The
release's tiles are not all the same size; every tile is resized to one common size (the
most frequent image size unless `size` is given): bilinear for image and DEM, nearest for
the mask. A DEM of another size than its image is resized to the image (it is coarser
anyway).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np

from rmaunet.data.reader import Sample, TileReader, numeric_key, read_array, tile_file
from rmaunet.datasets import BIJIE
from rmaunet.errors import DataError

__all__ = ["Bijie"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files = [tile_file(p) for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES]
    return {p.stem: p for p in sorted(files, key=lambda p: numeric_key(p.name))}


class Bijie(TileReader):
    """The Bijie dataset as one pool (`split="all"`); splits are made by `rmaunet.data`."""

    info = BIJIE
    splits = ("all",)
    labelled_splits = ("all",)
    groups = ("landslide", "non-landslide")

    def __init__(
        self,
        root: Path | str,
        split: str = "all",
        *,
        bands: Iterable[str] = (),
        require_masks: bool | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__(root, split, bands=bands, require_masks=require_masks)
        if size is not None:
            self.size = size

    @cached_property
    def size(self) -> int:
        """The side every tile is resized to: size= if given, else the most common image
        size, worked out when first needed (a trial whose tiles are cached never opens them)."""
        return self._modal_size()

    @classmethod
    def available_splits(cls, root: Path | str) -> tuple[str, ...]:
        return ("all",) if any((Path(root) / g / "image").is_dir() for g in cls.groups) else ()

    def _find_samples(self) -> list[Sample]:
        if not any((self.root / g / "image").is_dir() for g in self.groups):
            raise DataError(
                f"{self.root}: no landslide/image or non-landslide/image folder "
                "(expected the Bijie layout landslide/{image,dem,mask}/, non-landslide/{image,dem}/)"
            )
        groups: list[list[Sample]] = []
        self.orphan_masks: list[Path] = []
        for group in self.groups:
            folder = self.root / group
            images = _by_stem(folder / "image")
            dems = _by_stem(folder / "dem")
            masks = _by_stem(folder / "mask")
            self.orphan_masks += [p for stem, p in masks.items() if stem not in images]
            members: list[Sample] = []
            for stem, path in images.items():
                landslide = group == "landslide"
                members.append(Sample(stem, path, masks.get(stem), dems.get(stem), landslide=landslide))
            groups.append(members)
        # Interleave the groups in proportion, so that file order mixes landslide and
        # non-landslide tiles as the dataset does.
        order = [((i + 0.5) / len(members), g, i) for g, members in enumerate(groups) for i in range(len(members))]
        return [groups[g][i] for _, g, i in sorted(order)]

    def _describe_empty(self) -> Path:
        return self.root / "landslide" / "image"

    def expected_mask(self, sample: Sample) -> str:
        return str(sample.image.parent.parent / "mask" / (sample.name + ".png"))

    def _modal_size(self) -> int:
        from PIL import Image

        sizes: Counter[tuple[int, int]] = Counter()
        for sample in self.samples:
            try:
                with Image.open(sample.image) as im:
                    sizes[im.size] += 1
            except Exception:  # unreadable files are reported when they are read
                continue
        if not sizes:
            raise DataError(f"{self.samples[0].image}: cannot read any Bijie image")
        (width, height), _ = sizes.most_common(1)[0]
        return max(width, height) if width != height else width

    def read_image(self, sample: Sample) -> np.ndarray:
        rgb = read_array(sample.image)
        if rgb.ndim == 3 and rgb.shape[-1] == 4:
            rgb = rgb[..., :3]
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise DataError(f"{sample.image}: expected an RGB image (H×W×3), got shape {rgb.shape}")
        image = rgb.astype(np.float32)
        if "dem" in self.band_names:
            image = np.concatenate([image, self._read_dem(sample, image.shape[:2])[..., None]], axis=-1)
        return self._to_size(image, nearest=False)

    def _read_dem(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) float32 elevation, resized to its image's `shape`."""
        if sample.dem is None:
            raise DataError(
                f"{sample.image}: missing DEM (expected {sample.image.parent.parent / 'dem' / sample.image.name})"
            )
        dem = read_array(sample.dem)
        if dem.ndim == 3 and dem.shape[-1] in (3, 4) and (dem[..., :3] == dem[..., :1]).all():
            dem = dem[..., 0]
        if dem.ndim == 3 and dem.shape[-1] == 1:
            dem = dem[..., 0]
        if dem.ndim != 2:
            raise DataError(f"{sample.dem}: expected a one-channel DEM (H×W), got shape {dem.shape}")
        return _resize(dem.astype(np.float32), shape, nearest=False)

    def read_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray | None:
        if sample.mask is None:
            return super().read_mask(sample, shape)
        # The mask must match its own image; resizing to the common size comes after.
        raw_shape = _image_shape(sample.image)
        mask = super().read_mask(sample, raw_shape)
        return None if mask is None else self._to_size(mask, nearest=True)

    def _to_size(self, array: np.ndarray, *, nearest: bool) -> np.ndarray:
        if array.shape[:2] == (self.size, self.size):
            return array
        return _resize(array, (self.size, self.size), nearest=nearest)


def _image_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:
        return read_array(path).shape[:2]


def _resize(array: np.ndarray, shape: tuple[int, int], *, nearest: bool) -> np.ndarray:
    if array.shape[:2] == shape:
        return array
    from scipy import ndimage

    factors = (shape[0] / array.shape[0], shape[1] / array.shape[1]) + (1,) * (array.ndim - 2)
    out = ndimage.zoom(array, factors, order=0 if nearest else 1, mode="nearest", grid_mode=True)
    return out[: shape[0], : shape[1]]
