"""Paired-proportion inference whose test and interval agree, exact null comparisons, and BH.

An audit judges the same n prompts under a baseline and under a steering setting; b counts pairs
that go 1 -> 0, c pairs that go 0 -> 1, and the effect is the paired difference (c - b) / n.

Design decision (why this module exists): `steerlens.results.stats` pairs an exact McNemar test with a
Wald-type Agresti-Min interval, and the two can disagree (the interval excludes 0 while p > 0.05).
Here the verdict comes from ONE test family: Tango's score test for H0: diff = d0 (Tango 1998,
Statistics in Medicine 17:891-908), with the interval obtained by inverting that same test.  The
interval excludes 0 iff the score p-value for diff = 0 is below alpha, by construction.  At d0 = 0
Tango's statistic is the classical McNemar chi-square without continuity correction.  Newcombe
(1998, Statistics in Medicine 17:2635-2650) compares the intervals for paired differences; the
score interval is among those with coverage close to nominal.  The mid-p McNemar p-value is
reported alongside, for reference only; it does not drive the verdict.

Pure functions: numpy, scipy, math, fractions and dataclasses only (no torch, no other module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

_CLIP = 1e12  # bound on |Z| so brentq never sees an infinity


def _restricted_p10(b: int, c: int, n: int, d: float) -> float:
    """Restricted MLE of the 1 -> 0 cell probability under diff = d (Tango 1998, eq. for q21):
    the root of 2n p^2 + (-b - c + (2n - c + b) d) p - b d (1 - d) = 0, in stable form."""
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - c + b) * d
    qc = -b * d * (1.0 - d)
    root = math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0))
    p = -2.0 * qc / (qb + root) if qb > 0 else (root - qb) / (2.0 * qa)
    return min(max(p, max(0.0, -d)), max(0.0, (1.0 - d) / 2.0))


def score_z(b: int, c: int, n: int, d0: float) -> float:
    """Tango's score statistic for H0: (c - b)/n = d0; decreasing in d0, and at d0 = 0 it is
    (c - b)/sqrt(b + c), the signed root of the uncorrected McNemar chi-square (0 when b = c = 0)."""
    num = c - b - n * d0
    var = n * (2.0 * _restricted_p10(b, c, n, d0) + d0 * (1.0 - d0))
    if var <= 0.0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def _clipped(b: int, c: int, n: int, d: float) -> float:
    return min(max(score_z(b, c, n, d), -_CLIP), _CLIP)


def score_interval(b: int, c: int, n: int, z: float) -> tuple[float, float]:
    """Tango's score interval {d0 : |Z(d0)| <= z} for the paired difference, endpoints by brentq;
    b = c = 0 still gives positive width (e.g. upper end z^2 / (n + z^2))."""
    if n <= 0:
        return (math.nan, math.nan)
    dhat = (c - b) / n
    lo, hi = -1.0, 1.0
    if dhat > -1.0 and score_z(b, c, n, -1.0) > z:
        lo = optimize.brentq(lambda d: _clipped(b, c, n, d) - z, -1.0, dhat, xtol=1e-14)
    if dhat < 1.0 and score_z(b, c, n, 1.0) < -z:
        hi = optimize.brentq(lambda d: _clipped(b, c, n, d) + z, dhat, 1.0, xtol=1e-14)
    return (float(lo), float(hi))


def mcnemar_midp(b: int, c: int) -> float:
    """Two-sided mid-p McNemar: 2 P(X < min(b, c)) + P(X = min(b, c)), X ~ Bin(b + c, 1/2);
    1 when there are no discordant pairs."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    return float(min(1.0, 2.0 * sps.binom.cdf(k, m, 0.5) - sps.binom.pmf(k, m, 0.5)))


def _check_counts(b: int, c: int, n: int) -> None:
    if b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b, c and b + c <= n, got b={b}, c={c}, n={n}")


def paired_test(b: int, c: int, n: int, alpha: float = 0.05) -> dict:
    """Paired difference (c - b)/n with Tango's score test p for diff = 0 and the inverted score
    interval (they agree by construction: excludes 0 iff p < alpha); mid-p McNemar for reference."""
    _check_counts(b, c, n)
    nan = math.nan
    if n == 0:
        return {"b": b, "c": c, "n": 0, "diff": nan, "ci_low": nan, "ci_high": nan, "z": nan,
                "p_value": nan, "p_mcnemar_midp": nan, "alpha": alpha, "significant": False,
                "method": "tango-score"}
    z0 = score_z(b, c, n, 0.0)
    p = 1.0 if b + c == 0 else float(min(1.0, 2.0 * sps.norm.sf(abs(z0))))
    lo, hi = score_interval(b, c, n, float(sps.norm.ppf(1.0 - alpha / 2.0)))
    return {"b": b, "c": c, "n": n, "diff": (c - b) / n, "ci_low": lo, "ci_high": hi, "z": z0,
            "p_value": p, "p_mcnemar_midp": mcnemar_midp(b, c), "alpha": alpha,
            "significant": p < alpha, "method": "tango-score"}


def tost_equivalence(b: int, c: int, n: int, margin: float, alpha: float = 0.05) -> dict:
    """Equivalence of the paired difference with 0 within +-margin: two one-sided Tango score
    tests at d0 = -margin and d0 = +margin; equivalent iff max p < alpha (the 1 - 2 alpha score
    interval then lies inside (-margin, margin))."""
    _check_counts(b, c, n)
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must lie in (0, 1), got {margin}")
    if n == 0:
        return {"p_lower": math.nan, "p_upper": math.nan, "p_tost": math.nan, "equivalent": False,
                "ci_low": math.nan, "ci_high": math.nan, "margin": margin, "alpha": alpha}
    p_lower = float(sps.norm.sf(score_z(b, c, n, -margin)))  # H0: diff <= -margin
    p_upper = float(sps.norm.cdf(score_z(b, c, n, margin)))  # H0: diff >= +margin
    p_tost = max(p_lower, p_upper)
    lo, hi = score_interval(b, c, n, float(sps.norm.ppf(1.0 - alpha)))
    return {"p_lower": p_lower, "p_upper": p_upper, "p_tost": p_tost, "equivalent": p_tost < alpha,
            "ci_low": lo, "ci_high": hi, "margin": margin, "alpha": alpha}


@dataclass(frozen=True)
class _Table:
    """Every (b, c) with b + c <= n and its interval, for exact coverage sums."""

    b: np.ndarray
    c: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


_TABLES: dict[tuple[int, float], _Table] = {}


def _interval_table(n: int, level: float, interval=None) -> _Table:
    key = (n, level)
    if interval is None and key in _TABLES:
        return _TABLES[key]
    z = float(sps.norm.ppf(0.5 + level / 2.0))
    fn = interval or (lambda b, c, m: score_interval(b, c, m, z))
    pairs = [(b, c) for b in range(n + 1) for c in range(n + 1 - b)]
    ends = np.array([fn(b, c, n) for b, c in pairs], dtype=float)
    bc = np.array(pairs, dtype=int)
    table = _Table(bc[:, 0], bc[:, 1], ends[:, 0], ends[:, 1])
    if interval is None:
        _TABLES[key] = table
    return table


def exact_coverage(n: int, p10: float, p01: float, level: float = 0.95, interval=None) -> float:
    """Exact coverage of the score interval (or of `interval(b, c, n) -> (lo, hi)`) when the pairs
    are multinomial(n; p10, p01, 1 - p10 - p01): the total probability of tables covering p01 - p10."""
    if n <= 0 or min(p10, p01) < 0.0 or p10 + p01 > 1.0 + 1e-12:
        raise ValueError("need n >= 1, p10, p01 >= 0 and p10 + p01 <= 1")
    t = _interval_table(n, level, interval)
    a = n - t.b - t.c
    logpmf = (special.gammaln(n + 1) - special.gammaln(t.b + 1) - special.gammaln(t.c + 1)
              - special.gammaln(a + 1) + special.xlogy(t.b, p10) + special.xlogy(t.c, p01)
              + special.xlogy(a, max(0.0, 1.0 - p10 - p01)))
    truth = p01 - p10
    covered = (t.lo <= truth) & (truth <= t.hi)
    return float(np.exp(logpmf)[covered].sum())


def _as_int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{what} must be an integer count, got {x!r}")
    return int(x)


def _effect(num, den, what: str) -> Fraction:
    d = _as_int(den, f"{what} denominator")
    if d <= 0:
        raise ValueError(f"{what} denominator must be positive, got {d}")
    return Fraction(_as_int(num, f"{what} numerator"), d)


def null_exceedance(value_num: int, value_den: int, null: list[tuple[int, int]],
                    sided: str = "two") -> dict:
    """How many nulls are at least as extreme as the vector, compared exactly as Fractions (ties
    count against the vector), with the permutation p (1 + count) / (1 + n_null) and its floor."""
    if sided not in ("two", "greater", "less"):
        raise ValueError(f"sided must be 'two', 'greater' or 'less', got {sided!r}")
    v = _effect(value_num, value_den, "value")
    effects = [_effect(num, den, "null") for num, den in null]
    if sided == "two":
        count = sum(abs(e) >= abs(v) for e in effects)
    elif sided == "greater":
        count = sum(e >= v for e in effects)
    else:
        count = sum(e <= v for e in effects)
    m = len(effects)
    return {"count": int(count), "n_null": m, "p_value": (1 + count) / (1 + m),
            "p_exact": Fraction(1 + count, 1 + m), "min_p": 1 / (1 + m), "sided": sided}


def nulls_needed(alpha: float) -> int:
    """Smallest number of nulls k with 1/(1 + k) < alpha (20 for 0.05); alpha is read as written
    (Fraction of its repr), so 0.05 means exactly 1/20."""
    a = Fraction(repr(float(alpha)))
    if not 0 < a <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    return math.floor(1 / a)


def benjamini_hochberg_family(tests: dict[str, float] | list[tuple[str, float]]) -> dict:
    """BH q-values over a named family (a dict, or (name, p) pairs where a repeated name raises
    ValueError); NaN/None p-values are excluded from the family and listed."""
    items = list(tests.items()) if isinstance(tests, dict) else list(tests)
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise ValueError(f"duplicate hypothesis names: {dup}")
    excluded = [k for k, p in items if p is None or math.isnan(float(p))]
    kept = [(k, float(p)) for k, p in items if k not in set(excluded)]
    if any(not 0.0 <= p <= 1.0 for _, p in kept):
        raise ValueError("p-values must lie in [0, 1]")
    q = sps.false_discovery_control([p for _, p in kept], method="bh") if kept else []
    return {"q": {k: float(qi) for (k, _), qi in zip(kept, q)}, "m_adjusted": len(kept),
            "excluded": excluded}
