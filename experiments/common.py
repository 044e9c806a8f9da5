"""What the experiments share beyond the package: the labelling rounds' weights. (The harm
judge's labels, probe recipe and held-out-by-goal protocol are `steerlens.judges.harm_training`.)
Each experiment imports it as `from common import ...` (run them as `python experiments/NAME.py`,
which puts this folder on the import path).
"""

from __future__ import annotations

from collections import defaultdict


def merge_weights(rows: list[dict]) -> list[dict]:
    """Rows of all rounds with each stratum's weight `N / (rows drawn from it in all rounds)`."""
    drawn: dict[str, int] = defaultdict(int)
    for r in rows:
        drawn[r["stratum"]] += 1
    return [{**r, "stratum_sampled": drawn[r["stratum"]],
             "weight": r["stratum_size"] / drawn[r["stratum"]]} for r in rows]
