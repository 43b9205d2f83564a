#!/usr/bin/env python3
"""Write a tiny fake Nepal dataset (image / mask pairs per split; seeded; no rmaunet import).

    python tests/data/nepal/data.py OUT

train/image/{1,2,3}.png with train/mask/{1,2,3}.png (0 / 255), validation/ as TIFF
(the image channels-first 3×H×W, the mask 0 / 1) and test/ as NPY. 16×16 RGB tiles,
every tile holds a small landslide.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

SIZE = 16
SPLITS = {"train": ("png", ("1", "2", "3")), "validation": ("tif", ("4",)), "test": ("npy", ("5", "6"))}


def _save(path: Path, array: np.ndarray, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        Image.fromarray(array).save(path)
    elif kind == "tif":
        tifffile.imwrite(path, array)
    else:
        np.save(path, array)


def write(root: Path, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, (kind, names) in SPLITS.items():
        for name in names:
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[2:5, 6:9] = 1
            if kind == "tif":
                image = np.moveaxis(image, -1, 0)  # channels-first, as some GIS tools write
            if kind == "png":
                mask = mask * 255
            suffix = f".{kind}"
            _save(root / split / "image" / f"{name}{suffix}", image, kind)
            _save(root / split / "mask" / f"{name}{suffix}", mask, kind)
    return root


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    write(Path(sys.argv[1]))
