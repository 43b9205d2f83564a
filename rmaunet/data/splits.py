"""Deterministic, seeded splits stratified by "has a landslide"."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split"]


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
