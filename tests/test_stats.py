import math

from steerlens.stats import asr, mcnemar_exact, ols, per_category, wilson


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


def test_ols():
    r = ols([0, 1, 2, 3], [1, 3, 5, 7])
    assert abs(r["slope"] - 2) < 1e-12 and abs(r["r2"] - 1) < 1e-12
    assert math.isnan(ols([1, 1, 1], [1, 2, 3])["slope"])
