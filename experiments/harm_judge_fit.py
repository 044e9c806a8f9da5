"""Fit and measure the harm judge (`steerlens.judges.harm`) on the labelled completions, held
out by goal.

Labels: `data/harm_labels/labels.jsonl` (451 rows, three classes; harm = `complied_harmful`).
Features: the embedded 0.5B's last-token `resid_pre` at LAYER of `HARM_PROMPT` (goal and
response). Model: standardise, PCA to k dimensions, class-balanced logistic regression; all
three are linear, so the shipped judge is one weight vector and a bias.

Agreement is measured by **nested cross-validation grouped by goal**: 5 outer folds of goals;
within each outer training part, C, k and the threshold are chosen by 4-fold GroupKFold
(kappa); the outer fold's rows are predicted by a model that never saw their goals. The
shipped weights are then fit on every row with C, k and threshold chosen the same way.
Also reported: the string judges on the same rows (against harm and against non-refusal),
and every judge against JailbreakBench's 1,637 artifact labels.

    python experiments/harm_judge_fit.py --json docs/harm_judge_fit.json --save steerlens/judges/weights
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import ARTIFACT_CHARS, choose, features, kappas, linearise, load_labels, nested, probe_pipeline
from sklearn.metrics import cohen_kappa_score


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save", type=Path, help="directory for the judge's weights")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--cache", type=Path, default=None, help="feature cache directory")
    a = ap.parse_args(argv)
    from steerlens.datasets.jbb_artifacts import load_artifacts
    from steerlens.judges.registry import get_judge

    rows, arts = load_labels(), load_artifacts()
    goals, comps = [r["goal"] for r in rows], [r["completion"] for r in rows]
    y = np.array([r["label"] == "complied_harmful" for r in rows])
    g = np.array(goals)
    t0 = time.time()
    x = features(goals, comps, a.layer, a.cache, "labels")
    xa = features([r.goal for r in arts], [r.response[:ARTIFACT_CHARS] for r in arts], a.layer, a.cache,
                  "artifacts")
    ya = np.array([r.jailbroken for r in arts])
    report = {"layer": a.layer, "n_rows": len(rows), "n_goals": len(set(goals)),
              "n_harmful": int(y.sum()), "feature_seconds": time.time() - t0, "judges": {}}
    for name in ("refusal_string", "refusal_string_strict", "jbb_string"):
        j = get_judge(name)
        report["judges"][name] = {"labels": kappas(np.array(j.judge(goals, comps)), rows),
                                  "jbb_artifacts_kappa": float(cohen_kappa_score(
                                      ya, j.judge([r.goal for r in arts], [r.response for r in arts])))}
    refused = ~np.array(get_judge("refusal_string").judge(goals, comps))
    held = nested(x, y, g) & ~refused
    final = choose(x, y, g)
    model = probe_pipeline(final["C"], final["k"]).fit(x, y)
    w, b = linearise(model, x.shape[1])
    art_refused = ~np.array(get_judge("refusal_string").judge([r.goal for r in arts],
                                                             [r.response for r in arts]))
    art_pred = (xa @ w + b > final["threshold"]) & ~art_refused
    report["judges"]["harm"] = {"labels_held_out_by_goal": kappas(held, rows), **final,
                                "jbb_artifacts_kappa": float(cohen_kappa_score(ya, art_pred))}
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    if a.save:
        from steerlens.judges.harm import save_weights

        save_weights(a.save, a.layer, w, b, final, report)


if __name__ == "__main__":
    main()
