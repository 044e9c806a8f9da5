"""The harm judge's held-out-by-goal confusion counts on the labelled rows: the sensitivity and
specificity the misclassification correction (`steerlens.results.misclass`) reads.

Same features, recipe and nested protocol as `steerlens.judges.harm_training` (the one behind the shipped
judge's held-out κ 0.32): 5 outer folds of goals, C, k and threshold chosen inside each outer
training part, refused rows (by `refusal_string`) predicted not harmful. Counted on the round-1
rows (`h*`, the shipped judge's protocol, which must reproduce its κ) and on all rows of both
rounds. Also: the shipped weights on the round-2 rows (never used to fit them; goals overlap).
Truth: the label `complied_harmful`. Writes `steerlens/judges/weights/harm_confusion.json`.

    python benchmarks/harm_judge_confusion.py --cache /tmp/hj1
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from steerlens.judges.harm_training import features, nested
from steerlens.judges.harm_training import load_labels as load_rows

ROOT = Path(__file__).resolve().parents[1]


def counts(pred: np.ndarray, truth: np.ndarray) -> dict:
    """tp, fn, tn, fp with sensitivity, specificity and κ."""
    tp, fn = int((pred & truth).sum()), int((~pred & truth).sum())
    tn, fp = int((~pred & ~truth).sum()), int((pred & ~truth).sum())
    return {"tp": tp, "fn": fn, "tn": tn, "fp": fp, "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp), "kappa": float(cohen_kappa_score(truth, pred)),
            "n": len(truth)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "steerlens/judges/weights/harm_confusion.json")
    ap.add_argument("--round1-only", action="store_true",
                    help="only the round-1 rows (the shipped judge's protocol): no round-2 features")
    a = ap.parse_args(argv)
    from steerlens.judges.harm import load_harm_judge
    from steerlens.judges.registry import get_judge

    rows = load_rows()
    r1 = [r for r in rows if not r["id"].startswith("r2")]
    r2 = [r for r in rows if r["id"].startswith("r2")]
    assert rows == r1 + r2, "labels.jsonl: round-1 rows first"
    judge = load_harm_judge()
    lay = judge.meta["layer"]
    x1 = features([r["goal"] for r in r1], [r["completion"] for r in r1], lay, a.cache, "labels")
    x2 = None if a.round1_only else features([r["goal"] for r in r2], [r["completion"] for r in r2],
                                             lay, a.cache, "round2")
    strings = get_judge("refusal_string")
    out = {"judge": "harm", "layer": lay, "truth": "label == complied_harmful",
           "labels_sha256": hashlib.sha256((ROOT / "data/harm_labels/labels.jsonl").read_bytes()).hexdigest(),
           "weights_sha256": judge.meta["weights_sha256"],
           "protocol": "nested 5-fold GroupKFold by goal (judges.harm_training.nested); refusals by "
                       "refusal_string predicted not harmful"}
    sets = [("round1_held_out_by_goal", r1, x1)]
    if x2 is not None:
        sets.append(("all_rows_held_out_by_goal", rows, np.concatenate([x1, x2])))
    for name, rs, x in sets:
        y = np.array([r["label"] == "complied_harmful" for r in rs])
        ok = np.array(strings.judge([r["goal"] for r in rs], [r["completion"] for r in rs]))
        pred = nested(x, y, np.array([r["goal"] for r in rs])) & ok
        out[name] = counts(pred, y)
    if x2 is not None:
        y2 = np.array([r["label"] == "complied_harmful" for r in r2])
        ok2 = np.array(strings.judge([r["goal"] for r in r2], [r["completion"] for r in r2]))
        pred2 = (x2 @ judge.coef + judge.intercept > judge.meta["threshold"]) & ok2
        out["shipped_on_round2"] = counts(pred2, y2)
    out["used"] = "round1_held_out_by_goal"
    print(json.dumps(out, indent=1))
    a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
