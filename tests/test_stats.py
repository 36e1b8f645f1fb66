"""Statistics and verdict rules (iwshift.stats): intervals against scipy, readings against ±δ, the verdict rules,
how many seeds would decide an interval."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from iwshift import stats
from iwshift.stats import CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED, Interval


def test_mean_interval_matches_scipy_t_interval():
    values = np.array([0.31, 0.27, 0.35, 0.29, 0.33])
    got = stats.mean_interval(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((values.mean(), low, high, 5))
    assert got.half_width == pytest.approx((high - low) / 2)
    single = stats.mean_interval([0.4, np.nan])  # NaNs dropped; one value: no interval
    assert single.mean == 0.4 and single.n == 1 and not single.defined
    assert stats.effect_verdict(single, 0.02) == INCONCLUSIVE


def test_ols_slope_interval_matches_scipy_linregress():
    x = np.log2([1 / 8, 1 / 4, 1, 4, 8] * 2)
    y = 0.5 + 0.03 * x + np.array([0.01, -0.02, 0.0, 0.015, -0.01, -0.01, 0.02, 0.005, -0.015, 0.01])
    fit = scipy_stats.linregress(x, y)
    half = fit.stderr * scipy_stats.t.ppf(0.975, len(x) - 2)
    got = stats.ols_slope(x, y)
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((fit.slope, fit.slope - half, fit.slope + half, 10))
    assert not stats.ols_slope([1, 2], [0.1, 0.2]).defined           # two points: no interval
    assert np.isnan(stats.ols_slope([1, 1, 1], [0.1, 0.2, 0.3]).mean)  # one weight: no slope
    exact = stats.ols_slope([0, 1, 2], [0.5, 0.5, 0.5])               # a perfect fit: zero width
    assert (exact.mean, exact.low, exact.high) == (0, 0, 0)


@pytest.mark.parametrize("interval, reading", [
    (Interval(0.10, 0.05, 0.15, 5), "positive"),
    (Interval(-0.10, -0.15, -0.05, 5), "negative"),
    (Interval(0.0, -0.01, 0.01, 5), "negligible"),
    (Interval(0.015, 0.011, 0.019, 5), "negligible"),    # significant but below the threshold
    (Interval(0.0, -0.02, 0.01, 5), "unclear"),          # lower bound exactly at -delta: not inside the band
    (Interval(0.0, -0.0199, 0.0199, 5), "negligible"),
    (Interval(0.05, 0.0, 0.10, 5), "unclear"),           # crosses +delta
    (Interval(0.05, 1e-12, 0.10, 5), "unclear"),         # above 0, but an effect below delta is not excluded
    (Interval(0.05, 0.02, 0.10, 5), "positive"),         # at or above +delta
    (Interval(0.1, np.nan, np.nan, 1), "undefined"),
])
def test_interval_reading(interval, reading):
    assert stats.classify(interval, delta=0.02) == reading


@pytest.mark.parametrize("interval, effect, no_effect", [
    (Interval(0.10, 0.05, 0.15, 5), SUPPORTED, CONTRADICTED),        # clear effect
    (Interval(0.0, -0.01, 0.01, 5), CONTRADICTED, SUPPORTED),        # clearly none
    (Interval(0.0, -0.2, 0.2, 5), INCONCLUSIVE, INCONCLUSIVE),       # too wide to say
    (Interval(-0.10, -0.15, -0.05, 5), CONTRADICTED, CONTRADICTED),  # the other way
    (Interval(0.05, 0.0, 0.10, 5), INCONCLUSIVE, INCONCLUSIVE),      # touches 0
    (Interval(0.05, 1e-9, 0.10, 5), INCONCLUSIVE, INCONCLUSIVE),     # just above 0, crosses +delta
    (Interval(0.05, np.nan, np.nan, 1), INCONCLUSIVE, INCONCLUSIVE),
])
def test_verdict_rules_on_clear_and_borderline_cases(interval, effect, no_effect):
    assert stats.effect_verdict(interval, 0.02) == effect
    assert stats.no_effect_verdict(interval, 0.02) == no_effect


def test_no_gain_is_supported_only_inside_the_band():
    """One rule family: "no gain" needs the whole interval inside ±δ; one crossing δ supports nothing."""
    assert stats.no_effect_verdict(Interval(-0.026, -0.122, 0.071, 3), 0.02) == INCONCLUSIVE
    assert stats.no_effect_verdict(Interval(-0.2, -0.4, 0.0, 3), 0.02) == INCONCLUSIVE
    assert stats.no_effect_verdict(Interval(0.002, -0.008, 0.012, 3), 0.02) == SUPPORTED


def test_combining_rows():
    assert stats.combine([]) == NOT_RUN
    assert stats.combine([NOT_RUN, NOT_RUN]) == NOT_RUN
    assert stats.combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert stats.combine([SUPPORTED, NOT_RUN]) == INCONCLUSIVE
    assert stats.combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert stats.combine([SUPPORTED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED


def test_seeds_to_decide_would_put_the_interval_inside_or_beyond_delta():
    """The same mean and spread with n seeds: the half-width falls below the mean's distance to δ."""
    values = np.array([0.005, 0.02, 0.03])
    interval = stats.mean_interval(values)
    assert stats.classify(interval, 0.02) == "unclear"
    n = stats.seeds_to_decide(interval, 0.02)
    sd = values.std(ddof=1)
    half = lambda k: scipy_stats.t.ppf(0.975, k - 1) * sd / np.sqrt(k)  # noqa: E731
    distance = abs(abs(interval.mean) - 0.02)
    assert half(n) < distance <= half(n - 1)
    assert stats.seeds_to_decide(stats.mean_interval([0.3]), 0.02) is None  # one seed: no spread to judge from


def test_welch_half_width_is_the_half_width_of_a_welch_interval_of_that_size():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 0.02, 10), rng.normal(0, 0.03, 7)
    interval = stats.welch_interval(a, b)
    assert stats.welch_half_width(a.std(ddof=1), 10, b.std(ddof=1), 7) == pytest.approx(interval.half_width)


@pytest.mark.parametrize("low, high, verdict", [(-0.03, -0.001, stats.SUPPORTED), (-0.01, 0.019, stats.SUPPORTED),
                                                (0.0, 0.03, stats.INCONCLUSIVE), (0.02, 0.05, stats.CONTRADICTED)])
def test_the_no_gain_rule_is_one_sided_a_loss_is_no_gain(low, high, verdict):
    interval = stats.Interval((low + high) / 2, low, high, 5)
    assert stats.no_gain_verdict(interval, 0.02) == verdict


def test_seeds_to_decide_a_one_sided_rule_measure_the_distance_to_plus_delta():
    interval = stats.mean_interval([0.01, 0.02, 0.0, 0.015, 0.012])  # mean 0.0114, crossing +0.02
    two, one = stats.seeds_to_decide(interval, 0.02), stats.seeds_to_decide(interval, 0.02, one_sided=True)
    assert one == two  # above zero both distances are δ − mean
    below = stats.mean_interval([-0.01, -0.02, 0.0, -0.015, -0.012])
    assert stats.seeds_to_decide(below, 0.02, one_sided=True) < stats.seeds_to_decide(below, 0.02)
