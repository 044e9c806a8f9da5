"""Statistics of an audit (scipy): Wilson intervals, exact McNemar, per-category ASR, OLS."""

from __future__ import annotations

from collections.abc import Sequence

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


def mcnemar_exact(base: Sequence[bool], other: Sequence[bool]) -> dict:
    """Exact McNemar test on paired labels: a two-sided binomial test of the discordant pairs."""
    if len(base) != len(other):
        raise ValueError("McNemar needs paired labels of equal length")
    b = sum(1 for x, y in zip(base, other) if x and not y)
    c = sum(1 for x, y in zip(base, other) if y and not x)
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"only_base": b, "only_other": c, "p_value": p}


def per_category(labels: Sequence[bool], categories: Sequence[str]) -> dict[str, dict]:
    out: dict[str, list[bool]] = {}
    for lab, cat in zip(labels, categories):
        out.setdefault(cat, []).append(bool(lab))
    return {c: asr(v) for c, v in sorted(out.items())}


def ols(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least squares of y on x: slope, intercept, R^2, p-value (NaN when under-determined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan"),
                "p_value": float("nan"), "n": int(len(x))}
    r = stats.linregress(x, y)
    return {"slope": float(r.slope), "intercept": float(r.intercept), "r2": float(r.rvalue**2),
            "p_value": float(r.pvalue), "n": int(len(x))}
