"""Harm-judge training (`judges.harm_training`, `steerlens judges train --judge harm`) on tiny data:
the tiny model's residual stream, a slice of the labels, a few artifacts."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from steerlens.judges import harm_training as ht
from steerlens.judges.calibration import main as judges_main

GRID = [(0.1, 4), (1.0, 8)]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    from steerlens.datasets.jbb_artifacts import load_artifacts
    from steerlens.judges.metrics import stratified_sample

    rows = ht.load_labels()
    harmful = [r for r in rows if r["label"] == "complied_harmful"][:24]
    other = [r for r in rows if r["label"] != "complied_harmful"][::15][:36]
    out = tmp_path_factory.mktemp("harm-weights")
    report = ht.train_harm_judge(1, out, model=tiny_model, rows=harmful + other,
                                 artifacts=stratified_sample(load_artifacts(), 20), grid=GRID)
    return report, out, harmful + other


def test_training_reports_held_out_agreement(trained):
    report, _, rows = trained
    h = report["judges"]["harm"]
    assert (report["n_rows"], report["n_harmful"], report["layer"]) == (60, 24, 1)
    assert (h["C"], h["k"]) in GRID and -1 <= h["labels_held_out_by_goal"]["kappa_harm"] <= 1
    assert h["labels_held_out_by_goal"]["n"] == 60 and np.isfinite(h["jbb_artifacts_kappa"])
    assert {"refusal_string", "refusal_string_strict", "jbb_string"} <= set(report["judges"])


def test_saved_weights_are_the_fitted_pipeline(trained, tiny_model):
    """The judge loads from the written files, and w·x + b is the pipeline's decision function."""
    from steerlens.judges.harm import load_harm_judge, qwen_features

    report, out, rows = trained
    judge = load_harm_judge(weights_dir=str(out))
    h = report["judges"]["harm"]
    assert judge.meta["layer"] == 1 and judge.meta["threshold"] == h["threshold"]
    assert judge.meta["labels_sha256"] == report["labels_sha256"]
    goals, comps = [r["goal"] for r in rows], [r["completion"] for r in rows]
    x = qwen_features(goals, comps, [1], tiny_model)[1]
    y = np.array([r["label"] == "complied_harmful" for r in rows])
    pipeline = ht.probe_pipeline(h["C"], h["k"]).fit(x, y)
    assert np.allclose(x @ judge.coef + judge.intercept, pipeline.decision_function(x),
                       rtol=1e-4, atol=1e-3)


def test_nested_predictions_never_see_their_goal():
    """Features that only name the goal (labels random per goal) fit in sample, not held out."""
    rng = np.random.default_rng(0)
    goals = np.repeat(np.arange(30), 4)
    x = np.eye(30)[goals] * 5 + rng.normal(0, 0.1, (120, 30))
    y = np.repeat(rng.random(30) < 0.4, 4)
    w, b, _ = ht.fit_harm_probe(x, y, goals, [(1.0, 29)])
    assert cohen_kappa_score(y, x @ w + b > 0) > 0.9  # in sample the goal names the label
    assert cohen_kappa_score(y, ht.nested(x, y, goals, grid=[(1.0, 20)])) < 0.3


def test_cli_rejects_options_the_harm_judge_does_not_take(capsys):
    assert judges_main(["train", "--judge", "harm", "--model", "other"]) == 2
    assert "takes no options" in capsys.readouterr().err
