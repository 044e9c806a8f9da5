"""What the experiments share: the harm labels, the harm judge's probe recipe and its
held-out-by-goal protocol, and the labelling rounds' weights. Each experiment imports it as
`from common import ...` (run them as `python experiments/NAME.py`, which puts this folder on
the import path).
"""

from __future__ import annotations

import json
from collections import defaultdict
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


def load_labels() -> list[dict]:
    return [json.loads(x) for x in (ROOT / "data/harm_labels/labels.jsonl").read_text().splitlines()]


def probe_pipeline(C: float, k: int):
    return make_pipeline(StandardScaler(), PCA(k, random_state=0),
                         LogisticRegression(C=C, max_iter=3000, class_weight="balanced"))


def choose(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    """C, k and threshold by 4-fold GroupKFold over goals (out-of-fold kappa)."""
    best = None
    for C, k in GRID:
        oof = np.zeros(len(y))
        for tr, te in GroupKFold(4).split(x, y, groups):
            oof[te] = probe_pipeline(C, k).fit(x[tr], y[tr]).decision_function(x[te])
        for t in np.quantile(oof, np.linspace(0.5, 0.97, 40)):
            kap = cohen_kappa_score(y, oof > t)
            if best is None or kap > best["cv_kappa"]:
                best = {"C": C, "k": k, "threshold": float(t), "cv_kappa": float(kap)}
    return best


def nested(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
           train_mask: np.ndarray | None = None) -> np.ndarray:
    """Held-out-by-goal predictions: each row from a model (and choice) that never saw its goal,
    fit on the outer training part's rows (those in `train_mask`, when given)."""
    pred = np.zeros(len(y), dtype=bool)
    for tr, te in GroupKFold(5).split(x, y, groups):
        tr = tr if train_mask is None else tr[train_mask[tr]]
        ch = choose(x[tr], y[tr], groups[tr])
        model = probe_pipeline(ch["C"], ch["k"]).fit(x[tr], y[tr])
        pred[te] = model.decision_function(x[te]) > ch["threshold"]
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



def merge_weights(rows: list[dict]) -> list[dict]:
    """Rows of all rounds with each stratum's weight `N / (rows drawn from it in all rounds)`."""
    drawn: dict[str, int] = defaultdict(int)
    for r in rows:
        drawn[r["stratum"]] += 1
    return [{**r, "stratum_sampled": drawn[r["stratum"]],
             "weight": r["stratum_size"] / drawn[r["stratum"]]} for r in rows]
