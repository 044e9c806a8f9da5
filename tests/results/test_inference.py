import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import optimize, special
from scipy import stats as sps

from steerlens.results.inference import (
    _restricted_p10,
    benjamini_hochberg_family,
    exact_coverage,
    mcnemar_midp,
    null_exceedance,
    nulls_needed,
    paired_test,
    score_interval,
    score_z,
    tost_equivalence,
)
from steerlens.results.stats import benjamini_hochberg, paired_difference

Z95 = float(sps.norm.ppf(0.975))


def _all_tables(n_max: int):
    for n in range(1, n_max + 1):
        for b in range(n + 1):
            for c in range(n + 1 - b):
                yield b, c, n


def _agresti_min(b: int, c: int, n: int) -> tuple[float, float]:
    rest = [0] * (n - b - c)
    r = paired_difference([1] * b + [0] * c + rest, [0] * b + [1] * c + rest)
    return (r["ci_low"], r["ci_high"])


# --- Tango's score statistic -------------------------------------------------------------------

@pytest.mark.parametrize("b,c,n,d", [(3, 9, 40, 0.1), (0, 5, 20, -0.2), (7, 0, 10, 0.3),
                                     (12, 12, 30, -0.5), (0, 0, 15, 0.4), (5, 20, 25, 0.9)])
def test_restricted_mle_maximises_the_likelihood(b, c, n, d):
    def nll(p):
        return -(special.xlogy(b, p) + special.xlogy(c, p + d) + special.xlogy(n - b - c, 1 - 2 * p - d))
    lo, hi = max(0.0, -d), (1 - d) / 2
    best = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    assert nll(_restricted_p10(b, c, n, d)) <= best.fun + 1e-9


@pytest.mark.parametrize("b,c,n", [(3, 9, 40), (10, 2, 12), (1, 0, 5), (20, 35, 100)])
def test_score_at_zero_is_uncorrected_mcnemar(b, c, n):
    assert score_z(b, c, n, 0.0) == pytest.approx((c - b) / math.sqrt(b + c), rel=1e-12)
    chi2 = (c - b) ** 2 / (b + c)
    assert paired_test(b, c, n)["p_value"] == pytest.approx(float(sps.chi2.sf(chi2, 1)), rel=1e-9)


def test_score_is_decreasing_and_endpoints_solve_the_score_equation():
    for b, c, n in [(3, 9, 40), (0, 6, 30), (15, 15, 30), (2, 27, 30)]:
        grid = np.linspace(-0.999, 0.999, 400)
        zs = [score_z(b, c, n, d) for d in grid]
        assert all(z1 >= z2 for z1, z2 in zip(zs, zs[1:]))
        lo, hi = score_interval(b, c, n, Z95)
        assert lo == -1.0 or score_z(b, c, n, lo) == pytest.approx(Z95, abs=1e-7)
        assert hi == 1.0 or score_z(b, c, n, hi) == pytest.approx(-Z95, abs=1e-7)
        assert lo < (c - b) / n < hi


def test_interval_and_p_value_always_agree():
    """The design decision: the interval excludes 0 iff the score p < alpha, for every table."""
    for alpha in (0.05, 0.01):
        for b, c, n in _all_tables(25):
            r = paired_test(b, c, n, alpha=alpha)
            excludes_zero = not (r["ci_low"] <= 0.0 <= r["ci_high"])
            assert excludes_zero == r["significant"] == (r["p_value"] < alpha), (b, c, n, r)


def test_the_old_pair_disagrees_somewhere_and_the_new_one_does_not():
    """Exact McNemar + Agresti-Min can disagree (the motivation); check one such table."""
    found = None
    for b, c, n in _all_tables(30):
        lo, hi = _agresti_min(b, c, n)
        p_exact = float(sps.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
        if (lo > 0 or hi < 0) != (p_exact < 0.05):
            found = (b, c, n)
            break
    assert found is not None
    r = paired_test(*found)
    assert (r["ci_low"] > 0 or r["ci_high"] < 0) == r["significant"]


# --- edge cases --------------------------------------------------------------------------------

def test_no_discordant_pairs_gives_p_one_and_a_positive_width_interval():
    r = paired_test(0, 0, 50)
    assert r["diff"] == 0.0 and r["p_value"] == 1.0 and r["p_mcnemar_midp"] == 1.0
    assert not r["significant"]
    half = Z95**2 / (50 + Z95**2)
    assert r["ci_low"] == pytest.approx(-half, rel=1e-8) and r["ci_high"] == pytest.approx(half, rel=1e-8)


def test_all_pairs_discordant_and_extreme_tables():
    r = paired_test(0, 30, 30)
    assert r["diff"] == 1.0 and r["ci_high"] == 1.0 and 0.5 < r["ci_low"] < 1.0 and r["significant"]
    r = paired_test(30, 0, 30)
    assert r["diff"] == -1.0 and r["ci_low"] == -1.0 and -1.0 < r["ci_high"] < -0.5
    r = paired_test(15, 15, 30)
    assert r["diff"] == 0.0 and r["p_value"] == 1.0 and r["p_mcnemar_midp"] == 1.0
    assert -1.0 < r["ci_low"] < 0.0 < r["ci_high"] < 1.0


def test_empty_and_invalid_tables():
    r = paired_test(0, 0, 0)
    assert all(math.isnan(r[k]) for k in ("diff", "ci_low", "ci_high", "p_value", "p_mcnemar_midp"))
    assert not r["significant"]
    with pytest.raises(ValueError):
        paired_test(5, 6, 10)
    with pytest.raises(ValueError):
        paired_test(-1, 2, 10)


def test_mid_p_mcnemar():
    # b=1, c=9: 2 * (P(X=0) + P(X=1)/2) with X ~ Bin(10, 1/2) = (1 + 10/2) * 2 / 1024
    assert mcnemar_midp(1, 9) == pytest.approx(12 / 1024)
    assert mcnemar_midp(9, 1) == mcnemar_midp(1, 9)
    assert mcnemar_midp(0, 0) == 1.0 and mcnemar_midp(4, 4) == pytest.approx(1.0)
    for b, c in [(0, 5), (2, 11), (7, 13)]:
        assert mcnemar_midp(b, c) < float(sps.binomtest(b, b + c, 0.5).pvalue)
    assert paired_test(1, 9, 40)["p_mcnemar_midp"] == pytest.approx(12 / 1024)


# --- TOST equivalence --------------------------------------------------------------------------

def test_tost_formulations_agree():
    for margin in (0.05, 0.1, 0.2):
        for b, c, n in _all_tables(20):
            r = tost_equivalence(b, c, n, margin)
            inside = -margin < r["ci_low"] and r["ci_high"] < margin
            assert r["equivalent"] == inside == (r["p_tost"] < 0.05), (b, c, n, margin, r)
    for b, c, n in [(40, 45, 1000), (10, 10, 400), (3, 30, 500)]:
        r = tost_equivalence(b, c, n, 0.05)
        assert r["equivalent"] == (-0.05 < r["ci_low"] and r["ci_high"] < 0.05)


def _score_p_independent(b: int, c: int, n: int, d0: float) -> float:
    """Tango's score Z at d0 with the restricted MLE found by numerical maximisation (not the
    module's closed form)."""
    def nll(p):
        return -(special.xlogy(b, p) + special.xlogy(c, p + d0) + special.xlogy(n - b - c, 1 - 2 * p - d0))
    lo, hi = max(0.0, -d0), (1 - d0) / 2
    p10 = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
    var = n * (2 * p10 + d0 * (1 - d0))
    return (c - b - n * d0) / math.sqrt(var)


@pytest.mark.parametrize("b,c,n,margin", [(3, 4, 40, 0.1), (0, 2, 30, 0.15), (5, 1, 50, 0.1),
                                          (10, 14, 100, 0.09), (2, 9, 100, 0.08), (0, 0, 20, 0.2)])
def test_tost_p_is_the_larger_one_sided_score_p(b, c, n, margin):
    """p_tost from one-sided score tests at -margin and +margin, computed independently."""
    p_lower = float(sps.norm.sf(_score_p_independent(b, c, n, -margin)))
    p_upper = float(sps.norm.cdf(_score_p_independent(b, c, n, margin)))
    r = tost_equivalence(b, c, n, margin)
    assert r["p_lower"] == pytest.approx(p_lower, rel=1e-5, abs=1e-9)
    assert r["p_upper"] == pytest.approx(p_upper, rel=1e-5, abs=1e-9)
    assert r["p_tost"] == pytest.approx(max(p_lower, p_upper), rel=1e-5, abs=1e-9)


def test_tost_examples_and_edges():
    assert tost_equivalence(10, 12, 1000, 0.05)["equivalent"]
    assert not tost_equivalence(1, 1, 20, 0.05)["equivalent"]  # too few pairs to show equivalence
    assert not tost_equivalence(0, 150, 1000, 0.05)["equivalent"]  # diff 0.15 > margin
    r = tost_equivalence(0, 0, 0, 0.1)
    assert math.isnan(r["p_tost"]) and not r["equivalent"]
    with pytest.raises(ValueError):
        tost_equivalence(1, 1, 10, 0.0)


# --- exact coverage ----------------------------------------------------------------------------

COVERAGE_CASES = [(0.0, 0.1), (0.0, 0.2), (0.1, 0.0), (0.05, 0.05), (0.1, 0.1), (0.2, 0.2),
                  (0.05, 0.15), (0.3, 0.3)]


def test_coverage_probabilities_sum_to_one():
    assert exact_coverage(12, 0.2, 0.3, interval=lambda b, c, n: (-1.0, 1.0)) == pytest.approx(1.0)
    assert exact_coverage(12, 0.0, 0.0) == pytest.approx(1.0)  # only b = c = 0, which covers 0


@pytest.mark.parametrize("n", [30, 100])
@pytest.mark.parametrize("p10,p01", COVERAGE_CASES)
def test_score_interval_coverage_at_least_093(n, p10, p01):
    assert exact_coverage(n, p10, p01) >= 0.93


@pytest.mark.parametrize("n,p10,p01", [(30, 0.0, 0.1), (100, 0.0, 0.02)])
def test_agresti_min_undercovers_one_sided_flips(n, p10, p01):
    score = exact_coverage(n, p10, p01)
    old = exact_coverage(n, p10, p01, interval=_agresti_min)
    assert old < score


def test_coverage_rejects_bad_probabilities():
    with pytest.raises(ValueError):
        exact_coverage(10, 0.7, 0.5)
    with pytest.raises(ValueError):
        exact_coverage(0, 0.1, 0.1)


# --- exact null comparisons --------------------------------------------------------------------

def test_null_exceedance_counts_exact_ties_against_the_vector():
    # ASR 0.86 vs 0.70 on n = 100 prompts: +16/100; a null going 0.70 vs 0.86 is -16/100
    null = [(70 - 86, 100), (3, 100), (-2, 100), (5, 100)]
    two = null_exceedance(86 - 70, 100, null)
    assert two["count"] == 1 and two["p_value"] == 2 / 5 and two["p_exact"] == Fraction(2, 5)
    assert null_exceedance(16, 100, [(16, 100)], sided="greater")["count"] == 1
    # the same effect written with other denominators still ties (4/25 == 16/100 == 32/200)
    assert null_exceedance(16, 100, [(4, 25), (-32, 200)])["count"] == 2
    assert null_exceedance(15, 100, [(4, 25)])["count"] == 1  # larger in magnitude
    assert null_exceedance(17, 100, [(4, 25)])["count"] == 0


def test_null_exceedance_sides_and_min_p():
    null = [(-20, 100), (-5, 100), (5, 100), (10, 100), (30, 100)]
    assert null_exceedance(10, 100, null, sided="greater")["count"] == 2
    assert null_exceedance(10, 100, null, sided="less")["count"] == 4
    assert null_exceedance(10, 100, null, sided="two")["count"] == 3
    r = null_exceedance(50, 100, null)
    assert r["count"] == 0 and r["p_value"] == r["min_p"] == 1 / 6 and r["n_null"] == 5
    empty = null_exceedance(1, 10, [])
    assert empty["p_value"] == 1.0 and empty["min_p"] == 1.0


def test_null_exceedance_rejects_floats_and_bad_input():
    with pytest.raises(TypeError):
        null_exceedance(0.16, 1, [(1, 10)])
    with pytest.raises(TypeError):
        null_exceedance(16, 100, [(0.1, 1)])
    with pytest.raises(ValueError):
        null_exceedance(16, 0, [(1, 10)])
    with pytest.raises(ValueError):
        null_exceedance(16, 100, [(1, 10)], sided="both")
    assert null_exceedance(np.int64(16), np.int64(100), [(np.int64(-16), 100)])["count"] == 1


@pytest.mark.parametrize("alpha,k", [(0.05, 20), (0.01, 100), (0.03, 33), (0.1, 10), (1.0, 1)])
def test_nulls_needed(alpha, k):
    assert nulls_needed(alpha) == k
    assert Fraction(1, 1 + k) < Fraction(repr(alpha)) <= Fraction(1, k)
    assert null_exceedance(1, 1, [(0, 1)] * k)["min_p"] < alpha


def test_nulls_needed_rejects_bad_alpha():
    for alpha in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            nulls_needed(alpha)


# --- Benjamini-Hochberg over a named family ----------------------------------------------------

def test_bh_family_matches_plain_bh_and_drops_nan():
    tests = {"a": 0.01, "b": 0.04, "c": float("nan"), "d": 0.03, "e": 0.5}
    r = benjamini_hochberg_family(tests)
    assert r["m_adjusted"] == 4 and r["excluded"] == ["c"]
    ref = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert [r["q"][k] for k in "abde"] == pytest.approx(ref)
    assert "c" not in r["q"]


def test_bh_family_duplicates_empty_and_range():
    with pytest.raises(ValueError):
        benjamini_hochberg_family([("a", 0.01), ("a", 0.02)])
    assert benjamini_hochberg_family([("a", 0.01), ("b", None)])["excluded"] == ["b"]
    r = benjamini_hochberg_family({"x": float("nan")})
    assert r == {"q": {}, "m_adjusted": 0, "excluded": ["x"]}
    assert benjamini_hochberg_family({}) == {"q": {}, "m_adjusted": 0, "excluded": []}
    with pytest.raises(ValueError):
        benjamini_hochberg_family({"a": 1.2})
