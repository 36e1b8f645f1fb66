"""Statistics and verdict rules: intervals over seeds, slopes, Welch differences, and how an interval is read
against a practical threshold δ. One home for the claims report, the Wang et al. comparison and the figures'
bands, so that they compute and read intervals the same way.

Every interval is a 95 % Student-t interval unless a ``confidence`` is given; with fewer observations than an
interval needs its bounds are NaN (:attr:`Interval.defined` is False), never a zero-width band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval (NaN bounds: no interval) and the number of observations."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return bool(np.isfinite([self.mean, self.low, self.high]).all())

    @property
    def half_width(self) -> float:
        """Half the interval's width: the smallest effect it can exclude (NaN without an interval)."""
        return (self.high - self.low) / 2 if self.defined else float("nan")

    def text(self, digits: int = 3, unit: str = "") -> str:
        if not np.isfinite(self.mean):
            return "—"
        if not self.defined:
            return f"{number(self.mean, digits)}{unit} [no interval: {self.n} seed{'s' if self.n != 1 else ''}]"
        return f"{number(self.mean, digits)} [{number(self.low, digits)}, {number(self.high, digits)}]{unit}"


def number(x: float, digits: int = 3) -> str:
    """``x`` with its sign and ``digits`` decimals; no "-0.000" or "+0.000"."""
    text = f"{x:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def _t(confidence: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, dof))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite ``values`` with its Student-t interval mean ± t(n−1)·sd/√n (none below 2 values)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, float("nan"), float("nan"), len(values))
    half = float(values.std(ddof=1) / np.sqrt(len(values))) * _t(confidence, len(values) - 1)
    return Interval(mean, mean - half, mean + half, len(values))


def ols_slope(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """OLS slope of ``y`` on ``x`` with its t interval (n − 2 degrees of freedom; none below 3 points)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
    if n < 2 or sxx == 0:
        return Interval(float("nan"), float("nan"), float("nan"), n)
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    if n < 3:
        return Interval(slope, float("nan"), float("nan"), n)
    residuals = y - y.mean() - slope * (x - x.mean())
    half = float(np.sqrt(np.sum(residuals ** 2) / (n - 2) / sxx)) * _t(confidence, n - 2)
    return Interval(slope, slope - half, slope + half, n)


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """mean(a) − mean(b) with its Welch interval (unequal variances; none with fewer than 2 values on a side);
    ``n`` is the smaller side's count."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    n = min(len(a), len(b))
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, float("nan"), float("nan"), n)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, n)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _t(confidence, dof) * se
    return Interval(diff, diff - half, diff + half, n)


def welch_half_width(sd_a: float, n_a: int, sd_b: float, n_b: int, confidence: float = CONFIDENCE) -> float:
    """The half-width a Welch interval would have for samples with these standard deviations and counts: the
    smallest difference a comparison of that size can detect."""
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    if va + vb == 0:
        return 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    return _t(confidence, dof) * math.sqrt(va + vb)


def seeds_to_decide(interval: Interval, delta: float, one_sided: bool = False) -> int | None:
    """How many seeds an interval like this one (same mean, same spread) would need to lie entirely inside ±δ or
    entirely beyond it (``one_sided``: entirely below +δ or at or above it): its half-width below the distance
    between the mean and δ (None: no spread to judge from, a mean at δ itself, or more than 10,000)."""
    if not interval.defined or interval.n < 2:
        return None
    distance = abs(interval.mean - delta) if one_sided else abs(abs(interval.mean) - delta)
    sd = interval.half_width / _t(CONFIDENCE, interval.n - 1) * math.sqrt(interval.n)
    if sd == 0:
        return interval.n
    for n in range(2, 10_000):
        if _t(CONFIDENCE, n - 1) * sd / math.sqrt(n) < distance:
            return n
    return None


# ------------------------------------------------------------------------------------- readings


NEGLIGIBLE, POSITIVE, NEGATIVE, UNCLEAR, UNDEFINED = "negligible", "positive", "negative", "unclear", "undefined"


def classify(interval: Interval, delta: float) -> str:
    """An interval [lo, hi] read against ±δ: *negligible* if it lies inside (−δ < lo and hi < δ), *positive*
    if at or above +δ (lo ≥ δ), *negative* if at or below −δ (hi ≤ −δ), *unclear* if it crosses ±δ,
    *undefined* without an interval."""
    if not interval.defined:
        return UNDEFINED
    if -delta < interval.low and interval.high < delta:
        return NEGLIGIBLE
    if interval.low >= delta:
        return POSITIVE
    if interval.high <= -delta:
        return NEGATIVE
    return UNCLEAR


SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"


def effect_verdict(interval: Interval, delta: float) -> str:
    """"There is an effect": supported if positive, contradicted if negligible or negative."""
    return {POSITIVE: SUPPORTED, NEGLIGIBLE: CONTRADICTED, NEGATIVE: CONTRADICTED}.get(
        classify(interval, delta), INCONCLUSIVE)


def no_effect_verdict(interval: Interval, delta: float) -> str:
    """"No effect", "no dependence", "no gain": supported only when the whole interval lies inside ±δ."""
    return {NEGLIGIBLE: SUPPORTED, POSITIVE: CONTRADICTED, NEGATIVE: CONTRADICTED}.get(
        classify(interval, delta), INCONCLUSIVE)


def no_gain_verdict(interval: Interval, delta: float) -> str:
    """"No gain", "no benefit" (one-sided: a loss is no gain): supported when the interval excludes a gain of δ
    or more (hi < δ), contradicted when it establishes one (lo ≥ δ), inconclusive when it crosses +δ."""
    if not interval.defined:
        return INCONCLUSIVE
    if interval.high < delta:
        return SUPPORTED
    return CONTRADICTED if interval.low >= delta else INCONCLUSIVE


no_gain_verdict.one_sided = True  # type: ignore[attr-defined]  # (seeds_to_decide reads it)


REPLICATED, DIFFERS = "replicated", "differs"


def equivalence_verdict(interval: Interval, margin: float) -> str:
    """A replication read from the interval of ours − theirs: *replicated* when it lies within ±margin,
    *differs* when it lies entirely beyond it (a difference larger than the margin is established),
    *inconclusive* otherwise or without an interval."""
    reading = classify(interval, margin)
    if reading == NEGLIGIBLE:
        return REPLICATED
    if interval.defined and (interval.low > margin or interval.high < -margin):
        return DIFFERS
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """Several rows of one claim: supported if every row is, contradicted if any is, not run if none ran,
    inconclusive otherwise."""
    if not verdicts or all(x == NOT_RUN for x in verdicts):
        return NOT_RUN
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return SUPPORTED if all(x == SUPPORTED for x in verdicts) else INCONCLUSIVE
