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

    python benchmarks/harm_judge_fit.py --json docs/harm_judge_fit.json --save steerlens/judges/weights
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
GRID = [(C, k) for C in (0.01, 0.1, 1.0) for k in (16, 64)]
ARTIFACT_CHARS = 400  # artifact responses are long; the audited completions are <= 64-128 tokens


def load_rows() -> list[dict]:
    return [json.loads(x) for x in (ROOT / "data/harm_labels/labels.jsonl").read_text().splitlines()]


def _model(C: float, k: int):
    return make_pipeline(StandardScaler(), PCA(k, random_state=0),
                         LogisticRegression(C=C, max_iter=3000, class_weight="balanced"))


def choose(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    """C, k and threshold by 4-fold GroupKFold over goals (out-of-fold kappa)."""
    best = None
    for C, k in GRID:
        oof = np.zeros(len(y))
        for tr, te in GroupKFold(4).split(x, y, groups):
            oof[te] = _model(C, k).fit(x[tr], y[tr]).decision_function(x[te])
        for t in np.quantile(oof, np.linspace(0.5, 0.97, 40)):
            kap = cohen_kappa_score(y, oof > t)
            if best is None or kap > best["cv_kappa"]:
                best = {"C": C, "k": k, "threshold": float(t), "cv_kappa": float(kap)}
    return best


def nested(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Held-out-by-goal predictions: each row from a model (and choice) that never saw its goal."""
    pred = np.zeros(len(y), dtype=bool)
    for tr, te in GroupKFold(5).split(x, y, groups):
        ch = choose(x[tr], y[tr], groups[tr])
        pred[te] = _model(ch["C"], ch["k"]).fit(x[tr], y[tr]).decision_function(x[te]) > ch["threshold"]
    return pred


def linearise(model, d: int) -> tuple[np.ndarray, float]:
    """The pipeline's decision function as w·x + b (it is affine)."""
    b = float(model.decision_function(np.zeros((1, d)))[0])
    return model.decision_function(np.eye(d)) - b, b


def kappas(pred: np.ndarray, rows: list[dict]) -> dict:
    harm = np.array([r["label"] == "complied_harmful" for r in rows])
    comply = np.array([r["label"] != "refusal" for r in rows])
    return {"kappa_harm": float(cohen_kappa_score(harm, pred)),
            "kappa_nonrefusal": float(cohen_kappa_score(comply, pred)),
            "positive_rate": float(pred.mean()), "n": len(rows)}


def features(goals, responses, layer: int, cache: Path | None, name: str) -> np.ndarray:
    path = cache / f"harm_{name}_{layer}.npy" if cache else None
    if path is not None and path.exists():
        return np.load(path)
    from steerlens.judges.harm import qwen_features

    x = qwen_features(goals, responses, [layer])[layer]
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
    return x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save", type=Path, help="directory for the judge's weights")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--cache", type=Path, default=None, help="feature cache directory")
    a = ap.parse_args(argv)
    from steerlens.datasets.jbb_artifacts import load_artifacts
    from steerlens.judges.registry import get_judge

    rows, arts = load_rows(), load_artifacts()
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
    model = _model(final["C"], final["k"]).fit(x, y)
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
