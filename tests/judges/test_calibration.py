"""Calibration against JailbreakBench's artifact labels: thresholds and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from steerlens.datasets.jbb_artifacts import METHODS, artifacts_sha256


def test_thresholds_fit_without_the_held_out_method():
    from steerlens.judges.metrics import best_threshold, lomo_threshold

    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.5
    scores = np.where(y, 1.0, -1.0) + rng.normal(0, 0.3, 200) + 5.0
    assert 4.0 < best_threshold(scores, y) < 6.0
    methods = np.array([METHODS[i % 5] for i in range(200)])
    res = lomo_threshold(scores, y, methods)
    assert set(res["thresholds"]) == set(METHODS) and res["overall"]["kappa"] > 0.9


def test_calibrate_cli_string_judge(capsys):
    from steerlens.judges.calibration import calibrate, main

    res = calibrate("refusal_string", {})
    assert res["n"] == 1637 and res["data_sha256"] == artifacts_sha256()
    assert res["overall"]["kappa"] == pytest.approx(0.755, abs=0.001)  # docs/judges.md table
    assert main(["calibrate", "--judge", "jbb_string", "--limit", "200"]) == 0
    out = capsys.readouterr().out
    assert "kappa" in out and "PAIR" in out and "200 responses" in out
    assert main(["calibrate", "--judge", "nope"]) == 2
    assert "unknown judge" in capsys.readouterr().err
