#!/usr/bin/env python3
"""Write a tiny fake Bijie dataset in the released layout (seeded; no rmaunet import).

    python tests/data/bijie/data.py OUT

landslide/{image,dem,mask}/df{1,2,3}.png: RGB 16×16, 16-bit DEM, masks 0 / 255 (with a
few 100-valued pixels that must binarise to 0). non-landslide/{image,dem}/n{1,2,3,4,5}.png
without masks. df3 is 20×20 (the release mixes sizes): it is resized to the common 16×16.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16
LANDSLIDES = ("df1", "df2", "df3")
NON_LANDSLIDES = ("n1", "n2", "n3", "n4", "n5")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write(root: Path, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    for group, names in (("landslide", LANDSLIDES), ("non-landslide", NON_LANDSLIDES)):
        for name in names:
            size = 20 if name == "df3" else SIZE
            _png(root / group / "image" / f"{name}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            _png(root / group / "dem" / f"{name}.png", rng.integers(450, 2900, (size, size)).astype(np.uint16))
            if group == "landslide":
                mask = np.zeros((size, size), np.uint8)
                mask[3:10, 4:12] = 255
                mask[0, :3] = 100  # below the 127 threshold: background
                _png(root / group / "mask" / f"{name}.png", mask)
    return root


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    write(Path(sys.argv[1]))
