"""Statistics of an audit (scipy): Wilson intervals, exact McNemar with its power, paired
differences, permutation tests with the vector as the unit, Benjamini-Hochberg, null percentiles."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import stats


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    if n == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def asr(labels: Sequence[bool]) -> dict:
    """Attack success rate with its 95% Wilson interval."""
    k, n = int(sum(bool(x) for x in labels)), len(labels)
    lo, hi = wilson(k, n)
    return {"asr": k / n if n else float("nan"), "k": k, "n": n, "ci_low": lo, "ci_high": hi}


def discordant(base: Sequence[bool], other: Sequence[bool]) -> tuple[int, int]:
    """(b, c): pairs true at baseline only, and true under the other setting only."""
    if len(base) != len(other):
        raise ValueError("paired tests need paired labels of equal length")
    b = sum(1 for x, y in zip(base, other) if x and not y)
    c = sum(1 for x, y in zip(base, other) if y and not x)
    return b, c


def mcnemar_exact(base: Sequence[bool], other: Sequence[bool]) -> dict:
    """Exact McNemar test on paired labels: a two-sided binomial test of the discordant pairs."""
    b, c = discordant(base, other)
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"only_base": b, "only_other": c, "p_value": p}


def paired_difference(base: Sequence[bool], other: Sequence[bool], z: float = 1.959964) -> dict:
    """Difference of paired proportions (other - base) with the Agresti-Min (2005) interval:
    a Wald interval after adding 1/2 to each cell of the 2x2 table."""
    b, c = discordant(base, other)
    n = len(base)
    if n == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    nb, nc, nn = b + 0.5, c + 0.5, n + 2.0
    d = (nc - nb) / nn
    var = ((nb + nc) - (nc - nb) ** 2 / nn) / nn**2
    half = z * math.sqrt(max(var, 0.0))
    return {"diff": (c - b) / n, "ci_low": max(-1.0, d - half), "ci_high": min(1.0, d + half)}


@lru_cache(maxsize=256)
def _rejects(m: int, alpha: float) -> np.ndarray:
    """For m discordant pairs, which counts b in 0..m the audit's test rejects: the McNemar
    score test (Tango's at diff = 0), |c - b| / sqrt(b + c) > z_{1 - alpha/2}."""
    b = np.arange(m + 1)
    return np.abs(m - 2 * b) / math.sqrt(m) > stats.norm.ppf(1 - alpha / 2)


def mcnemar_power(n: int, delta: float, reverse: float = 0.0, alpha: float = 0.05) -> float:
    """Power of the McNemar score test (the audit's test) for n pairs when a fraction
    `delta + reverse` flips one way
    and `reverse` the other (the shift in ASR is `delta`)."""
    up, down = delta + reverse, reverse
    if up + down <= 0 or up + down > 1:
        return 0.0
    m = np.arange(n + 1)
    pm = stats.binom.pmf(m, n, up + down)
    share = up / (up + down)
    total = 0.0
    for mm in range(1, n + 1):
        rej = _rejects(mm, alpha)
        total += pm[mm] * float(stats.binom.pmf(np.arange(mm + 1), mm, share)[rej].sum())
    return total


def minimum_detectable_shift(n: int, reverse: float = 0.05, alpha: float = 0.05,
                             power: float = 0.8) -> float:
    """Smallest ASR shift (to 0.01) the McNemar score test detects with `power`, given a
    background rate `reverse` of flips against the shift (measured from the null cells)."""
    for step in range(1, 101):
        delta = step / 100
        if delta + 2 * reverse > 1:
            break
        if mcnemar_power(n, delta, reverse, alpha) >= power:
            return delta
    return float("nan")


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input order; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out.tolist()


def permutation_correlation(x: Sequence[float], y: Sequence[float], n_perm: int = 20000,
                            seed: int = 0) -> dict:
    """Pearson r of y on x with a two-sided permutation p-value (exact for n <= 8): the unit
    is whatever one (x, y) pair is, here a steering vector."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": float("nan"), "p_value": float("nan"), "n": n, "exact": False}
    r = float(np.corrcoef(x, y)[0, 1])
    if n <= 8:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.array([rng.permutation(n) for _ in range(n_perm)])
    xs = (x - x.mean()) / x.std()
    ys = (y[perms] - y.mean()) / y.std()
    rs = (ys * xs).mean(axis=1)
    p = float((np.abs(rs) >= abs(r) - 1e-12).mean())
    return {"r": r, "p_value": p, "n": n, "exact": n <= 8, "slope": float(np.polyfit(x, y, 1)[0])}


def smallest_permutation_p(n: int) -> float:
    """The smallest p `permutation_correlation` can give with n units: 1/n! when exact (only
    the observed order is as extreme; 2/n! if x is symmetric), nan below 3 units."""
    if n < 3:
        return float("nan")
    return 1.0 / math.factorial(n) if n <= 8 else 1.0 / 20000


def null_percentile(value: float, null: Sequence[float]) -> float:
    """Share of the null whose magnitude is below |value| (100: beyond every null value)."""
    null = [abs(v) for v in null if v is not None and math.isfinite(v)]
    if not null or value is None or not math.isfinite(value):
        return float("nan")
    return 100.0 * sum(v < abs(value) for v in null) / len(null)


def per_category(labels: Sequence[bool], categories: Sequence[str]) -> dict[str, dict]:
    out: dict[str, list[bool]] = {}
    for lab, cat in zip(labels, categories):
        out.setdefault(cat, []).append(bool(lab))
    return {c: asr(v) for c, v in sorted(out.items())}
