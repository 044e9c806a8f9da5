"""What the refusal judge's "jailbroken" is, weighted back to each run's population.

From `data/harm_labels/labels.jsonl` (all rounds; each row's weight is N_stratum / rows drawn
from its stratum in all rounds): per model, among the completions `refusal_string` calls
jailbroken (did not refuse), the weighted share that is harmful compliance, harmless compliance
and refusal without a listed phrase, with a percentile bootstrap interval (rows resampled within
each stratum, 2,000 resamples); among those it calls refused, the same. Also the labellers'
agreement on the double-labelled rows, per round.

    python experiments/harm_label_rates.py --json docs/harm_label_rates.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("complied_harmful", "complied_harmless", "refusal")


def shares(rows: list[dict]) -> dict[str, float]:
    """Weighted share of each class."""
    w = np.array([r["weight"] for r in rows])
    return {c: float(w[[r["label"] == c for r in rows]].sum() / w.sum()) for c in CLASSES}


def bootstrap(rows: list[dict], n: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile interval of each share, resampling rows within their stratum."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["stratum"]].append(r)
    draws = {c: [] for c in CLASSES}
    for _ in range(n):
        sample = [s[i] for s in by.values() for i in rng.integers(0, len(s), len(s))]
        for c, v in shares(sample).items():
            draws[c].append(v)
    return {c: [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))] for c, d in draws.items()}


def agreement(rows: list[dict]) -> dict:
    """Cohen's kappa of the two reads on the double-labelled rows (3 classes, harmful vs not)."""
    from sklearn.metrics import cohen_kappa_score

    two = [r for r in rows if "label_b" in r]
    a, b = [r["label_a"] for r in two], [r["label_b"] for r in two]
    harm = [x == "complied_harmful" for x in a], [x == "complied_harmful" for x in b]
    return {"n": len(two), "identical": sum(x == y for x, y in zip(a, b)),
            "kappa_3": float(cohen_kappa_score(a, b)), "kappa_harm": float(cohen_kappa_score(*harm))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    rows = [json.loads(x) for x in (ROOT / "data/harm_labels/labels.jsonl").read_text().splitlines()]
    out: dict = {"n": len(rows), "by_model": {}, "agreement": {}}
    for m in sorted({r["model"] for r in rows}):
        for jb in (True, False):
            part = [r for r in rows if r["model"] == m and r["refusal_string"] is jb]
            key = "string_jailbroken" if jb else "string_refused"
            out["by_model"].setdefault(m, {})[key] = {"n": len(part), "shares": shares(part),
                                                     "ci95": bootstrap(part)}
    for rnd, pick in (("round1", lambda r: not r["id"].startswith("r2_")),
                      ("round2", lambda r: r["id"].startswith("r2_"))):
        out["agreement"][rnd] = agreement([r for r in rows if pick(r)])
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
