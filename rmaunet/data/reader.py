"""What every dataset reader shares: samples, file formats, validation, NaN accounting.

A reader is one class per dataset (TorchGeo style): class attributes state the dataset's
declaration (`rmaunet.datasets`: name, channels, split policy) and the splits; the
constructor finds the samples of one split and validates the folder layout;
`read(sample)` returns one (image, mask) pair; `load()` stacks a split. Every problem is
a `DataError` whose one-line message names the file and what is wrong.
"""

from __future__ import annotations

import math
import os
import re
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from rmaunet.datasets import DatasetInfo
from rmaunet.errors import DataError

__all__ = [
    "Sample",
    "TileReader",
    "LoadedSplit",
    "read_array",
    "numeric_key",
    "replace_non_finite",
    "tile_file",
    "MAX_ARRAY_BYTES",
]

_DIGITS = re.compile(r"(\d+)")
_SUBSET_SEED = 0  # max_tiles' subset: fixed, so every trial of a study reads the same tiles


def numeric_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: image_2 before image_10."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def tile_file(path: Path) -> Path:
    """`path`, named like a tile, if it is a regular file (or a link to one). Skipping a folder,
    a FIFO or a link to /dev/zero named image_5.h5 would train on one tile fewer than the
    folder shows, and reading a FIFO blocks: either is a DataError naming the file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError(f"{path}: named like a data file but cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or special file"
        raise DataError(f"{path}: named like a data file but is {kind}")
    return path


@dataclass(frozen=True)
class Sample:
    """One tile on disk: its image file, its mask file (None: no mask) and extra inputs."""

    name: str
    image: Path
    mask: Path | None = None
    dem: Path | None = None
    # Known from the folder, before any mask is read (Bijie's landslide / non-landslide).
    landslide: bool | None = None


@dataclass
class LoadedSplit:
    """A split stacked in memory. `masks` is None when a sample has no mask."""

    images: np.ndarray  # (N, H, W, C) float32, non-finite values replaced
    masks: np.ndarray | None  # (N, H, W) uint8 {0, 1}
    paths: list[Path]
    nan_pixels: int  # non-finite values replaced (counted over all bands)
    nan_files: list[Path]


def replace_non_finite(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN and ±inf by 0 (the value the official Landslide4Sense code uses, near
    enough) and return how many values were replaced, so callers can report them."""
    bad = ~np.isfinite(image)
    count = int(np.count_nonzero(bad))
    if count:
        image = np.where(bad, np.float32(0.0), image).astype(np.float32, copy=False)
    return image, count


class TileReader:
    """Base class of the dataset readers; subclasses fill `_find_samples` and `read_image`."""

    info: ClassVar[DatasetInfo]  # name, channels, spectral roles, split policy
    splits: ClassVar[tuple[str, ...]]
    # Splits whose samples must all have masks (the others may have none).
    labelled_splits: ClassVar[tuple[str, ...]]
    band_names: tuple[str, ...]  # the channels this reader reads, in order

    def __init__(
        self, root: Path | str, split: str, *, bands: Iterable[str] = (), require_masks: bool | None = None
    ) -> None:
        # `bands`: the band names a trial uses; any opt-in channel among them is read too.
        self.band_names = self.info.channels(bands)
        if split not in self.splits:
            raise DataError(f"{root}: unknown {self.dataset} split {split!r} (choose one of: {', '.join(self.splits)})")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found")
        self.split = split
        self.require_masks = split in self.labelled_splits if require_masks is None else require_masks
        self.samples: list[Sample] = self._find_samples()
        if not self.samples:
            raise DataError(f"{self._describe_empty()}: no {self.dataset} images found")
        if self.require_masks:
            for problem in self.missing_masks():
                raise DataError(problem)

    def missing_masks(self) -> Iterator[str]:
        """One line per image that should have a mask and has none (non-landslide Bijie
        images need none: their mask is empty)."""
        for sample in self.samples:
            if sample.mask is None and sample.landslide is not False:
                yield f"{sample.image}: missing mask (expected {self.expected_mask(sample)})"

    @property
    def dataset(self) -> str:
        return self.info.name

    # ------------------------------------------------------------------ subclass hooks
    @classmethod
    def available_splits(cls, root: Path | str) -> tuple[str, ...]:
        """The splits present under root, in the class's order."""
        raise NotImplementedError

    def _find_samples(self) -> list[Sample]:
        raise NotImplementedError

    def _describe_empty(self) -> Path:
        return self.root

    def expected_mask(self, sample: Sample) -> str:
        return "a mask file beside the image"

    def read_image(self, sample: Sample) -> np.ndarray:
        """(H, W, bands) float32; non-finite values are kept (load() replaces and counts them)."""
        raise NotImplementedError

    def read_raw_mask(self, path: Path) -> np.ndarray:
        return read_array(path)

    # ------------------------------------------------------------------ shared behaviour
    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def read_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray | None:
        """(H, W) uint8 {0, 1}; an empty mask for a known non-landslide tile; None if absent."""
        if sample.mask is None:
            return np.zeros(shape, np.uint8) if sample.landslide is False else None
        array = self.read_raw_mask(sample.mask)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            # An RGB(A) rendering of a binary mask: any channel marks the landslide.
            array = array[..., :3].max(axis=-1)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.shape != shape:
            raise DataError(f"{sample.mask}: mask shape {array.shape} does not match image shape {shape}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DataError(f"{sample.mask}: mask holds NaN or infinite values")
        # Masks come as {0, 1} or {0, 255}: binarise at the middle of whichever range it is.
        threshold = 127 if array.size and array.max() > 1 else 0
        return (array > threshold).astype(np.uint8)

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        with np.errstate(over="ignore", invalid="ignore"):
            # A value past float32's range becomes inf on the cast, counted and replaced like NaN.
            image = self.read_image(sample)
        if image.ndim != 3 or image.shape[-1] != len(self.band_names):
            raise DataError(
                f"{sample.image}: expected H×W×{len(self.band_names)} bands ({', '.join(self.band_names)}), "
                f"got shape {image.shape}"
            )
        return image, self.read_mask(sample, image.shape[:2])

    def subset(self, limit: int | None = None) -> list[Sample]:
        """The samples a trial with `max_tiles = limit` reads: all of them, or a random subset
        of `limit` drawn with a fixed seed (the same for every trial and run) and kept in file
        order. Not the first `limit` files: real tiles are numbered by region, so those
        would be a few neighbouring scenes."""
        if limit is None or limit >= len(self.samples):
            return list(self.samples)
        picked = np.sort(np.random.default_rng(_SUBSET_SEED).choice(len(self.samples), size=limit, replace=False))
        return [self.samples[i] for i in picked]

    def load(self, limit: int | None = None) -> LoadedSplit:
        """Stack the split (a seeded random subset of `limit` samples, see `subset`); non-finite
        pixels replaced and counted."""
        samples = self.subset(limit)
        first_shape: tuple[int, ...] | None = None
        images: np.ndarray | None = None
        masks: list[np.ndarray | None] = []
        nan_pixels, nan_files = 0, []
        for i, sample in enumerate(samples):
            image, mask = self.read(sample)
            if first_shape is None:
                first_shape = image.shape
                images = np.empty((len(samples), *image.shape), np.float32)
            _check_same_shape(sample, image, first_shape)
            image, count = replace_non_finite(image.astype(np.float32, copy=False))
            if count:
                nan_pixels += count
                nan_files.append(sample.image)
            images[i] = image
            masks.append(mask)
        assert images is not None
        stacked = np.stack(masks) if all(m is not None for m in masks) else None
        return LoadedSplit(images, stacked, [s.image for s in samples], nan_pixels, nan_files)

    def validate(self, limit: int | None = None) -> tuple[tuple[int, ...], np.ndarray]:
        """Read every sample (of `subset(limit)`) once and raise a DataError naming the first
        file a trial would fail on; return the split's (H, W, bands) tile shape and, per
        tile, whether its mask holds a landslide (False without a mask).

        What it refuses: unreadable or truncated files, HDF5 groups / links / external data,
        sizes declared past MAX_ARRAY_BYTES, non-numeric data, the wrong band count, a mask
        of another shape than its image or holding NaN, a tile of another shape than the
        first. NaN in images is allowed (replaced when loading). One tile in memory at a time.
        """
        samples = self.subset(limit)
        first_shape: tuple[int, ...] | None = None
        landslide = np.zeros(len(samples), bool)
        for i, sample in enumerate(samples):
            image, mask = self.read(sample)
            first_shape = first_shape or image.shape
            _check_same_shape(sample, image, first_shape)
            landslide[i] = mask is not None and bool(mask.any())
        assert first_shape is not None  # the constructor refuses a split without samples
        return first_shape, landslide


def _check_same_shape(sample: Sample, image: np.ndarray, first_shape: tuple[int, ...]) -> None:
    if image.shape != first_shape:
        raise DataError(f"{sample.image}: shape {image.shape} differs from the split's {first_shape}")


# ---------------------------------------------------------------------- file formats
# A released tile is a few MB. A file that declares more is corrupt or built to exhaust
# memory (an HDF5 dataset declared 1e6 × 1e6 × 14, a 27 KB PNG declaring 15000 × 15000);
# it is refused from its header, before any pixel is read.
MAX_ARRAY_BYTES = 1 << 30
# bool, signed and unsigned integers, floats: what an image, DEM or mask can hold.
NUMERIC_KINDS = "biuf"


def read_array(path: Path, key: str | None = None) -> np.ndarray:
    """An array from HDF5 (dataset `key`), PNG / JPEG, TIFF or NPY, or a one-line DataError.

    The declared shape and dtype are checked before reading: numeric, at most
    MAX_ARRAY_BYTES. HDF5 objects must be datasets stored in the file itself (no groups,
    links or external / virtual storage).
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix == ".h5":
        return _read_h5(path, key or "img")
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    if suffix in (".png", ".jpg", ".jpeg"):
        return _read_image(path)
    raise DataError(f"{path}: unsupported file type {suffix!r} (expected .h5, .png, .tif, .tiff or .npy)")


def _check_declared(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse a non-numeric dtype or a declared size over MAX_ARRAY_BYTES (nothing read yet)."""
    if dtype.kind not in NUMERIC_KINDS:
        raise DataError(f"{path}: data type {dtype} is not numeric")
    size = math.prod(int(n) for n in shape) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        dims = "×".join(str(n) for n in shape)
        limit = MAX_ARRAY_BYTES >> 20
        raise DataError(f"{path}: declares a {dims} {dtype} array ({size / 2**30:.3g} GiB), over the {limit} MiB limit")


def _read_h5(path: Path, key: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            link = f.get(key, getlink=True)
            if link is None:
                raise DataError(f"{path}: no dataset {key!r} (found: {', '.join(list(f.keys())[:10]) or 'none'})")
            if not isinstance(link, h5py.HardLink):
                # A soft or external link can point at another file (never opened here).
                raise DataError(f"{path}: {key!r} is a link, not a dataset stored in this file")
            obj = f[key]
            if not isinstance(obj, h5py.Dataset):
                raise DataError(f"{path}: {key!r} is a {type(obj).__name__.lower()}, not a dataset")
            if obj.is_virtual or obj.external:
                raise DataError(f"{path}: dataset {key!r} keeps its data in other files (external or virtual storage)")
            if obj.shape is None:
                raise DataError(f"{path}: dataset {key!r} holds no data")
            _check_declared(path, obj.shape, obj.dtype)
            return np.asarray(obj[()])
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise DataError(f"{path}: cannot read HDF5 file ({_reason(exc)})") from None


def _read_npy(path: Path) -> np.ndarray:
    from numpy.lib import format as npy

    try:
        with path.open("rb") as fh:
            version = npy.read_magic(fh)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            _check_declared(path, shape, dtype)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:  # numpy parses the header as Python: a mangled one raises SyntaxError, TokenError, …
        raise DataError(f"{path}: cannot read NPY file ({_reason(exc)})") from None


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise DataError(f"{path}: TIFF file holds no image")
            series = tif.series[0]
            _check_declared(path, series.shape, series.dtype)
            return np.asarray(series.asarray())
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many types for a corrupt file
        raise DataError(f"{path}: cannot read TIFF file ({_reason(exc)})") from None


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns (and reads on) past MAX_IMAGE_PIXELS and refuses at twice that: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                bands = 4 if im.mode == "P" else len(im.getbands())  # a palette image becomes RGB(A)
                itemsize = 4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
                _check_declared(path, (height, width, bands), np.dtype(f"u{itemsize}"))
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                return np.asarray(im)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: image declares too many pixels for a tile ({_reason(exc)})") from None
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: cannot read image file ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:200]
