"""Seed statistics, the paired test against the baseline, Holm's correction and the tile bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from rmaunet.reporting.stats import (
    detectable_difference,
    grouped_seed_stats,
    holm_adjust,
    paired_test,
    seed_stats,
    tile_bootstrap,
)


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


def test_grouped_seed_stats_equal_seed_stats_of_each_slice_to_the_bit() -> None:
    # Slices of 0 to 300 values (numpy sums more than 8, and more than 128, in blocks), NaN among
    # them, at three scales: every mean, std and n is what seed_stats gives that slice alone.
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(0, 6, 300), rng.integers(0, 300, 60)])
    values = rng.normal(0.6, 0.1, sizes.sum()) * rng.choice([1e-3, 1.0, 1e3], sizes.sum())
    values[rng.random(values.size) < 0.1] = math.nan
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    expected = [seed_stats(values[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    got = grouped_seed_stats(values, bounds)
    # assert_array_equal: exact equality, NaN equal to NaN
    np.testing.assert_array_equal([(s.n, s.mean, s.std) for s in got], [(s.n, s.mean, s.std) for s in expected])


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


@pytest.mark.parametrize("shift", [0.0, 0.02])
def test_paired_test_constant_difference_has_no_p(shift: float) -> None:
    # Zero-variance differences have no t statistic: no p (not 0, not 1), never significant.
    base = pd.Series([0.6, 0.65, 0.7], index=[0, 1, 2])
    test = paired_test(base, base + shift)
    assert test is not None and test.no_variance and math.isnan(test.p_value) and not test.significant
    assert test.mean_difference == pytest.approx(shift)


# The smallest detectable difference is the one whose paired t reaches the Holm-corrected
# critical value: a shift of exactly that size over the observed spread gives p = α / m.
@pytest.mark.parametrize("m", [1, 2, 8])
def test_detectable_difference_is_where_a_paired_test_turns_significant(m: int) -> None:
    base = pd.Series([0.60, 0.62, 0.65], index=[0, 1, 2])
    noise = pd.Series([0.004, -0.006, 0.002], index=[0, 1, 2])
    spread = paired_test(base, base + noise)
    assert spread is not None
    d = detectable_difference([spread] * m)
    at_d = paired_test(base, base + noise - noise.mean() + d)
    assert at_d is not None and at_d.p_value == pytest.approx(0.05 / m, rel=1e-6)
    # More comparisons demand more; a table of no-variance tests has no spread to judge by.
    assert d > detectable_difference([spread]) or m == 1
    assert math.isnan(detectable_difference([paired_test(base, base + 0.01)]))


@pytest.mark.parametrize(
    "raw, adjusted",
    [
        # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then made non-decreasing: 0.04 -> 0.06
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.3, 0.6], [0.6, 0.6]),  # 2 * 0.3 and 1 * 0.6
        ([0.7, 0.2], [0.7, 0.4]),  # the input order is kept
        ([0.6, 0.9], [1.0, 1.0]),  # 2 * 0.6 capped at 1, and 0.9 may not fall below it
        ([0.02], [0.02]),  # one comparison: nothing to correct
        ([0.01, math.nan, 0.02], [0.02, math.nan, 0.02]),  # a missing test is not counted
    ],
)
def test_holm_adjust_matches_the_step_down_rule(raw: list[float], adjusted: list[float]) -> None:
    # The k-th smallest of m p-values is multiplied by m - k + 1, made monotone and capped at 1.
    np.testing.assert_allclose(holm_adjust(raw), adjusted, equal_nan=True)


def _tiles(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tp = rng.integers(0, 400, n)
    return np.stack([tp, rng.integers(0, 150, n), rng.integers(0, 150, n)], axis=1)


def test_tile_bootstrap_is_seeded_and_brackets_the_split_score() -> None:
    # The same counts give the same interval; it holds the F1 of the summed counts and narrows with more tiles.
    counts = _tiles(200)
    first, again = tile_bootstrap(counts, "f1"), tile_bootstrap(counts, "f1")
    assert first == again and first is not None and first.tiles == 200 and first.resamples == 1000
    tp, fp, fn = counts.sum(axis=0)
    assert first.low < 2 * tp / (2 * tp + fp + fn) < first.high
    wider = tile_bootstrap(counts[:20], "f1")
    assert wider is not None and wider.high - wider.low > 2 * (first.high - first.low)


@pytest.mark.parametrize("metric", ["f1", "iou", "precision", "recall"])
def test_tile_bootstrap_of_identical_tiles_has_no_width(metric: str) -> None:
    # Every resample of identical tiles scores the same: the interval is that one value.
    interval = tile_bootstrap([[30, 10, 20]] * 50, metric)
    value = {"f1": 60 / 90, "iou": 30 / 60, "precision": 30 / 40, "recall": 30 / 50}[metric]
    assert interval is not None and interval.low == pytest.approx(value) and interval.high == pytest.approx(value)


def test_tile_bootstrap_refuses_what_tile_counts_cannot_give() -> None:
    # mIoU needs background counts the tiles do not carry; a malformed list is refused, an empty one has no interval.
    with pytest.raises(ValueError, match="no tile bootstrap for 'miou'"):
        tile_bootstrap([[1, 2, 3]], "miou")
    with pytest.raises(ValueError, match=r"\[tp, fp, fn\] per tile"):
        tile_bootstrap([[1, 2]], "f1")
    assert tile_bootstrap([], "f1") is None


# With regions, the bootstrap resamples whole regions: one region per tile is the tile
# bootstrap; a few regions of alike tiles give a wider interval than treating tiles as independent.
def test_tile_bootstrap_resamples_regions_when_given() -> None:
    rng = np.random.default_rng(3)
    region_quality = np.repeat(rng.uniform(0.2, 0.9, 5), 8)  # 5 regions of 8 alike tiles
    tp = (400 * region_quality).astype(int)
    counts = np.stack([tp, 400 - tp, 400 - tp], axis=1)
    by_tile = tile_bootstrap(counts, "f1")
    own = tile_bootstrap(counts, "f1", groups=[f"t{i:02d}" for i in range(40)])
    assert (own.low, own.high) == (by_tile.low, by_tile.high) and own.regions == 40
    regions = tile_bootstrap(counts, "f1", groups=[f"r{i // 8}" for i in range(40)])
    assert regions.regions == 5 and regions.tiles == 40
    assert regions.high - regions.low > by_tile.high - by_tile.low
    with pytest.raises(ValueError, match="3 tile groups for 40 tiles"):
        tile_bootstrap(counts, "f1", groups=["a", "b", "c"])
