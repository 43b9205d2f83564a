"""Deterministic, seeded splits stratified by "has a landslide"."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split"]


def stratified_split(has_landslide: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): about `fraction` of each stratum goes to held_out."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for value in (False, True):
        idx = np.flatnonzero(has_landslide == value)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
