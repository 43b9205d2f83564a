"""Band sets (Table VI) and band engineering (Table V).

Every band has a name a YAML spec can use in `bands:`. The originals are the dataset's
own channels, declared in `rmaunet.datasets` (Landslide4Sense: B1…B12, slope, dem; Bijie:
red, green, blue and the opt-in dem; Nepal: red, green, blue). The engineered bands 15-26
of Table V, in order:

    15-17  blue_norm green_norm red_norm   per-tile min-max of B2, B3, B4
    18-20  ndvi ndmi nbr                   (B8−B4)/(B8+B4), (B8−B11)/(B8+B11), (B8−B12)/(B8+B12)
    21     gray                            (B2+B3+B4)/3
    22-23  gaussian median                 10×10 Gaussian and median filters of gray
    24-25  grad_y grad_x                   gray's gradient along rows and along columns
    26     canny                           Canny edges of gray (0 / 1)

The paper leaves open what the filters, gradients and edges are applied to; gray is the
one single-channel image the table defines, so they act on it. The 10×10 Gaussian uses
OpenCV's rule for a 10-pixel kernel, σ = 0.3·((10−1)/2 − 1) + 0.8 = 1.85, truncated at
5 pixels; the 10×10 median is SciPy's (rank 50 of 100, reflected borders). The ratio
indices are 0 where their denominator is 0 and clipped to [−1, 1] (released values are
not pure reflectances and may be negative).

A `bands:` spec is a comma-separated list of band names and set names, where `-name`
removes a band or set: "23", "14,ndvi", "23,-slope,-dem". A set on an RGB dataset keeps
the bands that dataset can carry; naming a band that needs Sentinel-2 channels the dataset
lacks (ndvi, ndmi, nbr on Bijie or Nepal) is a ConfigError. A set starts with the dataset's
default channels: Bijie's DEM is opt-in, as the paper uses RGB only ("14,dem", "23,dem").

This module imports neither TensorFlow nor (until bands are computed) SciPy: the study
engine validates specs with `resolve_bands` before anything heavy starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rmaunet.datasets import DATASET_INFO, DatasetInfo, dataset_info
from rmaunet.errors import ConfigError

__all__ = [
    "ORIGINAL_BANDS",
    "DATASET_BANDS",
    "ENGINEERED_BANDS",
    "BAND_SETS",
    "resolve_bands",
    "engineer_bands",
    "engineer_bands_reference",
    "median_filter",
]

# Every channel each dataset's reader can deliver (its opt-in channels included).
DATASET_BANDS: dict[str, tuple[str, ...]] = {name: info.bands for name, info in DATASET_INFO.items()}
ORIGINAL_BANDS = DATASET_BANDS["landslide4sense"]
_RGB = ("blue", "green", "red")
GAUSSIAN_SIGMA = 1.85  # OpenCV's σ for a 10-pixel kernel: 0.3·((10 − 1)/2 − 1) + 0.8
FILTER_SIZE = 10
_CHUNK = 2  # tiles per work item: the median's sorted blocks of 2 tiles stay in cache


class _Tiles:
    """A chunk of tiles and the intermediates several bands share (computed once)."""

    def __init__(self, images: np.ndarray, channels: tuple[str, ...], roles: Mapping[str, str], dtype: type) -> None:
        self.images, self.dtype = images, dtype
        self.index = {name: i for i, name in enumerate(channels)}
        self.roles = roles
        self.shared: dict[str, np.ndarray] = {}

    def role(self, role: str) -> np.ndarray:
        return self.once(role, lambda: self.images[..., self.index[self.roles[role]]].astype(self.dtype))

    def once(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    @property
    def gray(self) -> np.ndarray:
        return self.once("gray", lambda: (self.role("blue") + self.role("green") + self.role("red")) / 3)


@dataclass(frozen=True)
class EngineeredBand:
    number: int  # Table V's band number
    needs: tuple[str, ...]  # spectral roles
    compute: Callable[[_Tiles], np.ndarray]  # (N, H, W, C) chunk -> (N, H, W)


def _minmax(role: str) -> Callable[[_Tiles], np.ndarray]:
    def compute(t: _Tiles) -> np.ndarray:
        x = t.role(role)
        low = x.min(axis=(1, 2), keepdims=True)
        span = x.max(axis=(1, 2), keepdims=True) - low
        return np.divide(x - low, span, out=np.zeros_like(x), where=span > 0)

    return compute


def _ratio(a: str, b: str) -> Callable[[_Tiles], np.ndarray]:
    def compute(t: _Tiles) -> np.ndarray:
        x, y = t.role(a), t.role(b)
        total = x + y
        out = np.divide(x - y, total, out=np.zeros_like(total), where=np.abs(total) > 1e-6)
        return np.clip(out, -1.0, 1.0, out=out)

    return compute


def _gaussian(t: _Tiles) -> np.ndarray:
    from scipy import ndimage

    radius = FILTER_SIZE // 2
    return ndimage.gaussian_filter(
        t.gray, (0, GAUSSIAN_SIGMA, GAUSSIAN_SIGMA), mode="reflect", radius=(0, radius, radius)
    )


def _gradient(axis: int) -> Callable[[_Tiles], np.ndarray]:
    def compute(t: _Tiles) -> np.ndarray:
        gray = t.gray
        if gray.shape[axis] < 2:
            return np.zeros_like(gray)
        return np.gradient(gray, axis=axis)

    return compute


def _canny(t: _Tiles) -> np.ndarray:
    return canny(t.gray)


# Table V, bands 15-26, in order. A new band is one function plus one line here.
ENGINEERED: dict[str, EngineeredBand] = {
    "blue_norm": EngineeredBand(15, ("blue",), _minmax("blue")),
    "green_norm": EngineeredBand(16, ("green",), _minmax("green")),
    "red_norm": EngineeredBand(17, ("red",), _minmax("red")),
    "ndvi": EngineeredBand(18, ("nir", "red"), _ratio("nir", "red")),
    "ndmi": EngineeredBand(19, ("nir", "swir1"), _ratio("nir", "swir1")),
    "nbr": EngineeredBand(20, ("nir", "swir2"), _ratio("nir", "swir2")),
    "gray": EngineeredBand(21, _RGB, lambda t: t.gray),
    "gaussian": EngineeredBand(22, _RGB, _gaussian),
    "median": EngineeredBand(23, _RGB, lambda t: median_filter(t.gray, FILTER_SIZE)),
    "grad_y": EngineeredBand(24, _RGB, _gradient(1)),
    "grad_x": EngineeredBand(25, _RGB, _gradient(2)),
    "canny": EngineeredBand(26, _RGB, _canny),
}
ENGINEERED_BANDS = tuple(ENGINEERED)
# Table VI: the originals plus Table V's bands 15 … N.
BAND_SETS = {str(n): n for n in (14, 17, 21, 23, 25, 26)}


def available(name: str, dataset: str) -> bool:
    """Whether an engineered band can be computed from the dataset's channels."""
    return all(role in dataset_info(dataset).roles for role in ENGINEERED[name].needs)


def _set_members(set_name: str, dataset: str) -> tuple[str, ...]:
    last = BAND_SETS[set_name]
    extra = [name for name, band in ENGINEERED.items() if band.number <= last and available(name, dataset)]
    return dataset_info(dataset).default_bands + tuple(extra)


def resolve_bands(spec: str, dataset: str = "landslide4sense") -> tuple[str, ...]:
    """A `bands:` spec -> the ordered, de-duplicated band names for one dataset."""
    info = dataset_info(dataset)
    if not isinstance(spec, str):
        spec = str(spec)
    originals = info.bands
    canonical = {name.lower(): name for name in originals + ENGINEERED_BANDS}
    chosen: list[str] = []
    tokens = [tok.strip() for tok in spec.split(",") if tok.strip()]
    if not tokens:
        raise ConfigError(f"bands: expected a band set name or comma-separated band names, got {spec!r}")
    for token in tokens:
        remove = token.startswith("-")
        word = token[1:].strip() if remove else token
        if word in BAND_SETS:
            names = _set_members(word, dataset)
        elif word.lower() in canonical:
            name = canonical[word.lower()]
            if name in ENGINEERED and not available(name, dataset):
                missing = [r for r in ENGINEERED[name].needs if r not in info.roles]
                raise ConfigError(
                    f"bands: {name!r} needs the Sentinel-2 {' and '.join(missing)} band(s), which {dataset} "
                    f"({', '.join(originals)}) does not have"
                )
            names = (name,)
        else:
            known = ", ".join(originals + tuple(n for n in ENGINEERED_BANDS if available(n, dataset)))
            raise ConfigError(
                f"bands: unknown band {word!r} for {dataset} (known: {known}; sets: {', '.join(BAND_SETS)})"
            )
        if remove:
            chosen = [n for n in chosen if n not in names]
        else:
            chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise ConfigError(f"bands: {spec!r} leaves no band")
    return tuple(chosen)


# ---------------------------------------------------------------------- computing bands
def engineer_bands(
    images: np.ndarray,
    names: tuple[str, ...] | list[str],
    dataset: str = "landslide4sense",
    *,
    channels: tuple[str, ...] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """(N, H, W, channels) -> (N, H, W, len(names)) float32, in the order of `names`.

    `channels` names the images' last axis (default: the dataset's default channels, as
    its reader reads them). Engineered bands are computed in chunks of tiles on a thread
    pool (NumPy and SciPy release the GIL in the heavy parts), each chunk sharing its
    intermediates.
    """
    info, originals = _originals(images, dataset, channels)
    names = tuple(names)
    for name in names:
        if name not in originals and name not in ENGINEERED:
            raise ConfigError(f"bands: {name!r} is not one of the images' channels ({', '.join(originals)})")
        if name in ENGINEERED and not available(name, dataset):
            raise ConfigError(f"bands: {name!r} cannot be computed from {dataset}'s bands")
    out = np.empty(images.shape[:3] + (len(names),), np.float32)

    def run(start: int) -> None:
        chunk = images[start : start + _CHUNK]
        tiles = _Tiles(chunk, originals, info.roles, np.float32)
        columns = [chunk[..., originals.index(n)] if n in originals else ENGINEERED[n].compute(tiles) for n in names]
        # One interleaving copy per chunk: writing band by band into the channel-last
        # output would stream over the chunk once per band.
        out[start : start + _CHUNK] = np.stack(columns, axis=-1)

    starts = range(0, len(images), _CHUNK)
    workers = min(workers or available_cpus(), len(starts))
    if workers <= 1:
        for s in starts:
            run(s)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    return out


def engineer_bands_reference(
    images: np.ndarray,
    names: tuple[str, ...] | list[str],
    dataset: str = "landslide4sense",
    *,
    channels: tuple[str, ...] | None = None,
) -> np.ndarray:
    """The straightforward way: tile by tile, float64, SciPy's own median filter.

    The fast path is checked against it (tests) and timed against it (bench).
    """
    from scipy import ndimage

    info, originals = _originals(images, dataset, channels)
    out = np.empty(images.shape[:3] + (len(names),), np.float32)
    for i in range(len(images)):
        tiles = _Tiles(images[i : i + 1].astype(np.float64), originals, info.roles, np.float64)
        for k, name in enumerate(names):
            if name in originals:
                out[i, ..., k] = images[i, ..., originals.index(name)]
            elif name == "median":
                out[i, ..., k] = ndimage.median_filter(tiles.gray[0], size=FILTER_SIZE, mode="reflect")
            else:
                out[i, ..., k] = ENGINEERED[name].compute(tiles)[0]
    return out


def _originals(
    images: np.ndarray, dataset: str, channels: tuple[str, ...] | None
) -> tuple[DatasetInfo, tuple[str, ...]]:
    """The dataset's declaration and the channel names of the images' last axis (checked)."""
    info = dataset_info(dataset)
    originals = info.default_bands if channels is None else tuple(channels)
    if images.ndim != 4 or images.shape[-1] != len(originals):
        raise ConfigError(f"bands: expected (N, H, W, {len(originals)}) {dataset} images, got shape {images.shape}")
    return info, originals


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------- filters
def median_filter(x: np.ndarray, size: int) -> np.ndarray:
    """Per-tile size×size median of (N, H, W), equal to SciPy's `median_filter(size=size)`
    on each tile (reflected borders; rank size²//2, the upper median for even sizes).

    Each window is split into a left and a right block of columns; every block is sorted
    once (neighbouring windows share them) with NumPy's vectorised sort, then the wanted
    rank of the two sorted blocks is found by a vectorised binary search. About three
    times faster than SciPy's per-pixel selection, before any threading.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    n, h, w = x.shape
    before = size // 2
    padded = np.pad(x, ((0, 0), (before, size - 1 - before), (before, size - 1 - before)), mode="symmetric")
    left_w = size // 2
    right_w = size - left_w
    rank = size * size // 2

    def sorted_blocks(width: int, first_col: int, count: int) -> np.ndarray:
        cols = padded[:, :, first_col : first_col + count + width - 1]
        view = sliding_window_view(cols, (size, width), axis=(1, 2))
        blocks = np.ascontiguousarray(view).reshape(n, h, count, size * width)
        blocks.sort(axis=-1)
        return blocks

    if size == 1:
        return x.copy()
    if left_w == right_w:
        # Right blocks are left blocks shifted by left_w columns: sort each block once.
        blocks = sorted_blocks(left_w, 0, w + left_w)
        start = _block_starts(blocks.shape)[:, :, :w]
        return _kth_of_two_sorted(
            blocks.ravel(), start, start + left_w * blocks.shape[-1], blocks.shape[-1], blocks.shape[-1], rank
        )
    left, right = sorted_blocks(left_w, 0, w), sorted_blocks(right_w, left_w, w)
    flat = np.concatenate([left.ravel(), right.ravel()])
    start = _block_starts(left.shape)
    return _kth_of_two_sorted(
        flat, start, left.size + _block_starts(right.shape), left.shape[-1], right.shape[-1], rank
    )


def _block_starts(shape: tuple[int, ...]) -> np.ndarray:
    """Flat offset of each block's first element in a C-contiguous (..., block) array."""
    count = int(np.prod(shape[:-1]))
    dtype = np.int32 if count * shape[-1] < 2**31 else np.intp  # 32-bit offsets move less memory
    return np.arange(count, dtype=dtype).reshape(shape[:-1]) * dtype(shape[-1])


def _kth_of_two_sorted(flat: np.ndarray, a: np.ndarray, b: np.ndarray, m: int, nb: int, k: int) -> np.ndarray:
    """k-th smallest (0-based) of the union of two sorted runs in `flat`: the run of length m
    starting at offsets `a` and the run of length nb starting at offsets `b` (per pixel)."""

    # The answer is i = the number of elements taken from a: the smallest i with
    # a[i] >= b[k-i-1] (a[m] = +inf, b[-1] = -inf); then the k smallest are a[:i] and
    # b[:k-i] and the k-th is min(a[i], b[k-i]). Found by binary lifting: every probe
    # below stays inside both runs, so no bounds checks until the end.
    low, high = max(0, k - nb), min(k, m)
    pos = np.full(a.shape, low, a.dtype)
    step = 1 << (max(high - low, 1).bit_length() - 1)  # steps 2^j … 1 sum to at least high - low
    while step:
        candidate = pos + step
        probe = np.minimum(candidate, high) - 1
        below = flat.take(a + probe) < flat.take(b + (k - 1) - probe)
        pos = np.where((candidate <= high) & below, candidate, pos)
        step >>= 1
    a_i = np.where(pos < m, flat.take(a + np.minimum(pos, m - 1)), np.inf)
    rest = k - pos
    b_j = np.where(rest < nb, flat.take(b + np.minimum(rest, nb - 1)), np.inf)
    return np.minimum(a_i, b_j).astype(flat.dtype)


def canny(gray: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """Canny edges of each tile of (N, H, W) as 0 / 1 floats.

    Gaussian smoothing, Sobel gradients, non-maximum suppression across the gradient
    direction (4 sectors), hysteresis: weak edges (≥ low · the tile's strongest gradient)
    are kept where they connect (8-neighbourhood) to a strong one (≥ high · strongest).
    Thresholds relative to each tile make it independent of the band's scale.
    """
    from scipy import ndimage

    g = ndimage.gaussian_filter(gray, (0, sigma, sigma), mode="nearest")
    # Sobel along one image axis only: ndimage.sobel would also smooth across tiles.
    gx = ndimage.correlate1d(
        ndimage.correlate1d(g, [-1, 0, 1], axis=2, mode="nearest"), [1, 2, 1], axis=1, mode="nearest"
    )
    gy = ndimage.correlate1d(
        ndimage.correlate1d(g, [-1, 0, 1], axis=1, mode="nearest"), [1, 2, 1], axis=2, mode="nearest"
    )
    mag = np.hypot(gx, gy)
    padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)), mode="constant")
    h, w = mag.shape[1:]

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # Gradient direction folded into [0, 180) degrees and binned into 4 sectors.
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    sector = ((angle + 22.5) // 45).astype(np.int8) % 4  # 0: x, 1: diagonal, 2: y, 3: anti-diagonal
    neighbours = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
    keep = np.zeros(mag.shape, bool)
    for s, (dy, dx) in neighbours.items():
        local = (mag >= shifted(dy, dx)) & (mag >= shifted(-dy, -dx))
        keep |= (sector == s) & local
    keep &= mag > 0
    peak = mag.max(axis=(1, 2), keepdims=True)
    weak = keep & (mag >= low * peak)
    strong = keep & (mag >= high * peak)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # connect within a tile, never across tiles
    labels, count = ndimage.label(weak, structure)
    connected = np.zeros(count + 1, bool)
    connected[labels[strong]] = True
    connected[0] = False
    return connected[labels].astype(gray.dtype)
