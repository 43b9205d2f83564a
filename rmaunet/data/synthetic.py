"""Synthetic scenes that behave like the real datasets, written in each dataset's layout.

A scene is built from physics, not noise: a fractal terrain (DEM) gives slope; water
pools in the lowest ground; vegetation grows where it is neither steep nor wet; clouds
float over some scenes. Landslides are irregular scars started on steep slopes and
elongated downhill, with the spectral change a fresh scar shows (vegetation loss: NIR
down, red and SWIR up, brighter visible bands). Pixel values are mixtures of endmember
spectra plus sensor noise, at the scale of the Landslide4Sense release (roughly 0 to 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

__all__ = ["SceneParams", "PARAMS", "make_scene", "write_landslide4sense"]

# Sentinel-2 bands B1..B12 (Landslide4Sense order), reflectance-like endmember spectra.
#                      B1    B2    B3    B4    B5    B6    B7    B8    B9    B10   B11   B12
_VEGETATION = np.array([0.03, 0.04, 0.07, 0.04, 0.10, 0.28, 0.34, 0.38, 0.36, 0.01, 0.18, 0.09])
_SOIL = np.array([0.08, 0.10, 0.13, 0.17, 0.20, 0.23, 0.25, 0.26, 0.27, 0.02, 0.32, 0.26])
_WATER = np.array([0.07, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03, 0.02, 0.02, 0.00, 0.01, 0.01])
_SCAR = np.array([0.13, 0.17, 0.21, 0.26, 0.28, 0.29, 0.30, 0.30, 0.31, 0.03, 0.40, 0.34])
_CLOUD = np.array([0.55, 0.58, 0.58, 0.60, 0.60, 0.61, 0.62, 0.62, 0.55, 0.20, 0.45, 0.35])
# Real L4S values sit roughly in 0..6: reflectance times this scale lands there.
_SCALE = 10.0


@dataclass(frozen=True)
class SceneParams:
    """Dataset-level statistics a generator aims at (the paper's Table II)."""

    landslide_image_ratio: float
    landslide_pixel_ratio: float  # over all pixels of the dataset


PARAMS = {
    "landslide4sense": SceneParams(0.58, 0.023),
    "bijie": SceneParams(0.27, 0.039),
    "nepal": SceneParams(1.0, 0.008),
}


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    field -= field.min()
    return field / max(field.max(), 1e-12)


def _terrain(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fractal terrain in metres: octaves of smoothed noise, large scales dominant."""
    dem = sum(_smooth_noise(rng, size, size / 2**k) / 2**k for k in range(1, 6))
    dem = (dem - dem.min()) / max(np.ptp(dem), 1e-12)
    relief = rng.uniform(300.0, 1500.0)
    return (rng.uniform(200.0, 2000.0) + relief * dem).astype(np.float64)


def _slope_degrees(dem: np.ndarray, pixel_m: float = 10.0) -> np.ndarray:
    gy, gx = np.gradient(dem, pixel_m)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


def _scars(rng: np.random.Generator, dem: np.ndarray, slope: np.ndarray, target_fraction: float) -> np.ndarray:
    """Irregular scars seeded on the steepest ground, grown downhill until the target area."""
    size = dem.shape[0]
    mask = np.zeros(dem.shape, bool)
    gy, gx = np.gradient(dem)
    target = max(int(target_fraction * size * size), 6)
    steep = np.argwhere(slope >= np.quantile(slope, 0.8))
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(12):
        if mask.sum() >= target:
            break
        cy, cx = steep[rng.integers(len(steep))]
        # Elongate along the downhill direction, with a rough, irregular outline.
        angle = np.arctan2(-gy[cy, cx], -gx[cy, cx])
        length = rng.uniform(4, 14) * size / 128
        width = length * rng.uniform(0.3, 0.6)
        dy, dx = yy - cy, xx - cx
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        ellipse = (along / length) ** 2 + (across / width) ** 2
        rough = _smooth_noise(rng, size, 1.5) - 0.5
        mask |= (ellipse + 0.8 * rough) < 1.0
    return mask


def make_scene(
    rng: np.random.Generator, size: int, landslide: bool, pixel_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """One Landslide4Sense-like scene: (size, size, 14) float32 image and (size, size) uint8 mask."""
    dem = _terrain(rng, size)
    slope = _slope_degrees(dem)
    wet = dem <= np.quantile(dem, rng.uniform(0.0, 0.12))
    steepness = np.clip(slope / max(slope.max(), 1e-6), 0, 1)
    vegetation = np.clip(0.35 + 0.65 * _smooth_noise(rng, size, 6) - 0.5 * steepness, 0, 1)
    vegetation[wet] = 0.0
    mask = _scars(rng, dem, slope, pixel_fraction) if landslide else np.zeros((size, size), bool)

    fractions = {
        "vegetation": vegetation,
        "soil": 1.0 - vegetation,
        "water": wet.astype(float),
        "scar": mask.astype(float),
    }
    fractions["soil"][wet] = 0.0
    # A scar replaces what was there, with a soft edge of mixed pixels around it.
    edge = ndimage.gaussian_filter(mask.astype(float), 0.7)
    for name in ("vegetation", "soil", "water"):
        fractions[name] = fractions[name] * (1.0 - edge)
    fractions["scar"] = edge
    spectra = {"vegetation": _VEGETATION, "soil": _SOIL, "water": _WATER, "scar": _SCAR}
    # Illumination varies with terrain aspect (hillshade), so brightness alone is ambiguous.
    gy, gx = np.gradient(dem, 10.0)
    shade = np.clip(0.85 + 0.3 * (gx - gy) / (np.hypot(gx, gy) + 1.0), 0.6, 1.2)
    reflectance = sum(fractions[k][..., None] * spectra[k] for k in spectra) * shade[..., None]
    reflectance *= rng.uniform(0.85, 1.15, size=12)  # per-scene atmosphere / season
    if rng.random() < 0.2:  # thin clouds over part of the scene
        cloud = np.clip(_smooth_noise(rng, size, 10) * 1.6 - 0.9, 0, 0.6)
        reflectance = reflectance * (1 - cloud[..., None]) + cloud[..., None] * _CLOUD
    reflectance += rng.normal(0.0, 0.006, reflectance.shape)  # sensor noise
    image = np.concatenate(
        [
            _SCALE * reflectance,
            (slope / 20.0)[..., None],  # slope band: degrees scaled to the release's range
            ((dem - 200.0) / 1000.0)[..., None],  # ALOS PALSAR DEM, scaled likewise
        ],
        axis=-1,
    )
    return image.astype(np.float32), mask.astype(np.uint8)


def write_landslide4sense(out: Path | str, n: int, seed: int, size: int = 128) -> Path:
    """Write n scenes as TrainData/img/image_{1..n}.h5 and TrainData/mask/mask_{1..n}.h5."""
    out = Path(out)
    params = PARAMS["landslide4sense"]
    rng = np.random.default_rng(seed)
    img_dir, mask_dir = out / "TrainData" / "img", out / "TrainData" / "mask"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    # An exact share of landslide images, in shuffled order.
    n_slide = int(round(params.landslide_image_ratio * n))
    has_slide = rng.permutation(np.arange(n) < n_slide)
    per_image = params.landslide_pixel_ratio / max(params.landslide_image_ratio, 1e-9)
    for i in range(n):
        fraction = per_image * rng.uniform(0.5, 1.5)
        image, mask = make_scene(rng, size, bool(has_slide[i]), fraction)
        with h5py.File(img_dir / f"image_{i + 1}.h5", "w") as f:
            f.create_dataset("img", data=image)
        with h5py.File(mask_dir / f"mask_{i + 1}.h5", "w") as f:
            f.create_dataset("mask", data=mask)
    return out
