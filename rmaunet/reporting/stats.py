"""Seed statistics for report cells: mean ± std with n, and a paired test against a baseline."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SeedStats", "PairedTest", "seed_stats", "paired_test", "SIGNIFICANCE_LEVEL"]

SIGNIFICANCE_LEVEL = 0.05


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

    p_value: float
    n_shared: int
    mean_difference: float  # row minus baseline, same unit as the inputs

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


def paired_test(baseline: pd.Series, other: pd.Series) -> PairedTest | None:
    """Paired test over shared seeds (both Series indexed by seed); None with fewer than two pairs.

    Pairing by seed removes the seed-to-seed variance both rows share (same data order and
    initialisation), which is what makes a small ablation difference detectable at all.
    """
    both = pd.concat({"base": baseline, "other": other}, axis=1, join="inner").dropna()
    n = len(both)
    if n < 2:
        return None
    diffs = both["other"].to_numpy(float) - both["base"].to_numpy(float)
    mean_diff = float(diffs.mean())
    # A constant difference has zero variance and an undefined t statistic; report it as what it is:
    # no difference at all (p = 1) or the same shift on every seed (p = 0).
    if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):
        return PairedTest(1.0 if abs(mean_diff) <= 1e-12 else 0.0, n, mean_diff)
    from scipy.stats import ttest_rel  # imported here: scipy.stats costs ~0.5 s and only tests need it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel(both["other"].to_numpy(float), both["base"].to_numpy(float)).pvalue)
    return PairedTest(p, n, mean_diff)
