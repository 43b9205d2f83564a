"""`rmaunet data check`: read every file of a dataset and report every problem at once.

Problems make a dataset unusable as it stands (unreadable or truncated files, wrong band
counts, masks of the wrong shape, missing masks, empty folders, tiles of another size).
Notes are worth knowing but handled (NaN pixels are replaced, masks that are not
cleanly binary are binarised, landslide tiles with empty masks).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rmaunet.data.folder import check_data_folder
from rmaunet.data.prepare import READERS, open_reader
from rmaunet.data.reader import TileReader
from rmaunet.datasets import dataset_info
from rmaunet.errors import DataError

__all__ = ["CheckReport", "check_dataset"]


@dataclass
class CheckReport:
    dataset: str
    root: Path
    files_checked: int = 0
    images: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(root: Path | str, dataset: str) -> CheckReport:
    """Every problem and note of a dataset folder; every channel is read, opt-in ones included."""
    root = Path(root)
    info = dataset_info(dataset)
    report = CheckReport(dataset, root)
    if not root.is_dir():
        report.problems.append(f"{root}: data folder not found")
        return report
    try:
        check_data_folder(root)  # what `study plan` refuses before reading: a broken link, a FIFO
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    cls = READERS[dataset]
    splits = cls.available_splits(root) or cls.splits[:1]  # no split: let the reader explain the layout
    shapes: Counter[tuple[int, ...]] = Counter()
    shape_of: dict[Path, tuple[int, ...]] = {}
    for split in splits:
        try:
            r = open_reader(dataset, root, split, bands=info.bands, require_masks=False)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        for path in getattr(r, "orphan_masks", []):
            report.problems.append(f"{path}: mask without an image")
        if split in r.labelled_splits:
            report.problems.extend(r.missing_masks())
        for sample in r:
            report.images += 1
            report.files_checked += 1 + (sample.mask is not None) + (sample.dem is not None)
            try:
                image, mask = r.read(sample)
            except DataError as exc:
                report.problems.append(str(exc))
                continue
            shapes[image.shape] += 1
            shape_of[sample.image] = image.shape
            bad = int(np.count_nonzero(~np.isfinite(image)))
            if bad:
                report.notes.append(f"{sample.image}: {bad} NaN or infinite values (replaced by 0 when loading)")
            if sample.mask is not None and mask is not None:
                _check_mask_values(r, sample.mask, report)
                if sample.landslide and not mask.any():
                    report.notes.append(f"{sample.mask}: a landslide tile with an empty mask")
    if shapes:
        common, _ = shapes.most_common(1)[0]
        if 0 in common[:2]:
            report.problems.append(f"{root}: its tiles are {common[0]}×{common[1]} pixels (empty)")
        for path, shape in shape_of.items():
            if shape != common:
                report.problems.append(f"{path}: shape {shape} differs from the dataset's {common}")
    return report


def _check_mask_values(r: TileReader, path: Path, report: CheckReport) -> None:
    raw = np.asarray(r.read_raw_mask(path))
    values = np.unique(raw)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:6]) + (", …" if len(values) > 6 else "")
        report.notes.append(f"{path}: mask values {shown} are not {{0, 1}} or {{0, 255}} (binarised at the middle)")
