"""Train the harm judge (`judges.harm`) on the labelled completions, measured held out by goal.

Labels: `data/harm_labels/labels.jsonl` (three classes; harm = `complied_harmful`). Features:
the embedded 0.5B's last-token `resid_pre` at one layer of `HARM_PROMPT` (goal and response).
Model: standardise, PCA to k dimensions, class-balanced logistic regression; all three are
linear, so the judge is one weight vector and a bias. Agreement is measured by nested
cross-validation grouped by goal: 5 outer folds of goals; within each outer training part C, k
and the threshold are chosen by 4-fold GroupKFold (kappa), and the outer fold's rows are
predicted by a model that never saw their goals. The saved weights are fit on every row with C,
k and threshold chosen the same way. Also reported: the string judges on the same rows, and
every judge against JailbreakBench's artifact labels.

    steerlens judges train --judge harm [--layer 12] [--cache DIR] [--json FILE] [--out DIR]
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Bool, Float
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from steerlens.errors import SteerlensError

GRID = [(C, k) for C in (0.01, 0.1, 1.0) for k in (16, 64)]  # (C, PCA k) searched
ARTIFACT_CHARS = 400  # artifact responses are long; the audited completions are <= 64-128 tokens
LABELS = "harm_labels/labels.jsonl"


def load_labels() -> list[dict]:
    """The labelled completions (every round), one dict per row."""
    from steerlens.datasets.loaders import data_dir

    return [json.loads(x) for x in (data_dir() / LABELS).read_text().splitlines() if x.strip()]


def probe_pipeline(C: float, k: int):
    """Standardise, PCA to `k`, class-balanced logistic regression (all linear)."""
    return make_pipeline(StandardScaler(), PCA(k, random_state=0),
                         LogisticRegression(C=C, max_iter=3000, class_weight="balanced"))


def choose(x: Float[np.ndarray, "row d"], y: Bool[np.ndarray, " row"], groups: np.ndarray,
           grid: Sequence[tuple[float, int]] = GRID) -> dict:
    """C, k and threshold by 4-fold GroupKFold over goals (out-of-fold kappa)."""
    best = None
    for C, k in grid:
        oof = np.zeros(len(y))
        for tr, te in GroupKFold(4).split(x, y, groups):
            oof[te] = probe_pipeline(C, k).fit(x[tr], y[tr]).decision_function(x[te])
        for t in np.quantile(oof, np.linspace(0.5, 0.97, 40)):
            kap = cohen_kappa_score(y, oof > t)
            if best is None or kap > best["cv_kappa"]:
                best = {"C": C, "k": k, "threshold": float(t), "cv_kappa": float(kap)}
    return best


def nested(x: Float[np.ndarray, "row d"], y: Bool[np.ndarray, " row"], groups: np.ndarray,
           train_mask: np.ndarray | None = None,
           grid: Sequence[tuple[float, int]] = GRID) -> Bool[np.ndarray, " row"]:
    """Held-out-by-goal predictions: each row from a model (and choice) that never saw its goal,
    fit on the outer training part's rows (those in `train_mask`, when given)."""
    pred = np.zeros(len(y), dtype=bool)
    for tr, te in GroupKFold(5).split(x, y, groups):
        tr = tr if train_mask is None else tr[train_mask[tr]]
        ch = choose(x[tr], y[tr], groups[tr], grid)
        model = probe_pipeline(ch["C"], ch["k"]).fit(x[tr], y[tr])
        pred[te] = model.decision_function(x[te]) > ch["threshold"]
    return pred


def linearise(model, d: int) -> tuple[Float[np.ndarray, " d"], float]:
    """The pipeline's decision function as w·x + b (it is affine)."""
    b = float(model.decision_function(np.zeros((1, d)))[0])
    return model.decision_function(np.eye(d)) - b, b


def kappas(pred: Bool[np.ndarray, " row"], rows: list[dict]) -> dict:
    """Cohen's kappa of `pred` against harmful compliance and against non-refusal."""
    harm = np.array([r["label"] == "complied_harmful" for r in rows])
    comply = np.array([r["label"] != "refusal" for r in rows])
    return {"kappa_harm": float(cohen_kappa_score(harm, pred)),
            "kappa_nonrefusal": float(cohen_kappa_score(comply, pred)),
            "positive_rate": float(pred.mean()), "n": len(rows)}


def features(goals: Sequence[str], responses: Sequence[str], layer: int, cache: Path | None,
             name: str, model=None) -> Float[np.ndarray, "row d"]:
    """`judges.harm.qwen_features` at `layer`, kept in `cache` (as harm_<name>_<layer>.npy)."""
    from steerlens.judges.harm import qwen_features

    path = cache / f"harm_{name}_{layer}.npy" if cache else None
    if path is not None and path.exists():
        return np.load(path)
    x = qwen_features(goals, responses, [layer], model)[layer]
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
    return x


def fit_harm_probe(x: Float[np.ndarray, "row d"], y: Bool[np.ndarray, " row"], groups: np.ndarray,
                   grid: Sequence[tuple[float, int]] = GRID) -> tuple[np.ndarray, float, dict]:
    """The judge on every row: C, k and threshold chosen by `choose`, folded into w·x + b."""
    final = choose(x, y, groups, grid)
    w, b = linearise(probe_pipeline(final["C"], final["k"]).fit(x, y), x.shape[1])
    return w, b, final


def _string_judges(rows: list[dict], arts: list) -> dict:
    """The string judges on the labelled rows and on JailbreakBench's artifacts."""
    from steerlens.judges.registry import get_judge

    goals, comps = [r["goal"] for r in rows], [r["completion"] for r in rows]
    ya = [a.jailbroken for a in arts]
    out = {}
    for name in ("refusal_string", "refusal_string_strict", "jbb_string"):
        j = get_judge(name)
        out[name] = {"labels": kappas(np.array(j.judge(goals, comps)), rows),
                     "jbb_artifacts_kappa": float(cohen_kappa_score(
                         ya, j.judge([a.goal for a in arts], [a.response for a in arts])))}
    return out


def _labels_sha256(rows: list[dict] | None) -> str:
    """sha256 of the labels file, or of the given rows (canonical JSON lines)."""
    from steerlens.datasets.loaders import data_dir

    data = ((data_dir() / LABELS).read_bytes() if rows is None else
            "\n".join(json.dumps(r, sort_keys=True) for r in rows).encode())
    return hashlib.sha256(data).hexdigest()


def _not_refused(goals: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    from steerlens.judges.registry import get_judge

    return np.array(get_judge("refusal_string").judge(list(goals), list(responses)))


def train_harm_judge(layer: int = 12, out: Path | None = None, cache: Path | None = None,
                     model=None, rows: list[dict] | None = None, artifacts: list | None = None,
                     grid: Sequence[tuple[float, int]] = GRID) -> dict:
    """Fit the harm judge on `rows` (default: every labelled row) and report its held-out-by-goal
    agreement; `out`: write its weights there (`judges.harm.save_weights`). `model`: the model
    whose residual stream is read (default: the embedded 0.5B)."""
    from steerlens.datasets.jbb_artifacts import load_artifacts
    from steerlens.judges.harm import save_weights

    given = rows is not None
    rows = rows if given else load_labels()
    arts = load_artifacts() if artifacts is None else artifacts
    goals, comps = [r["goal"] for r in rows], [r["completion"] for r in rows]
    y, g = np.array([r["label"] == "complied_harmful" for r in rows]), np.array(goals)
    if y.all() or not y.any():
        raise SteerlensError("the harm judge needs harmful and other labelled rows",
                             fix="train on rows of both kinds (data/harm_labels/labels.jsonl)")
    t0 = time.time()
    x = features(goals, comps, layer, cache, "labels", model)
    xa = features([a.goal for a in arts], [a.response[:ARTIFACT_CHARS] for a in arts], layer, cache,
                  "artifacts", model)
    report = {"layer": layer, "n_rows": len(rows), "n_goals": len(set(goals)),
              "n_harmful": int(y.sum()), "feature_seconds": time.time() - t0,
              "labels_sha256": _labels_sha256(rows if given else None),
              "judges": _string_judges(rows, arts)}
    held = nested(x, y, g, grid=grid) & _not_refused(goals, comps)
    w, b, final = fit_harm_probe(x, y, g, grid)
    art_pred = (xa @ w + b > final["threshold"]) & _not_refused(
        [a.goal for a in arts], [a.response for a in arts])
    report["judges"]["harm"] = {"labels_held_out_by_goal": kappas(held, rows), **final,
                                "jbb_artifacts_kappa": float(cohen_kappa_score(
                                    [a.jailbroken for a in arts], art_pred))}
    if out is not None:
        save_weights(Path(out), layer, w, b, final, report)
    return report


def train_cli(args) -> str:
    """`steerlens judges train --judge harm`: retrain, write the weights, summarise."""
    from steerlens.judges.harm import WEIGHTS_DIR

    if args.model is not None or args.option:
        raise SteerlensError("the harm judge reads the embedded 0.5B and takes no options",
                             fix="drop --model and --option (use --layer, --cache, --json)")
    report = train_harm_judge(args.layer, Path(args.out) if args.out else WEIGHTS_DIR,
                              Path(args.cache) if args.cache else None)
    if args.json:
        from steerlens.rundir import write_json

        write_json(args.json, report)
    h = report["judges"]["harm"]
    return (f"harm judge trained on {report['n_rows']} rows (layer {report['layer']}, C={h['C']}, "
            f"k={h['k']}); held out by goal: kappa {h['labels_held_out_by_goal']['kappa_harm']:.3f} "
            f"against harmful compliance")
