"""Band sets (Table VI) and band engineering (Table V).

Skeleton version: only the 14 original Landslide4Sense bands; the engineered bands
15-26 arrive with the data layer.
"""

from __future__ import annotations

import numpy as np

from rmaunet.errors import ConfigError

__all__ = ["ORIGINAL_BANDS", "resolve_bands", "engineer_bands"]

ORIGINAL_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem")
BAND_SETS = {"14": ORIGINAL_BANDS}


def resolve_bands(spec: str) -> tuple[str, ...]:
    """A named set ("14") or comma-separated band names -> ordered band names."""
    if spec in BAND_SETS:
        return BAND_SETS[spec]
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in ORIGINAL_BANDS]
    if unknown:
        raise ConfigError(f"bands: unknown band {unknown[0]!r} (known: {', '.join(ORIGINAL_BANDS)}; sets: {', '.join(BAND_SETS)})")
    return names


def engineer_bands(images: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(N, H, W, 14) originals -> (N, H, W, len(names)) in the order of `names`."""
    index = [ORIGINAL_BANDS.index(n) for n in names]
    return np.ascontiguousarray(images[..., index], dtype=np.float32)
