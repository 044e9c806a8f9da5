import math

import pytest
from scipy import stats as sps

from steerlens.results.stats import (
    asr,
    benjamini_hochberg,
    mcnemar_exact,
    mcnemar_power,
    minimum_detectable_shift,
    null_percentile,
    paired_difference,
    per_category,
    permutation_correlation,
    smallest_permutation_p,
    wilson,
)


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3
    lo, hi = wilson(0, 10)
    assert lo == 0 and abs(hi - 0.2775) < 1e-3


def test_asr_and_categories():
    r = asr([True, False, True, True])
    assert r["asr"] == 0.75 and r["k"] == 3 and r["ci_low"] < 0.75 < r["ci_high"]
    pc = per_category([True, False, True], ["a", "a", "b"])
    assert pc["a"]["asr"] == 0.5 and pc["b"]["asr"] == 1.0


def test_mcnemar_exact():
    base = [False] * 10
    other = [True] * 8 + [False] * 2
    r = mcnemar_exact(base, other)
    assert r["only_other"] == 8 and r["only_base"] == 0
    assert abs(r["p_value"] - 2 * 0.5**8) < 1e-12
    assert mcnemar_exact(base, base)["p_value"] == 1.0


def test_paired_difference_agresti_min():
    """Agresti & Min (2005): Wald interval on the table with 1/2 added to each cell."""
    base = [True] * 30 + [False] * 70
    other = [True] * 20 + [False] * 10 + [True] * 25 + [False] * 45  # b=10, c=25
    d = paired_difference(base, other)
    assert abs(d["diff"] - 0.15) < 1e-12
    nb, nc, n = 10.5, 25.5, 102
    centre = (nc - nb) / n
    half = 1.959964 * math.sqrt((nb + nc) - (nc - nb) ** 2 / n) / n
    assert abs(d["ci_low"] - (centre - half)) < 1e-9 and abs(d["ci_high"] - (centre + half)) < 1e-9


def test_mcnemar_power_against_simulation():
    import random

    rng = random.Random(0)
    n, up, down, hits, reps = 40, 0.25, 0.05, 0, 2000
    for _ in range(reps):
        b = c = 0
        for _ in range(n):
            u = rng.random()
            c += u < up
            b += up <= u < up + down
        hits += b + c > 0 and abs(c - b) / (b + c) ** 0.5 > sps.norm.ppf(0.975)  # the score test
    assert abs(mcnemar_power(n, 0.20, 0.05) - hits / reps) < 0.03


def test_minimum_detectable_shift_shrinks_with_n():
    m20, m100 = minimum_detectable_shift(20, 0.05), minimum_detectable_shift(100, 0.05)
    assert 0.3 <= m20 <= 0.55 and 0.08 <= m100 <= 0.2 and m100 < m20
    assert mcnemar_power(100, m100, 0.05) >= 0.8 > mcnemar_power(100, m100 - 0.01, 0.05)


def test_benjamini_hochberg_matches_scipy_and_keeps_nan():
    p = [0.01, 0.04, 0.03, float("nan"), 0.5]
    q = benjamini_hochberg(p)
    ref = sps.false_discovery_control([0.01, 0.04, 0.03, 0.5])
    assert math.isnan(q[3]) and [q[i] for i in (0, 1, 2, 4)] == pytest.approx(list(ref))


def test_permutation_correlation_exact_and_sampled():
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    r = permutation_correlation(x, [1, 2, 3, 4, 5])
    assert r["exact"] and abs(r["r"] - 1) < 1e-12 and abs(r["p_value"] - 2 / 120) < 1e-12
    r = permutation_correlation(list(range(10)), [3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    assert not r["exact"] and 0 < r["p_value"] <= 1
    assert math.isnan(permutation_correlation([1, 1, 1], [1, 2, 3])["r"])


def test_smallest_permutation_p_is_attained():
    """The floor printed for claim 3 is what the exact test gives when x is not symmetric."""
    x, y = [-0.11, -0.10, 0.10], [0.17, 0.12, -0.35]
    r = permutation_correlation(x, y)
    assert r["p_value"] == pytest.approx(smallest_permutation_p(3)) == pytest.approx(1 / 6)
    assert smallest_permutation_p(5) == pytest.approx(1 / 120)
    assert math.isnan(smallest_permutation_p(2))


def test_null_percentile():
    assert null_percentile(0.5, [0.1, -0.2, 0.6, -0.7]) == 50.0
    assert null_percentile(-0.9, [0.1, 0.2]) == 100.0
    assert math.isnan(null_percentile(0.1, []))
