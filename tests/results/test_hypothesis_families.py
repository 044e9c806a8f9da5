"""The families' procedure controls what docs/statistics.md says it does: BH within each family
keeps the family's false-discovery rate at 0.05 (and, under the global null, its family-wise
error), simulated on p-values under the null; vectorised, a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from steerlens.results.families import PRIMARY, SECONDARY, adjust

ALPHA, REPS = 0.05, 20000


def _bh_reject(p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """BH step-up rejections per row of p (replicates x tests), vectorised."""
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    ps = np.take_along_axis(p, order, axis=1)
    below = ps <= alpha * np.arange(1, m + 1) / m
    k = np.where(below.any(1), m - np.argmax(below[:, ::-1], axis=1), 0)  # largest rank passing
    rej_sorted = np.arange(m)[None, :] < k[:, None]
    out = np.zeros_like(rej_sorted)
    np.put_along_axis(out, order, rej_sorted, axis=1)
    return out


def test_vectorised_bh_is_the_families_procedure():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(50, 9)) ** 3
    for row in p:
        tests = [(PRIMARY, f"h{i}", x) for i, x in enumerate(row[:5])]
        tests += [(SECONDARY, f"s{i}", x) for i, x in enumerate(row[5:])]
        res = adjust(tests)
        got = np.array([res[PRIMARY]["q"][f"h{i}"] < ALPHA for i in range(5)]
                       + [res[SECONDARY]["q"][f"s{i}"] < ALPHA for i in range(4)])
        want = np.concatenate([_bh_reject(row[None, :5])[0], _bh_reject(row[None, 5:])[0]])
        assert (got == want).all()


def _fdr(p: np.ndarray, is_null: np.ndarray) -> tuple[float, float]:
    rej = _bh_reject(p)
    false = (rej & is_null).sum(1)
    fdp = false / np.maximum(rej.sum(1), 1)
    return float(fdp.mean()), float((false > 0).mean())


@pytest.mark.parametrize("m,m1,rho", [(12, 0, 0.0), (12, 0, 0.5), (12, 4, 0.0), (36, 12, 0.3),
                                      (18, 6, 0.0)])
def test_bh_controls_the_family_fdr(m, m1, rho):
    """m tests, m1 of them false nulls (z shifted by 3), equicorrelated z (rho >= 0: positive
    dependence, as tests sharing a baseline have); the FDR stays at or below 0.05 (to Monte
    Carlo error), and under the global null so does the family-wise error."""
    rng = np.random.default_rng(m * 100 + m1)
    shared = rng.standard_normal((REPS, 1))
    z = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((REPS, m))
    z[:, :m1] += 3.0
    p = 2 * stats.norm.sf(np.abs(z))
    is_null = np.zeros((REPS, m), bool)
    is_null[:, m1:] = True
    fdr, fwer = _fdr(p, is_null)
    se = np.sqrt(ALPHA * (1 - ALPHA) / REPS)
    assert fdr <= ALPHA * (m - m1) / m + 3 * se
    if m1 == 0:
        assert fwer <= ALPHA + 3 * se


def test_separate_families_keep_the_primary_answer():
    """The primary family's error does not grow with the number of secondary tests, while one
    pooled BH family over both would give a primary q depending on the secondaries."""
    rng = np.random.default_rng(7)
    prim = rng.uniform(size=(REPS, 6))
    sec = rng.uniform(size=(REPS, 30)) ** 8  # many strong secondaries (e.g. -v, ⊥)
    alone = _bh_reject(prim).any(1).mean()
    pooled = _bh_reject(np.concatenate([prim, sec], 1))[:, :6].any(1).mean()
    assert alone <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / REPS)
    assert pooled > 2 * ALPHA  # pooling with strong secondaries inflates false primary findings
