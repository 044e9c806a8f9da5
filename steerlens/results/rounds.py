"""What changed between two rounds of the same audit: each claim's verdict on a previous run
beside its verdict on the run that replaces it, both computed now by the current rules.

A round's closing note lists the claims whose verdict changed; this table is that list,
generated from the runs so it cannot drift from them. Both runs are read through the same
code, so a change is the data's (new vectors, more nulls, another design), not the rules'.
"""

from __future__ import annotations

import re

from steerlens.results import verdicts as V

NOT_MEASURED = "not measured"  # the outcome is not in that run


def claim_changes(old: dict[str, list[dict]], new: dict[str, list[dict]]) -> list[dict]:
    """One row per claim and outcome: the claim's text and both verdicts.

    `old` and `new` map each outcome to the run's claims in `findings.CLAIMS` order. An outcome
    only one run measures keeps its rows, the other side reading `NOT_MEASURED`, and counts as
    a change (a verdict gained or lost), so the table never drops a claim silently."""
    rows = []
    for o in [*new, *[o for o in old if o not in new]]:
        before, after = old.get(o), new.get(o)
        if before is not None and after is not None and len(before) != len(after):
            raise ValueError(f"{o}: {len(before)} claims before, {len(after)} now")
        for b, a in zip(before or [None] * len(after), after or [None] * len(before)):
            named = b or a
            rows.append({"outcome": o, "claim": re.sub(r" \(k = \w+\)", "", named["claim"]),
                         "before": b["verdict"] if b else NOT_MEASURED,
                         "after": a["verdict"] if a else NOT_MEASURED,
                         "changed": b is None or a is None or b["verdict"] != a["verdict"]})
    return rows


def change_lines(pairs: list[tuple[str, str, list[dict]]]) -> list[str]:
    """Markdown: per (previous run, new run), every claim's verdict on both, changed ones
    marked. `pairs` holds (old run name, new run name, `claim_changes` rows)."""
    if not pairs:
        return []
    out = ["## What changed against the previous round", "",
           "Each claim's verdict on the previous round's run and on the run that replaces it, both "
           "computed by the current rules from the saved runs (so a change is the data's, not the "
           "rules'). **changed** marks a different verdict.", ""]
    for old, new, rows in pairs:
        n = sum(r["changed"] for r in rows)
        out += [f"`{old}` → `{new}`: {n} of {len(rows)} claim verdicts changed.", "",
                "| claim | outcome | previous round | this round | |", "|---|---|---|---|---|"]
        out += [f"| {r['claim']} | {V.OUTCOME_NAMES[r['outcome']]} | "
                f"{r['before']} | {r['after']} | {'**changed**' if r['changed'] else ''} |"
                for r in rows]
        out.append("")
    return out
