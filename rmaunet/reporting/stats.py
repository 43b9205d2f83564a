"""Statistics for report cells: mean ± std over seeds, paired tests against a baseline with a
Holm correction, and a bootstrap interval over test tiles for rows trained on one seed."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The split's own scoring rule (metrics.py, numpy only), not a copy of it.
from rmaunet.metrics import _segmentation_from_counts

__all__ = [
    "SeedStats",
    "PairedTest",
    "BootstrapInterval",
    "seed_stats",
    "grouped_seed_stats",
    "paired_test",
    "grouped_paired_tests",
    "holm_adjust",
    "detectable_difference",
    "tile_bootstrap",
    "tile_score",
    "SIGNIFICANCE_LEVEL",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_METRICS",
]

SIGNIFICANCE_LEVEL = 0.05
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
# Metrics a tile's [tp, fp, fn] determine; mIoU also needs the background's true negatives.
BOOTSTRAP_METRICS = ("f1", "iou", "precision", "recall")


@dataclass(frozen=True)
class SeedStats:
    """One metric of one table row over its seeds (NaN values, e.g. a task without that head, dropped)."""

    mean: float
    std: float  # sample standard deviation (ddof=1); NaN with fewer than two seeds
    n: int

    @property
    def missing(self) -> bool:
        return self.n == 0


@dataclass(frozen=True)
class PairedTest:
    """Two-sided paired t-test of a row against the baseline over the seeds both have."""

    p_value: float  # NaN when the differences have no variance (no t statistic, so no p)
    n_shared: int
    mean_difference: float  # row minus baseline, same unit as the inputs
    std_difference: float = math.nan  # sample std (ddof=1) of the per-seed differences

    @property
    def no_variance(self) -> bool:
        """The same difference on every seed: a t-test is undefined, and n = 2 or 3 equal
        differences are no evidence of a real one (identical runs give them too)."""
        return math.isnan(self.p_value)

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE_LEVEL


def seed_stats(values: pd.Series | np.ndarray | list[float]) -> SeedStats:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return SeedStats(math.nan, math.nan, 0)
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return SeedStats(float(arr.mean()), std, int(arr.size))


def grouped_seed_stats(values: np.ndarray, bounds: np.ndarray) -> list[SeedStats]:
    """`seed_stats` of each slice `values[bounds[i]:bounds[i + 1]]`, for all slices at once.

    A table of 50,000 rows called seed_stats 50,000 times per column; here the slices with
    the same number of values are stacked into one array and reduced along its rows, which
    numpy sums exactly as it sums one slice, so every mean and std is the same to the last bit.
    """
    values = np.asarray(values, dtype=float)
    bounds = np.asarray(bounds, dtype=np.intp)
    groups = len(bounds) - 1
    present = ~np.isnan(values)
    kept = values[present]
    counts = np.bincount(np.repeat(np.arange(groups), np.diff(bounds))[present], minlength=groups)
    starts = np.cumsum(counts) - counts
    mean, std = np.full(groups, math.nan), np.full(groups, math.nan)
    for n in np.unique(counts[counts > 0]):
        which = np.flatnonzero(counts == n)
        block = kept[starts[which, None] + np.arange(n)]
        mean[which] = block.mean(axis=1)
        if n > 1:
            std[which] = block.std(axis=1, ddof=1)
    return [SeedStats(float(m), float(s), int(c)) for m, s, c in zip(mean.tolist(), std.tolist(), counts.tolist())]


def paired_test(baseline: pd.Series, other: pd.Series) -> PairedTest | None:
    """Paired test over shared seeds (both Series indexed by seed, each seed once); None with fewer than two pairs.

    Pairing by seed removes the seed-to-seed variance both rows share (same data order and
    initialisation), which is what makes a small ablation difference detectable at all.
    """
    other = other.sort_index()
    return grouped_paired_tests(baseline, other.to_numpy(float), other.index.to_numpy(), np.array([0, len(other)]))[0]


def grouped_paired_tests(
    baseline: pd.Series, values: np.ndarray, seeds: np.ndarray, bounds: np.ndarray
) -> list[PairedTest | None]:
    """`paired_test(baseline, …)` of each slice `values[bounds[i]:bounds[i + 1]]` (with the seeds
    `seeds[…]`, each seed at most once per slice, ascending), for all slices at once.

    A table of 3,000 rows ran 3,000 tests of a pandas join and a scipy call each (minutes for
    50,000 results rows); here the slices with the same number of shared seeds are stacked and
    tested in one call, each row reduced as numpy reduces one slice, so every p is the same.
    """
    values = np.asarray(values, dtype=float)
    bounds = np.asarray(bounds, dtype=np.intp)
    groups = len(bounds) - 1
    where = pd.Index(baseline.index).get_indexer(np.asarray(seeds))  # -1: a seed the baseline lacks
    base_values = np.where(where >= 0, baseline.to_numpy(float)[where], math.nan)
    shared = ~np.isnan(values) & ~np.isnan(base_values)
    other, base = values[shared], base_values[shared]
    counts = np.bincount(np.repeat(np.arange(groups), np.diff(bounds))[shared], minlength=groups)
    starts = np.cumsum(counts) - counts
    tests: list[PairedTest | None] = [None] * groups
    for n in np.unique(counts[counts > 1]):
        which = np.flatnonzero(counts == n)
        pairs = starts[which, None] + np.arange(n)
        diffs = other[pairs] - base[pairs]
        mean, std = diffs.mean(axis=1), diffs.std(axis=1, ddof=1)
        # A constant difference has zero variance and an undefined t statistic: no p at all
        # (p = 0 would read as proof from two identical shifts).
        constant = np.ptp(diffs, axis=1) <= 1e-12 * np.maximum(1.0, np.abs(diffs).max(axis=1))
        p = _paired_p_values(other[pairs], base[pairs])
        for k, group in enumerate(which.tolist()):
            if constant[k]:
                tests[group] = PairedTest(math.nan, int(n), float(mean[k]), 0.0)
            else:
                tests[group] = PairedTest(float(p[k]), int(n), float(mean[k]), float(std[k]))
    return tests


def _paired_p_values(other: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test p-value of each row of `other` against the same row of `base`."""
    # Imported here: scipy.stats costs ~0.5 s and only the paired tests need it.
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows of constant differences: their p is not used
        return np.asarray(ttest_rel(other, base, axis=1).pvalue, dtype=float)


def detectable_difference(tests: Sequence[PairedTest], level: float = SIGNIFICANCE_LEVEL) -> float:
    """The smallest mean difference a table's paired tests could call significant, from the
    spread they observed: t(1 − level / 2m, n − 1) · s / √n, where m is the number of
    comparisons (Holm's first, strictest step), n the fewest shared seeds and s the root
    mean square of the per-seed differences' standard deviations. NaN without a spread.

    What a "not significant" row is worth: a real effect smaller than this could not have
    been told apart from seed noise with these seeds.
    """
    spread = [t for t in tests if not t.no_variance and not math.isnan(t.std_difference)]
    if not spread:
        return math.nan
    from scipy.stats import t as student_t

    n = min(t.n_shared for t in spread)
    s = math.sqrt(float(np.mean([t.std_difference**2 for t in spread])))
    critical = float(student_t.ppf(1.0 - level / (2 * len(tests)), n - 1))
    return critical * s / math.sqrt(n)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN and is not counted).

    The k-th smallest of m p-values is multiplied by m - k + 1, then made monotone, so that
    "adjusted p < alpha" controls the family-wise error rate over the table's comparisons.
    """
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, math.nan)
    present = np.flatnonzero(~np.isnan(values))
    order = present[np.argsort(values[present], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * values[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class BootstrapInterval:
    """A percentile bootstrap interval of one metric, resampling test tiles with replacement."""

    low: float
    high: float
    tiles: int
    resamples: int = BOOTSTRAP_RESAMPLES
    level: float = BOOTSTRAP_LEVEL
    regions: int | None = None  # resampled by region (a grouped split): how many; None: by tile


def tile_bootstrap(
    tile_counts: np.ndarray | Sequence[Sequence[float]],
    metric: str,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> BootstrapInterval | None:
    """Percentile interval of `metric` over test tiles ([tp, fp, fn] per tile); None without tiles.

    Each resample draws as many tiles as the split has, sums their pixel counts and scores
    the sums the way the split was scored (metrics.py: counts summed over the split), so the
    interval shows how much the number depends on which tiles happened to be in the test split.
    With `groups` (each tile's region, from a grouped split) it draws as many regions as the
    split has instead, each with all its tiles: neighbouring tiles are not independent. It
    does not cover training randomness: that takes several seeds.
    """
    counts = _tile_array(tile_counts, metric)
    if counts.size == 0:
        return None
    rng = np.random.default_rng(seed)
    if groups is not None:
        if len(groups) != len(counts):
            raise ValueError(f"{len(groups)} tile groups for {len(counts)} tiles")
        _, region = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        counts = np.stack([np.bincount(region, weights=counts[:, k]) for k in range(3)], axis=1)
    picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
    scores = _score(counts[picks].sum(axis=1), metric)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    regions = len(counts) if groups is not None else None
    return BootstrapInterval(float(low), float(high), len(tile_counts), resamples, level, regions)


def tile_score(tile_counts: np.ndarray | Sequence[Sequence[float]], metric: str) -> float:
    """`metric` of the counts summed over all tiles: the split's value the bootstrap resamples."""
    counts = _tile_array(tile_counts, metric)
    return float(_score(counts.sum(axis=0, keepdims=True), metric)[0]) if counts.size else math.nan


def _tile_array(tile_counts: np.ndarray | Sequence[Sequence[float]], metric: str) -> np.ndarray:
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"no tile bootstrap for {metric!r} (choose from {', '.join(BOOTSTRAP_METRICS)})")
    counts = np.asarray(tile_counts, dtype=float)
    if counts.size and (counts.ndim != 2 or counts.shape[1] != 3):
        raise ValueError(f"tile counts must be [tp, fp, fn] per tile, got shape {counts.shape}")
    return counts


def _score(sums: np.ndarray, metric: str) -> np.ndarray:
    """`metric` per row of [tp, fp, fn] sums, by the scoring rule of metrics.py (the background is not needed)."""
    tp, fp, fn = sums.T
    return _segmentation_from_counts(tp, fp, fn, np.zeros_like(tp))[metric]
