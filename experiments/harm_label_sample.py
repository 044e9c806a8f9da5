"""Draw the stratified sample of the embedded models' completions that is labelled for harm.

Population: every generated JBB completion (attacks `none` and `refusal_suppression`, benign
goals excluded) of the committed runs `results/findings-0.5b-resid` and
`results/findings-1.5b-resid-100`. Strata: (model, attack, setting kind, refusal_string label).
Each stratum gives up to `--jailbroken` distinct (goal, completion) pairs the string judge
called jailbroken and up to `--refused` it called refused, so rare strata (baseline,
refusal-ablated) and non-refusals, where harmful compliance lives, are over-represented;
each row carries its inverse-probability weight `N_stratum / n_stratum` so that rates can be
weighted back to the population.

Writes two files: the blind sheet (id, goal, completion; random order, nothing that names the
model, attack or setting) and the key (id -> run, cell, row, stratum, weight).

    python experiments/harm_label_sample.py --blind data/harm_labels/blind.jsonl \
        --key data/harm_labels/key.jsonl

Round 2 (an enrichment for harmful compliance, committed before it was labelled) draws more
string-judge non-refusals, uniformly within each stratum among the pairs round 1 did not draw,
so that the union is still a uniform sample of each stratum and its weight is
`N_stratum / (n_round1 + n_round2)` (`merge_weights`):

    python experiments/harm_label_sample.py --exclude data/harm_labels/labels.jsonl \
        --jailbroken-by-model 0.5b=4 1.5b=18 --refused 0 --prefix r2_ --seed 20261203 \
        --blind /tmp/r2_blind.jsonl --key /tmp/r2_key.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

RUNS = {"0.5b": "results/findings-0.5b-resid", "1.5b": "results/findings-1.5b-resid-100"}
ATTACKS = ("none", "refusal_suppression")


def population(root: Path) -> dict[tuple, list[dict]]:
    """Rows by stratum; identical (goal, completion) pairs within a stratum are kept once."""
    strata: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    for model, run in RUNS.items():
        for path in sorted((root / run / "cells").glob("*.json")):
            cell = json.loads(path.read_text())
            if not cell["generated"] or cell["attack"] not in ATTACKS:
                continue
            for i, (goal, comp, jb) in enumerate(
                    zip(cell["goals"], cell["completions"], cell["jailbroken"])):
                if comp is None:
                    continue
                key = (model, cell["attack"], cell["kind"], bool(jb))
                row = {"run": run, "cell": path.name, "row": i, "goal": goal, "completion": comp,
                       "category": cell["categories"][i], "refusal_string": bool(jb)}
                strata[key].setdefault((goal, comp), row)
    return {k: list(v.values()) for k, v in strata.items()}


def draw(strata: dict[tuple, list[dict]], n_jb: int | dict[str, int], n_ref: int, seed: int,
         exclude: set[tuple] = frozenset(), prefix: str = "h") -> list[dict]:
    """Up to n_jb non-refusals (per model when a dict) and n_ref refusals per stratum.

    Pairs in `exclude` ((stratum, goal, completion), an earlier round's draw) are not drawn
    again; `stratum_sampled` and `weight` are this round's, see `merge_weights`.
    """
    rng = random.Random(seed)
    out = []
    for key in sorted(strata):
        name = "|".join(map(str, key))
        rows = [r for r in strata[key] if (name, r["goal"], r["completion"]) not in exclude]
        cap = (n_jb.get(key[0], 0) if isinstance(n_jb, dict) else n_jb) if key[3] else n_ref
        n = min(len(rows), cap)
        for row in rng.sample(rows, n):
            out.append({**row, "model": key[0], "attack": key[1], "kind": key[2],
                        "stratum": name, "stratum_size": len(strata[key]),
                        "stratum_sampled": n, "weight": len(strata[key]) / n})
    rng.shuffle(out)
    for i, row in enumerate(out):
        row["id"] = f"{prefix}{i:04d}"
    return out


def _exclusions(path: Path | None) -> set[tuple]:
    if path is None:
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["stratum"], r["goal"], r["completion"]) for r in rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--blind", type=Path, required=True)
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--jailbroken", type=int, default=12)
    ap.add_argument("--refused", type=int, default=3)
    ap.add_argument("--jailbroken-by-model", nargs="+", metavar="MODEL=N",
                    help="per-model non-refusals per stratum (overrides --jailbroken)")
    ap.add_argument("--exclude", type=Path, help="an earlier round's labels: not drawn again")
    ap.add_argument("--prefix", default="h", help="id prefix (one per round)")
    ap.add_argument("--seed", type=int, default=20261202)
    a = ap.parse_args(argv)
    n_jb = ({m: int(n) for m, n in (x.split("=") for x in a.jailbroken_by_model)}
            if a.jailbroken_by_model else a.jailbroken)
    rows = draw(population(a.root), n_jb, a.refused, a.seed, _exclusions(a.exclude), a.prefix)
    a.blind.parent.mkdir(parents=True, exist_ok=True)
    with open(a.blind, "w") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "goal": r["goal"], "completion": r["completion"]}) + "\n")
    with open(a.key, "w") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k not in ("goal", "completion")}) + "\n")
    print(f"{len(rows)} rows from {len({r['stratum'] for r in rows})} strata")


if __name__ == "__main__":
    main()
