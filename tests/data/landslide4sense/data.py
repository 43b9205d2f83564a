#!/usr/bin/env python3
"""Write a tiny fake Landslide4Sense in the released layouts (seeded; no rmaunet import).

    python tests/data/landslide4sense/data.py OUT [--huggingface]

Official layout: TrainData/img/image_{1,2,10}.h5 (key 'img', 16×16×14 float64, one NaN
and one +inf pixel in image_2), TrainData/mask/mask_{1,2,10}.h5 (key 'mask', uint8
{0, 1}; image_2 has no landslide), ValidData/img/image_1.h5 without a mask. With
--huggingface the same tiles go to images/{train,validation}/ and annotations/train/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

SIZE = 16
BANDS = 14
TRAIN_NUMBERS = (1, 2, 10)  # 10 after 2: files must be sorted numerically


def tile(rng: np.random.Generator, number: int) -> tuple[np.ndarray, np.ndarray]:
    image = rng.uniform(0.0, 6.4, (SIZE, SIZE, BANDS))  # float64, as released
    image[..., 0] = number  # lets a test see the order tiles were read in
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if number != 2:
        mask[4:9, 3:7] = 1
    if number == 2:
        image[0, 0, 3] = np.nan
        image[5, 5, 7] = np.inf
    return image, mask


def write(root: Path, *, huggingface: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    if huggingface:
        folders = {
            "train": (root / "images/train", root / "annotations/train"),
            "validation": (root / "images/validation", None),
        }
    else:
        folders = {
            "train": (root / "TrainData/img", root / "TrainData/mask"),
            "validation": (root / "ValidData/img", None),
        }
    numbers = {"train": TRAIN_NUMBERS, "validation": (1,)}
    for split, (img_dir, mask_dir) in folders.items():
        img_dir.mkdir(parents=True, exist_ok=True)
        for number in numbers[split]:
            image, mask = tile(rng, number)
            with h5py.File(img_dir / f"image_{number}.h5", "w") as f:
                f.create_dataset("img", data=image)
            if mask_dir is not None:
                mask_dir.mkdir(parents=True, exist_ok=True)
                with h5py.File(mask_dir / f"mask_{number}.h5", "w") as f:
                    f.create_dataset("mask", data=mask)
    return root


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    write(Path(sys.argv[1]), huggingface="--huggingface" in sys.argv[2:])
