"""Seed statistics: mean ± std with n, and the paired test against the baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from rmaunet.reporting.stats import paired_test, seed_stats


@pytest.mark.parametrize(
    "values, mean, std, n",
    [
        ([0.6, 0.7, 0.8], 0.7, 0.1, 3),
        ([0.5], 0.5, math.nan, 1),
        ([0.5, math.nan, 0.7], 0.6, math.sqrt(0.02), 2),
        ([], math.nan, math.nan, 0),
    ],
)
def test_seed_stats_mean_sample_std_and_count(values: list[float], mean: float, std: float, n: int) -> None:
    # NaN (a metric the row lacks) is not a seed; std is the sample std, undefined for one seed.
    stats = seed_stats(values)
    assert stats.n == n
    np.testing.assert_allclose([stats.mean, stats.std], [mean, std], equal_nan=True)
    assert stats.missing == (n == 0)


def test_paired_test_matches_scipy_over_shared_seeds_only() -> None:
    # Seeds the baseline lacks (3) are ignored; the result equals ttest_rel on the shared pairs.
    base = pd.Series([0.60, 0.61, 0.63], index=[0, 1, 2])
    other = pd.Series([0.64, 0.66, 0.66, 0.99], index=[0, 1, 2, 3])
    test = paired_test(base, other)
    assert test is not None
    assert test.n_shared == 3
    assert test.p_value == pytest.approx(ttest_rel([0.64, 0.66, 0.66], [0.60, 0.61, 0.63]).pvalue)
    assert test.mean_difference == pytest.approx(0.04)


@pytest.mark.parametrize(
    "base, other",
    [
        (pd.Series([0.6], index=[0]), pd.Series([0.7], index=[0])),
        (pd.Series([0.6, 0.7], index=[0, 1]), pd.Series([0.7, 0.8], index=[2, 3])),
        (pd.Series([0.6, 0.7], index=[0, 1]), pd.Series([0.7, math.nan], index=[0, 1])),
    ],
)
def test_paired_test_needs_two_shared_seeds(base: pd.Series, other: pd.Series) -> None:
    # With fewer than two pairs there is no test, and none is pretended.
    assert paired_test(base, other) is None


@pytest.mark.parametrize("shift, p, significant", [(0.0, 1.0, False), (0.02, 0.0, True)])
def test_paired_test_constant_difference(shift: float, p: float, significant: bool) -> None:
    # Zero-variance differences have no t statistic: identical rows are p = 1, a constant shift p = 0.
    base = pd.Series([0.6, 0.65, 0.7], index=[0, 1, 2])
    test = paired_test(base, base + shift)
    assert test is not None and test.p_value == p and test.significant is significant
