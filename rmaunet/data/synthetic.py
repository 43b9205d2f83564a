"""Synthetic scenes that behave like the real datasets, written in each dataset's layout.

A scene is built from physics, not noise, at a nominal 10 m per pixel:

- terrain: a fractal DEM (power-law spectrum, as real relief has), its slope and aspect,
  lit by a per-scene sun (hillshade: brightness alone cannot tell a scar from a sunny slope);
- water in the lowest ground, and vegetation that thins on steep ground;
- landslides: irregular scars seeded on the steepest ground and elongated downhill,
  with the spectral change of vegetation loss (NDVI down, SWIR up, brighter visible
  bands), rough debris inside and a shadowed scarp at the crown;
- look-alikes in every scene, with or without a landslide, covering a few times the
  landslides' area: river bars along the banks, ploughed fields and villages on gentle
  ground, fresh cuts (quarries, construction) on steep ground, winding roads with bare
  cuts on their uphill side. Every bare object, scar or not, draws its spectrum and its
  brightness spread from one family (rock, soil, gravel, concrete, some regrowth), and
  cuts sit on slopes as steep as the scars': a single pixel's bands, indices, slope and
  elevation cannot tell a scar from a look-alike. Shape (lobate and downhill vs straight
  edges along the contour), texture (rough debris vs smooth faces, furrows, roof grids),
  the scarp and the neighbourhood (next to water, on a road) can. A per-pixel classifier
  stays far below a small U-Net (bench/synthetic_difficulty.py);
- thin or thick clouds (never opaque) with their shadows, per-band atmosphere (haze,
  gain), 20 m and 60 m bands as blurred as Sentinel-2 records them, and sensor noise.

Pixel values are mixtures of endmember spectra. Landslide4Sense tiles carry 14 bands at
the release's scale (roughly 0 to 6); Bijie tiles are 8-bit RGB plus a 16-bit DEM in
metres; Nepal tiles are 8-bit RGB. Defaults match the paper's Table II.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from rmaunet.errors import DataError

__all__ = ["SceneParams", "PARAMS", "Scene", "make_scene", "write_dataset", "write_landslide4sense"]

# Sentinel-2 bands B1..B12 (Landslide4Sense order), reflectance endmember spectra.
#                      B1    B2    B3    B4    B5    B6    B7    B8    B9    B10    B11   B12
_VEGETATION = np.array([0.03, 0.04, 0.07, 0.04, 0.10, 0.28, 0.34, 0.38, 0.36, 0.005, 0.18, 0.09])
_SOIL = np.array([0.07, 0.09, 0.12, 0.15, 0.18, 0.21, 0.23, 0.24, 0.25, 0.010, 0.30, 0.24])
_BUILT = np.array([0.10, 0.12, 0.14, 0.16, 0.18, 0.19, 0.20, 0.21, 0.21, 0.010, 0.25, 0.22])
_GRAVEL = np.array([0.11, 0.13, 0.16, 0.19, 0.21, 0.22, 0.23, 0.24, 0.24, 0.010, 0.28, 0.23])
_WATER = np.array([0.07, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03, 0.02, 0.02, 0.002, 0.01, 0.01])
_SCAR = np.array([0.13, 0.17, 0.21, 0.26, 0.28, 0.29, 0.30, 0.30, 0.31, 0.015, 0.40, 0.34])
_CLOUD = np.array([0.55, 0.58, 0.58, 0.60, 0.60, 0.61, 0.62, 0.62, 0.55, 0.200, 0.45, 0.35])
_HAZE = np.array([0.05, 0.04, 0.03, 0.02, 0.015, 0.01, 0.01, 0.008, 0.008, 0.0, 0.004, 0.002])
_BAND_20M = (4, 5, 6, 10, 11)  # B5, B6, B7, B11, B12
_BAND_60M = (0, 8, 9)  # B1, B9, B10
_SCALE = 10.0  # reflectance × 10 lands in the release's 0…6 range
_PIXEL_M = 10.0


@dataclass(frozen=True)
class SceneParams:
    """Dataset-level statistics a generator aims at (the paper's Table II)."""

    landslide_image_ratio: float
    landslide_pixel_ratio: float  # over all pixels of the dataset

    @property
    def per_landslide_image(self) -> float:
        return self.landslide_pixel_ratio / max(self.landslide_image_ratio, 1e-9)


PARAMS = {
    "landslide4sense": SceneParams(0.58, 0.023),
    "bijie": SceneParams(0.27, 0.039),
    "nepal": SceneParams(1.0, 0.008),
}


@dataclass
class Scene:
    reflectance: np.ndarray  # (S, S, 12) Sentinel-2-like surface reflectance
    dem: np.ndarray  # (S, S) metres
    slope: np.ndarray  # (S, S) degrees
    mask: np.ndarray  # (S, S) uint8 {0, 1}


# ---------------------------------------------------------------------- fields
@functools.lru_cache(maxsize=8)
def _frequencies(size: int) -> np.ndarray:
    k = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    k[0, 0] = 1.0
    return k


def _fractal(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """A [0, 1] field with power spectrum ∝ k^-beta (beta ≈ 3: terrain; ≈ 2: land cover)."""
    spectrum = np.fft.rfft2(rng.standard_normal((size, size))) * _frequencies(size) ** (-beta / 2)
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(size, size))
    field -= field.min()
    return field / max(field.max(), 1e-12)


def _slope_aspect(dem: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    gy, gx = np.gradient(dem, _PIXEL_M)
    slope = np.arctan(np.hypot(gx, gy))
    return np.degrees(slope), slope, gy, gx


def _hillshade(slope_rad: np.ndarray, gy: np.ndarray, gx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lambertian illumination relative to flat ground, for a random sun."""
    zenith = np.radians(rng.uniform(25, 60))
    azimuth = np.radians(rng.uniform(110, 250))
    aspect = np.arctan2(-gx, gy)
    cos_i = np.cos(zenith) * np.cos(slope_rad) + np.sin(zenith) * np.sin(slope_rad) * np.cos(azimuth - aspect)
    return np.clip(cos_i / np.cos(zenith), 0.45, 1.4)


def _scar(
    rng: np.random.Generator,
    grids: np.ndarray,
    rough: np.ndarray,
    seeds: np.ndarray,
    gy: np.ndarray,
    gx: np.ndarray,
    area: float,
) -> np.ndarray:
    """One irregular scar of about `area` pixels, elongated downhill from a steep seed."""
    yy, xx = grids
    cy, cx = seeds[rng.integers(len(seeds))]
    angle = np.arctan2(-gy[cy, cx], -gx[cy, cx])  # downhill
    ratio = rng.uniform(0.3, 0.6)
    length = np.sqrt(max(area, 4.0) / (np.pi * ratio))
    width = length * ratio
    # Centre the ellipse a little downhill of the seed: the crown sits on the steep part.
    cy2, cx2 = cy + 0.3 * length * np.sin(angle), cx + 0.3 * length * np.cos(angle)
    dy, dx = yy - cy2, xx - cx2
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    shift = rng.integers(0, rough.shape[0], size=2)
    outline = np.roll(rough, tuple(shift), axis=(0, 1))
    return (along / length) ** 2 + (across / width) ** 2 + 0.9 * outline < 1.0


def _scars(
    rng: np.random.Generator, grids: np.ndarray, slope: np.ndarray, gy: np.ndarray, gx: np.ndarray, target: float
) -> np.ndarray:
    """Scars on the steepest ground until about `target` pixels are covered."""
    size = slope.shape[0]
    rough = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5, mode="wrap")
    rough /= max(np.abs(rough).max(), 1e-12) * 2  # zero-mean, within ±0.5
    seeds = np.argwhere(slope >= np.quantile(slope, 0.8))
    # Failures need steep ground: a scar stops where the slope flattens out.
    steep = slope >= np.quantile(slope, 0.4)
    mask = np.zeros(slope.shape, bool)
    count = int(rng.choice([1, 1, 2, 2, 3]))
    shares = rng.dirichlet(np.full(count, 2.0)) * target
    for area in shares:
        mask |= _scar(rng, grids, rough, seeds, gy, gx, area) & steep
    for _ in range(6):  # overlaps and tile edges eat area: top up
        covered = mask.sum()
        if covered >= 0.85 * target:
            break
        mask |= _scar(rng, grids, rough, seeds, gy, gx, 1.15 * (target - covered)) & steep
    return mask


# ---------------------------------------------------------------------- bare ground
# Landslides and their look-alikes draw their spectra and their brightness spread from
# the same family, so that one pixel cannot tell a scar from a field, a river bar, a road
# cut, a quarry or a roof: only shape, texture and the neighbourhood can.
_BARE_ENDMEMBERS = np.stack([_SCAR, _SOIL, _GRAVEL, _BUILT])


def _bare_spectrum(rng: np.random.Generator) -> np.ndarray:
    """One bare object's reflectance: a mix of rock, soil, gravel and concrete, some regrowth."""
    weights = rng.dirichlet(np.ones(len(_BARE_ENDMEMBERS)))
    regrowth = rng.uniform(0.0, 0.25)
    brightness = rng.uniform(0.8, 1.2)
    return brightness * ((1 - regrowth) * weights @ _BARE_ENDMEMBERS + regrowth * _VEGETATION)


def _texture(rng: np.random.Generator, size: int, rough: bool) -> np.ndarray:
    """A unit-mean brightness pattern with the same spread either way: debris at pixel
    scale (rough) or tens of metres (smooth). Only neighbouring pixels tell them apart."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.6 if rough else 3.0, mode="wrap")
    noise /= max(float(noise.std()), 1e-12)
    return 1.0 + rng.uniform(0.12, 0.28) * noise


@dataclass
class _Ground:
    """What a scene's bare objects need: terrain, where they may go, and what they paint."""

    rng: np.random.Generator
    grids: np.ndarray  # (2, S, S) row and column of every pixel
    dem: np.ndarray
    gy: np.ndarray
    gx: np.ndarray
    steepness: np.ndarray  # each pixel's slope as a quantile of the scene's (0: flattest, 1: steepest)
    free: np.ndarray  # not water, not a landslide or next to one
    farm_angle: float  # fields and villages share one grid orientation per scene
    bare: np.ndarray  # (S, S) bool, painted
    spectrum: np.ndarray  # (S, S, 12) reflectance where painted

    def paint(self, mask: np.ndarray, pattern: np.ndarray | float) -> np.ndarray:
        """One object of one spectrum with a brightness pattern; returns the pixels it took."""
        mask = mask & self.free
        self.bare |= mask
        self.spectrum[mask] = np.broadcast_to(pattern, mask.shape)[mask][:, None] * _bare_spectrum(self.rng)
        return mask

    def somewhere(self, where: np.ndarray) -> np.ndarray:
        """A random pixel of `where` (anywhere free if `where` is empty)."""
        candidates = np.argwhere(where & self.free)
        if not len(candidates):
            candidates = np.argwhere(self.free) if self.free.any() else np.argwhere(np.ones_like(where))
        return candidates[self.rng.integers(len(candidates))]

    @property
    def size(self) -> int:
        return self.dem.shape[0]

    def downhill(self, at: np.ndarray) -> float:
        return float(np.arctan2(-self.gy[at[0], at[1]], -self.gx[at[0], at[1]]))

    def box(
        self, centre: np.ndarray, angle: float, half_along: float, half_across: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A straight-edged rectangle at any angle, with each pixel's along / across offsets."""
        dy, dx = self.grids[0] - centre[0], self.grids[1] - centre[1]
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        return (np.abs(along) <= half_along) & (np.abs(across) <= half_across), along, across


def _field(g: _Ground) -> np.ndarray:
    """A ploughed field on gentle ground: straight edges, smooth, faint furrows."""
    centre = g.somewhere(g.steepness < 0.35)
    mask, _, across = g.box(centre, g.farm_angle + g.rng.normal(0, 0.05), g.rng.uniform(2, 7), g.rng.uniform(2, 5))
    furrows = 1 + 0.06 * np.cos(2 * np.pi * across / g.rng.uniform(1.8, 3.0))
    return g.paint(mask, _texture(g.rng, g.size, rough=False) * furrows)


def _town(g: _Ground) -> np.ndarray:
    """A village on gentle ground: a grid of roofs and lanes."""
    centre = g.somewhere(g.steepness < 0.35)
    mask, along, across = g.box(centre, g.farm_angle, g.rng.uniform(3, 8), g.rng.uniform(3, 7))
    period = g.rng.uniform(3.0, 4.5)
    roofs = (np.mod(along, period) < 0.6 * period) & (np.mod(across, period) < 0.6 * period)
    return g.paint(mask, np.where(roofs, 1.12, 0.85))


def _cut(g: _Ground) -> np.ndarray:
    """A fresh cut or quarry on steep ground, where scars are: smooth faces between
    benches, straight edges, wider along the contour than down the slope."""
    centre = g.somewhere(g.steepness >= 0.6)
    mask, _, across = g.box(centre, g.downhill(centre) + np.pi / 2, g.rng.uniform(2.5, 7), g.rng.uniform(1.5, 4.5))
    benches = 1 + 0.1 * np.sign(np.sin(2 * np.pi * across / g.rng.uniform(4.0, 6.0)))
    return g.paint(mask, _texture(g.rng, g.size, rough=False) * benches)


def _road(g: _Ground) -> np.ndarray:
    """A winding road; where it crosses steep ground, a bare cut on its uphill side."""
    size = g.size
    position = g.rng.uniform(0, size, size=2)
    heading = g.rng.uniform(0, 2 * np.pi)
    road = np.zeros((size, size), bool)
    for _ in range(2 * size):
        heading += g.rng.normal(0, 0.12)
        position = position + 0.7 * np.array([np.sin(heading), np.cos(heading)])
        y, x = np.rint(position).astype(int)
        if not (0 <= y < size and 0 <= x < size):
            break
        road[y, x] = True
    if not road.any():
        return road
    if g.rng.random() < 0.5:
        road = ndimage.binary_dilation(road)
    distance, nearest = ndimage.distance_transform_edt(~road, return_indices=True)
    uphill = g.dem > g.dem[nearest[0], nearest[1]] + 0.5
    cut = (distance <= g.rng.uniform(1.5, 3.5)) & uphill & (g.steepness >= 0.5) & ~road
    return g.paint(cut, _texture(g.rng, g.size, rough=False)) | g.paint(road, 1.0)


_LOOK_ALIKES = (_field, _town, _cut, _road)
_LOOK_ALIKE_ODDS = np.array([0.3, 0.15, 0.35, 0.2])


# ---------------------------------------------------------------------- scenes
def make_scene(rng: np.random.Generator, size: int, landslide: bool, pixel_fraction: float) -> Scene:
    """One scene of size×size pixels; `pixel_fraction` of it is landslide if `landslide`."""
    # Mountain terrain: the relief is scaled so that the typical (median) slope is 12-25°.
    shape = _fractal(rng, size, rng.uniform(3.6, 4.2))
    typical = np.median(np.hypot(*np.gradient(shape, _PIXEL_M)))
    relief = np.tan(np.radians(rng.uniform(12, 25))) / max(typical, 1e-12)
    dem = rng.uniform(500, 2200) + relief * shape
    slope, slope_rad, gy, gx = _slope_aspect(dem)
    steep = np.clip(slope / 45.0, 0, 1)

    water = dem <= np.quantile(dem, rng.uniform(0.0, 0.08))
    cover = _fractal(rng, size, 2.0)
    vegetation = np.clip(0.75 + 0.6 * (cover - 0.5) - 0.25 * steep + rng.uniform(-0.1, 0.1), 0, 1)
    vegetation = np.where(water, 0.0, vegetation)
    grids = np.mgrid[0:size, 0:size].astype(np.float64)
    mask = np.zeros((size, size), bool)
    if landslide:
        mask = _scars(rng, grids, slope, gy, gx, pixel_fraction * size * size)

    steepness = np.argsort(np.argsort(slope, axis=None)).reshape(slope.shape) / slope.size
    ground = _Ground(
        rng,
        grids,
        dem,
        gy,
        gx,
        steepness,
        free=~water & ~ndimage.binary_dilation(mask, iterations=2),
        farm_angle=rng.uniform(0, np.pi),
        bare=np.zeros((size, size), bool),
        spectrum=np.zeros((size, size, 12)),
    )
    if water.any():  # river bars: gravel as rough as debris, but flat and along the banks
        bars = ndimage.binary_dilation(water, iterations=int(rng.integers(1, 4))) & ~water
        ground.paint(bars, _texture(rng, size, rough=True))
    # Look-alikes in every scene, with or without a landslide, covering a few times the
    # landslide share: on flat ground (fields, villages) and on steep ground (cuts, roads).
    target = rng.uniform(0.05, 0.12) * size * size
    for _ in range(40):
        if ground.bare.sum() >= target:
            break
        _LOOK_ALIKES[rng.choice(len(_LOOK_ALIKES), p=_LOOK_ALIKE_ODDS)](ground)
    # Landslides last: rough debris from the same family of spectra, a shadowed scarp at the crown.
    ground.free = mask
    ground.paint(mask, _texture(rng, size, rough=True))
    scarp = np.zeros((size, size), bool)
    if landslide and mask.any():
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        _, nearest = ndimage.distance_transform_edt(~mask, return_indices=True)
        scarp = ring & (dem > dem[nearest[0], nearest[1]] + 1.0)

    bare = ground.bare
    fractions = [np.where(bare, 0.0, vegetation), np.where(bare | water, 0.0, 1.0 - vegetation), water & ~bare]
    shade = _hillshade(slope_rad, gy, gx, rng) * np.where(scarp, 0.45, 1.0)
    spectra = np.stack([_VEGETATION, _SOIL, _WATER])
    reflectance = np.stack(fractions, axis=-1).astype(np.float64) @ spectra + ground.spectrum
    reflectance = (reflectance * shade[..., None]).astype(np.float32)

    if rng.random() < 0.25:  # clouds, thin or thick (never opaque), and their shadows
        cloud = np.clip(_fractal(rng, size, 2.6) * rng.uniform(1.2, 2.2) - rng.uniform(0.6, 1.0), 0, 0.7)
        offset = tuple(rng.integers(-size // 10 - 1, size // 10 + 2, size=2))
        shadow = 1.0 - 0.6 * np.roll(cloud, offset, axis=(0, 1))
        cloud = cloud.astype(np.float32)[..., None]
        shadow = shadow.astype(np.float32)[..., None]
        reflectance = reflectance * shadow * (1 - cloud) + cloud * _CLOUD.astype(np.float32)
    # A per-scene exposure on top of per-band gains: absolute brightness is no cue either.
    gain = (rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=12)).astype(np.float32)
    reflectance = reflectance * gain + np.float32(rng.uniform(0, 1)) * _HAZE.astype(np.float32)
    for bands, width in ((list(_BAND_20M), 2), (list(_BAND_60M), 6)):
        reflectance[..., bands] = ndimage.uniform_filter(reflectance[..., bands], (width, width, 1), mode="reflect")
    reflectance += np.float32(0.004) * rng.standard_normal(reflectance.shape, dtype=np.float32)
    return Scene(
        reflectance.astype(np.float32), dem.astype(np.float32), slope.astype(np.float32), mask.astype(np.uint8)
    )


def landslide4sense_image(scene: Scene) -> np.ndarray:
    """(S, S, 14) float32: B1…B12 at the release's scale, slope, DEM (scaled likewise)."""
    bands = [
        _SCALE * scene.reflectance,
        (scene.slope / 20.0)[..., None],
        ((scene.dem - 200.0) / 1000.0)[..., None],
    ]
    return np.concatenate(bands, axis=-1).astype(np.float32)


def rgb_image(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """8-bit true colour (B4, B3, B2) with a per-scene exposure and display gamma."""
    rgb = scene.reflectance[..., [3, 2, 1]] * rng.uniform(2.4, 3.2)
    return (np.clip(rgb, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------- writers
def _plan(dataset: str, n: int, rng: np.random.Generator, params: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    """Which scenes hold landslides (an exact share, shuffled) and how much of each."""
    n_slide = int(round(params.landslide_image_ratio * n))
    has_slide = rng.permutation(np.arange(n) < n_slide)
    fractions = params.per_landslide_image * rng.uniform(0.5, 1.5, size=n)
    return has_slide, fractions


# The largest tile side a trial can crop to (TrialConfig.crop); bytes on disk per pixel of a
# scene, generously: Landslide4Sense's 14 float64 bands and its mask.
MAX_SIZE = 4096
_BYTES_PER_PIXEL = 14 * 8 + 1


def write_dataset(
    dataset: str,
    out: Path | str,
    n: int,
    seed: int,
    size: int = 128,
    *,
    params: SceneParams | None = None,
) -> Path:
    """Write n synthetic scenes in the dataset's published layout (same seed, same files)."""
    if dataset not in PARAMS:
        raise DataError(f"{out}: unknown dataset {dataset!r} (choose one of: {', '.join(PARAMS)})")
    if n < 1 or not 8 <= size <= MAX_SIZE:
        raise DataError(f"{out}: need n >= 1 and 8 <= size <= {MAX_SIZE} (got {n}, {size})")
    if seed < 0:
        raise DataError(f"{out}: the seed must be 0 or more (got {seed})")
    if dataset == "nepal" and n < 3:
        raise DataError(f"{out}: the Nepal layout needs n >= 3 (one scene each for train, validation, test)")
    params = params or PARAMS[dataset]
    out = Path(out)
    _check_room(out, n * size * size * _BYTES_PER_PIXEL)
    rng = np.random.default_rng(seed)
    has_slide, fractions = _plan(dataset, n, rng, params)
    writer = {"landslide4sense": _write_l4s_scene, "bijie": _write_bijie_scene, "nepal": _write_nepal_scene}[dataset]
    locations = _nepal_splits(n) if dataset == "nepal" else [None] * n
    try:
        for i in range(n):
            scene = make_scene(rng, size, bool(has_slide[i]), float(fractions[i]))
            writer(out, i + 1, scene, rng, locations[i])
    except OSError as exc:  # h5py and PIL report a full or read-only disk as OSError
        raise DataError(f"{out}: cannot write the synthetic dataset ({exc.strerror or exc})") from None
    return out


def _check_room(out: Path, needed: int) -> None:
    """Refuse, before writing a file, an `out` that is (under) a file or on a disk without room."""
    ancestor = out.resolve()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(
            f"{out}: {'is' if ancestor == out.resolve() else f'is under {ancestor}, which is'} not a folder"
        )
    free = shutil.disk_usage(ancestor).free
    if needed > free:
        raise DataError(f"{out}: the dataset needs about {needed / 2**30:.3g} GiB, {free / 2**30:.3g} GiB free there")


def write_landslide4sense(out: Path | str, n: int, seed: int, size: int = 128) -> Path:
    """Write n scenes as TrainData/img/image_{1..n}.h5 and TrainData/mask/mask_{1..n}.h5."""
    return write_dataset("landslide4sense", out, n, seed, size)


def _write_l4s_scene(out: Path, number: int, scene: Scene, rng: np.random.Generator, _where: None) -> None:
    import h5py

    img_dir, mask_dir = out / "TrainData" / "img", out / "TrainData" / "mask"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(img_dir / f"image_{number}.h5", "w") as f:
        f.create_dataset("img", data=landslide4sense_image(scene))
    with h5py.File(mask_dir / f"mask_{number}.h5", "w") as f:
        f.create_dataset("mask", data=scene.mask)


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _write_bijie_scene(out: Path, number: int, scene: Scene, rng: np.random.Generator, _where: None) -> None:
    landslide = bool(scene.mask.any())
    group, name = ("landslide", f"df{number:04d}.png") if landslide else ("non-landslide", f"n{number:04d}.png")
    _png(out / group / "image" / name, rgb_image(scene, rng))
    _png(out / group / "dem" / name, np.clip(np.rint(scene.dem), 0, 65535).astype(np.uint16))
    if landslide:
        _png(out / group / "mask" / name, scene.mask * np.uint8(255))


def _nepal_splits(n: int) -> list[str]:
    """About 70 / 10 / 20 % train / validation / test, at least one scene each."""
    n_test = max(1, int(round(0.2 * n)))
    n_val = max(1, int(round(0.1 * n)))
    return ["train"] * (n - n_test - n_val) + ["validation"] * n_val + ["test"] * n_test


def _write_nepal_scene(out: Path, number: int, scene: Scene, rng: np.random.Generator, split: str) -> None:
    _png(out / split / "image" / f"{number}.png", rgb_image(scene, rng))
    _png(out / split / "mask" / f"{number}.png", scene.mask * np.uint8(255))
