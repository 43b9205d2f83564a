"""Table II's statistics of a dataset on disk, computed tile by tile (constant memory)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rmaunet.data.prepare import READERS, open_reader
from rmaunet.datasets import dataset_info
from rmaunet.errors import aligned_columns

__all__ = ["SplitStats", "DatasetStats", "dataset_stats", "format_stats"]


@dataclass
class SplitStats:
    split: str
    images: int = 0
    labelled_images: int = 0  # images with a mask (or known to be landslide-free)
    landslide_images: int = 0
    landslide_pixels: int = 0
    labelled_pixels: int = 0
    nan_pixels: int = 0  # non-finite values (all bands), replaced when loading
    nan_images: int = 0

    @property
    def landslide_image_ratio(self) -> float | None:
        return self.landslide_images / self.labelled_images if self.labelled_images else None

    @property
    def landslide_pixel_ratio(self) -> float | None:
        return self.landslide_pixels / self.labelled_pixels if self.labelled_pixels else None


@dataclass
class DatasetStats:
    dataset: str
    root: str
    height: int
    width: int
    bands: int
    splits: list[SplitStats] = field(default_factory=list)

    def total(self) -> SplitStats:
        total = SplitStats("all")
        for s in self.splits:
            for name in (
                "images",
                "labelled_images",
                "landslide_images",
                "landslide_pixels",
                "labelled_pixels",
                "nan_pixels",
                "nan_images",
            ):
                setattr(total, name, getattr(total, name) + getattr(s, name))
        return total

    def to_dict(self) -> dict:
        total = self.total()
        return {
            "dataset": self.dataset,
            "root": self.root,
            "images": total.images,
            "height": self.height,
            "width": self.width,
            "bands": self.bands,
            "landslide_image_ratio": total.landslide_image_ratio,
            "landslide_pixel_ratio": total.landslide_pixel_ratio,
            "labelled_images": total.labelled_images,
            "nan_pixels": total.nan_pixels,
            "nan_images": total.nan_images,
            "splits": {
                s.split: {
                    **asdict(s),
                    "landslide_image_ratio": s.landslide_image_ratio,
                    "landslide_pixel_ratio": s.landslide_pixel_ratio,
                }
                for s in self.splits
            },
        }


def dataset_stats(root: Path | str, dataset: str) -> DatasetStats:
    """Image count, size, bands, landslide image and pixel ratios (and NaN counts) per
    split and overall, over the channels read by default (Bijie: RGB). Ratios count labelled
    images only (masks optional in some splits)."""
    cls = READERS[dataset_info(dataset).name]
    splits = cls.available_splits(root)
    if not splits:
        # Constructing the reader of the first split raises the layout's own message.
        open_reader(dataset, root, cls.splits[0])
    result: DatasetStats | None = None
    for split in splits:
        r = open_reader(dataset, root, split, require_masks=False)
        s = SplitStats(split)
        for sample in r:
            image, mask = r.read(sample)
            if result is None:
                result = DatasetStats(dataset, str(root), image.shape[0], image.shape[1], image.shape[2])
            s.images += 1
            bad = int(np.count_nonzero(~np.isfinite(image)))
            s.nan_pixels += bad
            s.nan_images += bool(bad)
            if mask is not None:
                s.labelled_images += 1
                count = int(np.count_nonzero(mask))
                s.landslide_images += bool(count)
                s.landslide_pixels += count
                s.labelled_pixels += mask.size
        assert result is not None
        result.splits.append(s)
    assert result is not None
    return result


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %" if value >= 0.1 else f"{100 * value:.2f} %"


def format_stats(stats: DatasetStats) -> str:
    """A plain-text table in Table II's columns, one row per split and a total."""
    header = ("split", "images", "image size", "landslide images", "landslide pixels", "NaN pixels")
    size = f"{stats.height}×{stats.width}×{stats.bands}"
    rows = [
        (
            s.split,
            str(s.images),
            size,
            _percent(s.landslide_image_ratio),
            _percent(s.landslide_pixel_ratio),
            str(s.nan_pixels),
        )
        for s in stats.splits + ([stats.total()] if len(stats.splits) > 1 else [])
    ]
    return "\n".join([f"{stats.dataset} ({stats.root})", *aligned_columns([header, *rows])])
