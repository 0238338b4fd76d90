"""Rank-trend and paired permutation tests: against exact enumeration and known cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr

from ckatlas.analysis.trend import min_sign_flip_p, paired_difference_test, trend_test
from ckatlas.errors import UserInputError


def _exact_p(values: list[float], levels: list[float], strata: list[int]) -> float:
    """The exact one-sided p-value: every within-stratum permutation, enumerated."""
    groups = sorted(set(strata))
    index = {g: [i for i, s in enumerate(strata) if s == g] for g in groups}

    def stat(v: np.ndarray) -> float:
        return float(np.mean([spearmanr(np.asarray(levels)[index[g]], v[index[g]])[0] for g in groups]))

    observed = stat(np.asarray(values, dtype=float))
    perms = [list(itertools.permutations(index[g])) for g in groups]
    count = total = 0
    for choice in itertools.product(*perms):
        v = np.asarray(values, dtype=float).copy()
        for g, order in zip(groups, choice):
            v[index[g]] = np.asarray(values, dtype=float)[list(order)]
        count += stat(v) >= observed - 1e-12
        total += 1
    return count / total


def test_statistic_is_the_mean_spearman_rho_and_p_matches_enumeration() -> None:
    values = [0.1, 0.3, 0.2, 0.6, 0.0, 0.5, 0.4, 0.45]
    levels = [1, 2, 3, 4, 1, 2, 3, 4]
    strata = [0, 0, 0, 0, 1, 1, 1, 1]
    res = trend_test(values, levels, strata, num_permutations=40_000, seed=1)
    expected = np.mean([spearmanr(levels[:4], values[:4])[0], spearmanr(levels[4:], values[4:])[0]])
    assert res.statistic == pytest.approx(expected)
    exact = _exact_p(values, levels, strata)
    assert res.p_value == pytest.approx(exact, abs=0.01)  # Monte Carlo error of 40,000 draws ~ 0.002
    assert [s["rho"] is not None for s in res.strata] == [True, True] and res.num_models == 8


def test_a_perfect_trend_is_significant_and_the_opposite_direction_is_not() -> None:
    levels = [0.5, 1, 2, 4] * 3
    strata = [14] * 4 + [20] * 4 + [26] * 4
    values = [0.0, 0.1, 0.3, 0.6, 0.1, 0.2, 0.5, 0.7, 0.2, 0.4, 0.6, 0.9]
    up = trend_test(values, levels, strata, num_permutations=5000)
    assert up.statistic == pytest.approx(1.0) and up.p_value < 0.01 and up.holds()
    down = trend_test(values, levels, strata, direction="decreasing", num_permutations=5000)
    assert down.p_value > 0.99 and not down.holds()


def test_values_without_a_trend_give_a_roughly_uniform_p_value() -> None:
    rng = np.random.default_rng(0)
    ps = [trend_test(rng.normal(size=12), [1, 2, 3, 4] * 3, [0] * 4 + [1] * 4 + [2] * 4,
                     num_permutations=500, seed=i).p_value for i in range(200)]
    assert 0.03 < np.mean(np.asarray(ps) <= 0.05) < 0.09  # about 5% of null experiments reject at 0.05
    assert 0.4 < np.mean(ps) < 0.6


def test_strata_without_variation_are_left_out_and_errors_are_clear() -> None:
    res = trend_test([0.0, 0.0, 0.0, 0.1, 0.2, 0.3], [1, 2, 3, 1, 2, 3], ["a", "a", "a", "b", "b", "b"],
                     num_permutations=100)
    assert res.strata[0]["rho"] is None and res.strata[1]["rho"] == pytest.approx(1.0)
    assert res.num_models == 3
    with pytest.raises(UserInputError, match="direction must be one of"):
        trend_test([1, 2, 3], [1, 2, 3], direction="up")
    with pytest.raises(UserInputError, match="one level per model"):
        trend_test([1, 2, 3], [1, 2])


def test_paired_difference_test() -> None:
    a = [0.9, 0.8, 0.85, 0.95, 0.7, 0.9]
    b = [0.3, 0.4, 0.2, 0.5, 0.3, 0.35]
    res = paired_difference_test(a, b, num_permutations=20_000)
    assert res["mean_difference"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert res["p_value"] == pytest.approx(1 / 64, abs=0.005)  # 6 positive differences: 1 of 2^6 sign patterns
    assert paired_difference_test(b, a, num_permutations=2000)["p_value"] > 0.95
    assert paired_difference_test(b, a, num_permutations=2000, alternative="less")["p_value"] < 0.03


# -- the words: holds, contradicted, not established; intervals over seeds ---------------------------
def test_a_trend_against_the_claim_is_contradicted_and_a_flat_one_not_established() -> None:
    levels = [0.5, 1, 2, 4] * 3
    strata = [14] * 4 + [20] * 4 + [26] * 4
    rising = [0.0, 0.1, 0.3, 0.6, 0.1, 0.2, 0.5, 0.7, 0.2, 0.4, 0.6, 0.9]
    up = trend_test(rising, levels, strata, num_permutations=5000)
    assert up.verdict() == "holds" and up.p_opposite > 0.99
    down = trend_test(rising, levels, strata, direction="decreasing", num_permutations=5000)
    assert down.verdict() == "contradicted" and down.p_opposite < 0.01 and down.p_value > 0.99
    flat = trend_test([0.3, 0.1, 0.4, 0.2, 0.2, 0.4, 0.1, 0.3, 0.4, 0.2, 0.3, 0.1], levels, strata, num_permutations=5000)
    assert flat.verdict() == "not established" and flat.p_value > 0.05 and flat.p_opposite > 0.05
    assert "contradicted" in down.summary() and "the other way" in down.summary()


def test_the_interval_resamples_seeds_and_covers_the_statistic() -> None:
    rng = np.random.default_rng(3)
    levels = [0.5, 1, 2, 4] * 6  # 3 seeds per (depth, width) cell, 2 depths
    strata = [14] * 12 + [20] * 12
    values = [level / 4 + rng.normal(0, 0.2) for level in levels]
    res = trend_test(values, levels, strata, num_permutations=2000)
    low, high = res.interval
    assert low <= res.statistic <= high and low > 0  # a clear trend: the interval excludes no trend
    noisy = trend_test([rng.normal() for _ in levels], levels, strata, num_permutations=2000)
    assert noisy.interval[0] < 0 < noisy.interval[1]  # noise: it straddles zero
    assert noisy.interval[1] - noisy.interval[0] > high - low
    one_seed = trend_test([0.0, 0.1, 0.3, 0.6], [0.5, 1, 2, 4], num_permutations=100)
    assert one_seed.interval is None  # nothing to resample: one model per cell
    assert trend_test(values, levels, strata, num_permutations=2000).interval == res.interval  # seeded


def test_paired_differences_give_the_other_way_and_an_interval() -> None:
    a = [0.9, 0.8, 0.85, 0.95, 0.7, 0.9]
    b = [0.3, 0.4, 0.2, 0.5, 0.3, 0.35]
    res = paired_difference_test(a, b, num_permutations=20_000)
    assert res["p_opposite"] > 0.95
    low, high = res["interval"]
    assert low <= res["mean_difference"] <= high and min(np.subtract(a, b)) <= low and high <= max(np.subtract(a, b))
    against = paired_difference_test(b, a, num_permutations=20_000)
    assert against["p_opposite"] == pytest.approx(1 / 64, abs=0.005) and against["p_value"] > 0.95
    assert paired_difference_test([1.0, 2.0, 3.0, 4.0], [0.0] * 4)["interval"] is None  # too few pairs to resample
    assert min_sign_flip_p(3) == 0.125 and paired_difference_test([1.0] * 3, [0.0] * 3, num_permutations=20_000)[
        "p_value"] == pytest.approx(0.125, abs=0.01)
