"""Regressions across units that come in clusters, and an equivalence test for two samples.

- `within_cluster`: the correlation of x and y after each is demeaned within its cluster
  (cluster fixed effects: only variation inside clusters counts), with a permutation p that
  permutes y within clusters ((k + 1) / (N + 1)).
- `wild_cluster`: the pooled OLS slope with cluster-robust (CR1) standard errors and the wild
  cluster bootstrap-t p with the null imposed (Cameron, Gelbach & Miller 2008, "WCR"), using
  Webb's six-point weights, which suit few clusters (Webb 2023).
- `tost_welch`: two one-sided Welch t tests (Schuirmann 1987) of a difference in means against
  ±margin, and the matching 90% interval: "equivalent" only when both reject.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

N_PERM = 20000
WEBB = np.array([-np.sqrt(1.5), -1, -np.sqrt(0.5), np.sqrt(0.5), 1, np.sqrt(1.5)])


def _clean(x, y, cl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = [i for i, (a, b) in enumerate(zip(x, y)) if a is not None and b is not None
            and np.isfinite(a) and np.isfinite(b)]
    return (np.array([x[i] for i in keep], float), np.array([y[i] for i in keep], float),
            np.unique(np.array([cl[i] for i in keep]), return_inverse=True)[1])


def _demean(v: np.ndarray, cl: np.ndarray) -> np.ndarray:
    means = np.bincount(cl, v) / np.bincount(cl)
    return v - means[cl]


def within_cluster(x: list, y: list, cl: list, seed: int = 0) -> dict:
    """Pearson r of the within-cluster deviations (clusters of one unit carry none)."""
    x, y, cl = _clean(x, y, cl)
    sizes = np.bincount(cl) if len(cl) else np.array([], int)
    multi = np.isin(cl, np.flatnonzero(sizes >= 2))
    out = {"n": int(multi.sum()), "n_clusters": int((sizes >= 2).sum())}
    xd, yd = _demean(x, cl)[multi], _demean(y, cl)[multi]
    if out["n"] - out["n_clusters"] < 2 or np.ptp(xd) == 0 or np.ptp(yd) == 0:
        return {**out, "r": float("nan"), "p_value": float("nan")}
    r = float(np.corrcoef(xd, yd)[0, 1])
    order = np.argsort(cl[multi], kind="stable")  # clusters contiguous: a random key per unit
    xd, yd, cm = xd[order], yd[order], cl[multi][order]  # plus its cluster sorts within clusters
    perms = np.argsort(np.random.default_rng(seed).random((N_PERM, len(yd))) + cm, axis=1)
    xs = (xd - xd.mean()) / xd.std()
    ys = yd[perms]
    ys = (ys - ys.mean(1, keepdims=True)) / ys.std(1, keepdims=True)
    k = int((np.abs((ys * xs).mean(1)) >= abs(r) - 1e-12).sum())
    return {**out, "r": r, "r2": r * r, "p_value": (k + 1) / (N_PERM + 1),
            "method": "cluster-demeaned, permutation within clusters"}


def _cr1_t(xmat: np.ndarray, ys: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and its CR1 t statistic for each row of ys (B × n) on the design xmat (n × 2)."""
    n, g = onehot.shape
    bread = np.linalg.inv(xmat.T @ xmat)
    beta = ys @ (bread @ xmat.T).T
    u = ys - beta @ xmat.T
    scores = np.stack([(u * xmat[:, k]) @ onehot for k in range(2)], axis=-1)  # B × g × 2
    meat = np.einsum("bgk,bgl->bkl", scores, scores)
    v = bread @ meat @ bread * (g / (g - 1)) * ((n - 1) / (n - 2))
    return beta[:, 1], beta[:, 1] / np.sqrt(v[:, 1, 1])


def wild_cluster(x: list, y: list, cl: list, seed: int = 0) -> dict:
    """Pooled OLS slope of y on x, CR1 standard error, wild cluster bootstrap-t p (null
    imposed, Webb weights, N_PERM draws, seed 0)."""
    x, y, cl = _clean(x, y, cl)
    g = int(cl.max() + 1) if len(cl) else 0
    if g < 3 or len(x) < 4 or np.ptp(x) == 0:
        return {"n": len(x), "n_clusters": g, "slope": float("nan"), "p_value": float("nan")}
    xmat, onehot = np.column_stack([np.ones_like(x), x]), np.eye(g)[cl]
    slope, t = (a[0] for a in _cr1_t(xmat, y[None], onehot))
    w = np.random.default_rng(seed).choice(WEBB, size=(N_PERM, g))
    ystar = y.mean() + w[:, cl] * (y - y.mean())
    _, tstar = _cr1_t(xmat, ystar, onehot)
    p = (int((np.abs(tstar) >= abs(t) - 1e-12).sum()) + 1) / (N_PERM + 1)
    return {"n": len(x), "n_clusters": g, "slope": float(slope), "se_cr1": float(slope / t),
            "t": float(t), "p_value": p, "method": "wild cluster bootstrap-t (WCR, Webb weights)"}


def tost_welch(a: list[float], b: list[float], margin: float, alpha: float = 0.05) -> dict:
    """Equivalence of mean(a) − mean(b) within ±margin: two one-sided Welch t tests."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return {"margin": margin, "p_tost": float("nan"), "equivalent": False}
    lo = stats.ttest_ind(a, b - margin, equal_var=False, alternative="greater").pvalue
    hi = stats.ttest_ind(a, b + margin, equal_var=False, alternative="less").pvalue
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(1 - 2 * alpha)
    p = float(max(lo, hi))
    return {"margin": margin, "difference": float(a.mean() - b.mean()),
            "ci90_low": float(ci.low), "ci90_high": float(ci.high), "p_lower": float(lo),
            "p_upper": float(hi), "p_tost": p, "equivalent": bool(p < alpha),
            "method": "TOST, two one-sided Welch t tests"}
