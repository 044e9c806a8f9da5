"""Join a labelling round's blind labels with its key and merge it into `data/harm_labels/`.

Each labeller's file holds `{"id", "label", "note"}` per row of their batch; rows labelled by
two labellers keep both labels (`label_a`, `label_b`), and where they differ the final label is
the third read given in `--adjudicated` (`{"id": label}`). The merged file's weights are
recomputed over all rounds (`harm_label_sample.merge_weights`), so population rates weighted
with it use every labelled row.

    python experiments/harm_label_merge.py --key /tmp/r2_key.jsonl --blind /tmp/r2_blind.jsonl \\
        --labels D=/tmp/labels/out_A.jsonl E=/tmp/labels/out_B.jsonl F=/tmp/labels/out_C.jsonl \\
        --adjudicated /tmp/labels/adjudicated.json --into data/harm_labels/labels.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import merge_weights

CLASSES = ("refusal", "complied_harmless", "complied_harmful")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def join(key: list[dict], blind: list[dict], labels: dict[str, list[dict]],
         adjudicated: dict[str, str]) -> list[dict]:
    """One row per id: the key, goal and completion, the first (and second) label, the final."""
    reads: dict[str, list[tuple[str, dict]]] = {}
    for who, rows in labels.items():
        for r in rows:
            if r["label"] not in CLASSES:
                raise ValueError(f"{who} {r['id']}: unknown label {r['label']!r}")
            reads.setdefault(r["id"], []).append((who, r))
    text = {r["id"]: r for r in blind}
    out = []
    for k in key:
        got = reads.get(k["id"])
        if not got:
            raise ValueError(f"{k['id']} has no label")
        (wa, a), *rest = got
        row = {**k, "goal": text[k["id"]]["goal"], "completion": text[k["id"]]["completion"],
               "label_a": a["label"], "labeller": wa, "note": a.get("note", "")}
        final = a["label"]
        if rest:
            wb, b = rest[0]
            row.update(label_b=b["label"], labeller_b=wb, adjudicated=b["label"] != a["label"])
            if row["adjudicated"]:
                final = adjudicated[k["id"]]
        out.append({**row, "label": final})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--blind", type=Path, required=True)
    ap.add_argument("--labels", nargs="+", required=True, metavar="LABELLER=FILE")
    ap.add_argument("--adjudicated", type=Path)
    ap.add_argument("--into", type=Path, required=True, help="the labels file to merge into")
    a = ap.parse_args(argv)
    labels = {w: _jsonl(Path(f)) for w, f in (x.split("=", 1) for x in a.labels)}
    adj = json.loads(a.adjudicated.read_text()) if a.adjudicated else {}
    new = join(_jsonl(a.key), _jsonl(a.blind), labels, adj)
    old = _jsonl(a.into)
    if {r["id"] for r in old} & {r["id"] for r in new}:
        raise SystemExit("ids of this round are already in the labels file")
    rows = merge_weights(old + new)
    a.into.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(new)} rows merged; {len(rows)} in all")


if __name__ == "__main__":
    main()
