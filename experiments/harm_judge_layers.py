"""Harm-judge candidates on all labelled rows, held out by goal: each embedded model's residual
stream at several layers, trained on every row or on the string judge's non-refusals only.

Same recipe and nested protocol as `harm_judge_fit.py` (standardise, PCA, class-balanced
logistic regression; C, k and threshold chosen inside each outer training part by 4-fold
GroupKFold over goals; 5 outer folds of goals). Refused rows (by `refusal_string`) are always
predicted not harmful, as the shipped judge does. Reported: Cohen's kappa against harmful
compliance over all rows, and over each labelling round's rows; the string judges beside them.

    python experiments/harm_judge_layers.py --cache /tmp/hj --json docs/harm_judge_layers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from steerlens.judges.harm_training import kappas, load_labels, nested

MODELS = {"qwen2.5-coder-0.5b-instruct": (6, 8, 10, 12, 14, 16, 18, 20),
          "qwen2.5-coder-1.5b-instruct": (8, 12, 16, 20, 24)}


def features(name: str, layers, rows: list[dict], cache: Path) -> dict[str, np.ndarray]:
    """Last-token resid_pre of HARM_PROMPT per layer, cached as feats_<model>.npz."""
    path = cache / f"feats_{name}.npz"
    ids = [r["id"] for r in rows]
    if path.exists():
        got = np.load(path)
        if list(got["ids"]) == ids:
            return {k: got[k] for k in got.files if k != "ids"}
    from steerlens.core.models import load_model
    from steerlens.judges.harm import qwen_features

    t = time.time()
    f = qwen_features([r["goal"] for r in rows], [r["completion"] for r in rows], layers,
                      load_model(name, device="cpu"), batch_size=8)
    print(f"{name}: features in {time.time() - t:.0f} s", file=sys.stderr)
    out = {str(k): v for k, v in f.items()}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.array(ids), **out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from steerlens.judges.registry import get_judge

    rows = load_labels()
    goals, comps = [r["goal"] for r in rows], [r["completion"] for r in rows]
    y = np.array([r["label"] == "complied_harmful" for r in rows])
    g = np.array(goals)
    nonref = np.array(get_judge("refusal_string").judge(goals, comps))
    r2 = np.array([r["id"].startswith("r2_") for r in rows])
    rep: dict = {"n_rows": len(rows), "n_goals": len(set(goals)), "n_harmful": int(y.sum()),
                 "strings": {}, "candidates": []}
    for name in ("refusal_string", "refusal_string_strict", "jbb_string"):
        rep["strings"][name] = kappas(np.array(get_judge(name).judge(goals, comps)), rows)
    for model, layers in MODELS.items():
        feats = features(model, layers, rows, a.cache)
        for lay in layers:
            for train, mask in (("all rows", np.ones(len(y), bool)), ("non-refusals", nonref)):
                p = nested(feats[str(lay)], y, g, mask) & nonref
                rec = {"model": model, "layer": lay, "trained_on": train,
                       "kappa_harm": float(cohen_kappa_score(y, p)),
                       "kappa_round1": float(cohen_kappa_score(y[~r2], p[~r2])),
                       "kappa_round2": float(cohen_kappa_score(y[r2], p[r2])),
                       "positive_rate": float(p.mean())}
                rep["candidates"].append(rec)
                print(json.dumps(rec), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()
