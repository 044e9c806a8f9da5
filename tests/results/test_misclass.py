"""Harm rates corrected for the judge's error: Rogan-Gladen, and an interval that carries the
calibration's uncertainty (checked by simulation against the true shift)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steerlens.results.misclass import calibration, corrected_shift, rogan_gladen


def test_rogan_gladen_inverts_the_judges_error():
    se, sp = 0.6, 0.9
    for true in (0.0, 0.1, 0.35, 0.8):
        judged = true * se + (1 - true) * (1 - sp)
        assert rogan_gladen(judged, se, sp) == pytest.approx(true)
    assert rogan_gladen(0.01, se, sp) == 0.0  # below the false-positive floor: clipped
    assert np.isnan(rogan_gladen(0.3, 0.5, 0.5))  # a chance-level judge cannot be corrected


def test_corrected_shift_is_the_judged_shift_over_youden_j():
    cal = {"tp": 30, "fn": 20, "tn": 360, "fp": 40}  # Se 0.6, Sp 0.9, J 0.5
    base = [i < 20 for i in range(100)]
    other = [i < 30 for i in range(100)]
    r = corrected_shift(base, other, cal)
    assert r["sensitivity"] == 0.6 and r["specificity"] == 0.9
    assert r["delta"] == pytest.approx(0.10 / 0.5)
    assert r["ci_low"] < r["delta"] < r["ci_high"]


def test_interval_covers_the_true_shift_with_the_calibrations_uncertainty():
    """Simulated studies: true paired harm labels shift by +0.15, a judge with Se 0.55, Sp 0.92
    labels them, and each study also measures the judge on 50 harmful and 400 harmless labelled
    rows. The corrected interval covers the true shift about 95% of the time, the judged
    (uncorrected) shift is biased toward 0, and fixing Se, Sp at their estimates undercovers."""
    rng = np.random.default_rng(3)
    se, sp, n, true_d, reps = 0.55, 0.92, 200, 0.15, 300
    cover, cover_fixed, raw = 0, 0, []
    for _ in range(reps):
        base = rng.uniform(size=n) < 0.15
        up = (~base) & (rng.uniform(size=n) < true_d / 0.85)
        other = base | up
        judge = lambda x: np.where(x, rng.uniform(size=n) < se, rng.uniform(size=n) > sp)  # noqa: E731
        jb, jo = judge(base), judge(other)
        tp = int((rng.uniform(size=50) < se).sum())
        tn = int((rng.uniform(size=400) < sp).sum())
        cal = {"tp": tp, "fn": 50 - tp, "tn": tn, "fp": 400 - tn}
        r = corrected_shift(list(jb), list(jo), cal, seed=int(rng.integers(1 << 30)))
        truth = other.mean() - base.mean()
        cover += r["ci_low"] <= truth <= r["ci_high"]
        big = {"tp": tp * 10**6, "fn": (50 - tp) * 10**6, "tn": tn * 10**6, "fp": (400 - tn) * 10**6}
        f = corrected_shift(list(jb), list(jo), big, seed=1)
        cover_fixed += f["ci_low"] <= truth <= f["ci_high"]
        raw.append(jo.mean() - jb.mean())
    assert cover / reps >= 0.92
    assert cover_fixed < cover
    assert np.mean(raw) < 0.6 * true_d  # judged shift attenuated by J = 0.47


def test_calibration_only_for_the_weights_it_was_measured_on(tmp_path):
    conf = {"weights_sha256": "abc", "used": "round1", "round1": {"tp": 5, "fn": 5, "tn": 90, "fp": 10}}
    (tmp_path / "harm_confusion.json").write_text(json.dumps(conf))
    got = calibration({"weights_sha256": "abc"}, tmp_path)
    assert got["tp"] == 5 and got["fp"] == 10
    assert calibration({"weights_sha256": "other"}, tmp_path) is None
    assert calibration({}, tmp_path) is None
