"""Deterministic, seeded splits: per tile, stratified by "has a landslide" (the paper's), or
by region when a config names each tile's region (`split_groups`), so that neighbouring
tiles of one scene never sit on both sides of a split."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmaunet.errors import DataError

__all__ = ["stratified_split", "grouped_split", "holdout_split", "tile_groups"]


def stratified_split(has_landslide: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (keep, held_out) with round(fraction · n) held out (at least one of
    two or more), spread over the two strata in proportion to their sizes (largest
    remainder), each stratum drawn with its own seeded permutation."""
    labels = np.asarray(has_landslide).astype(bool).reshape(-1)
    n = len(labels)
    n_held = int(round(fraction * n))
    if n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    strata = [np.flatnonzero(~labels), np.flatnonzero(labels)]
    exact = [fraction * len(s) for s in strata]
    quota = [int(np.floor(e)) for e in exact]
    # Hand the remaining held-out places to the strata with the largest remainders.
    for i in sorted(range(2), key=lambda i: (exact[i] - quota[i], len(strata[i])), reverse=True):
        if sum(quota) >= n_held:
            break
        if quota[i] < len(strata[i]):
            quota[i] += 1
    while sum(quota) > n_held:  # the minimum of one can only lower the total when n is tiny
        i = int(np.argmax(quota))
        quota[i] -= 1
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for idx, q in zip(strata, quota):
        idx = idx[rng.permutation(len(idx))]
        held.append(idx[:q])
        keep.append(idx[q:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def grouped_split(groups: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (keep, held_out) where every group lies wholly on one side: groups in a
    seeded order are held out while that brings the held-out count closer to fraction · n
    (at least one group held out and one kept). Not stratified: a region's tiles go together."""
    names = np.asarray([str(g) for g in groups])
    unique = np.unique(names)
    if len(unique) < 2:
        raise DataError(f"split_groups: {len(unique)} region(s) found; holding regions out needs at least two")
    target = fraction * len(names)
    held_groups: list[str] = []
    count = 0
    for name in unique[np.random.default_rng(seed).permutation(len(unique))]:
        size = int(np.sum(names == name))
        if held_groups and (abs(count + size - target) >= abs(count - target) or len(held_groups) + 1 == len(unique)):
            continue
        held_groups.append(str(name))
        count += size
    held = np.isin(names, held_groups)
    return np.flatnonzero(~held), np.flatnonzero(held)


def holdout_split(
    has_landslide: np.ndarray, fraction: float, seed: int, groups: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The split a config asks for: by region when `groups` are given, else per tile, stratified."""
    if groups is None:
        return stratified_split(has_landslide, fraction, seed)
    return grouped_split(groups, fraction, seed)


def tile_groups(paths: Sequence[Path | str], rule: str) -> list[str]:
    """Each tile's region by a config's `split_groups` rule, from its image file's name:
    "regex:<pattern>" (the pattern's first group, else its whole match) or "csv:<path>"
    (a CSV with columns `file` and `group`, `file` being the image file name). A tile the
    rule does not place is a DataError naming it."""
    kind, _, value = rule.partition(":")
    names = [Path(p).name for p in paths]
    if kind == "regex":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise DataError(f"split_groups: {value!r} is not a regular expression ({exc})") from None
        out = []
        for name in names:
            found = pattern.search(name)
            if found is None:
                raise DataError(f"split_groups: {value!r} finds no region in the file name {name!r}")
            out.append(found.group(1) if pattern.groups else found.group(0))
        return out
    table = _read_group_csv(Path(value))
    missing = [name for name in names if name not in table]
    if missing:
        raise DataError(f"split_groups: {value} gives no group for {missing[0]!r} ({len(missing)} tiles without one)")
    return [table[name] for name in names]


def _read_group_csv(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"file", "group"} <= set(reader.fieldnames):
                raise DataError(f"split_groups: {path} needs the columns file and group")
            return {Path(row["file"]).name: row["group"] for row in reader}
    except OSError as exc:
        raise DataError(f"split_groups: cannot read {path} ({exc.strerror or exc})") from None
