"""What changed between two rounds of the same audit: each claim's verdict on a previous run
beside its verdict on the run that replaces it, both computed now by the current rules.

A round's closing note lists the claims whose verdict changed; this table is that list,
generated from the runs so it cannot drift from them. Both runs are read through the same
code, so a change is the data's (new vectors, more nulls, another design), not the rules'; a
row's verdict can also change on the same labels when the other tests of its BH family change.
"""

from __future__ import annotations

import re

from steerlens.results import verdicts as V

NOT_MEASURED = "not measured"  # the outcome is not in that run
TALLY = re.compile(r"(\d+) (.+)")  # one part of a per-row tally: "6 does not restore"


def verdict_kinds(verdict: str) -> frozenset[str] | None:
    """The verdicts a per-row tally names ("3 partly restores, 3 does not restore" ->
    {partly restores, does not restore}); None when the verdict is not a tally."""
    parts = [TALLY.fullmatch(p.strip()) for p in verdict.split(", ")]
    return frozenset(m.group(2) for m in parts) if all(parts) else None


def compare(before: str, after: str) -> str:
    """"changed" (another verdict), "rows" (a tally of the same verdicts over other rows,
    e.g. fewer fixes read) or "" (the same)."""
    if before == after:
        return ""
    kb, ka = verdict_kinds(before), verdict_kinds(after)
    return "rows" if kb is not None and kb == ka else "changed"


def row_changes(before: dict, after: dict) -> list[str]:
    """The rows (claims 4-5: "vector/attack") both runs read whose own verdict changed: a tally
    of the same verdicts can hide one (the same labels, another BH family)."""
    b, a = before.get("rows") or {}, after.get("rows") or {}
    return [f"{r}: {b[r]} → {a[r]}" for r in b if r in a and a[r] != b[r]]


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
            named, how = b or a, compare(b["verdict"], a["verdict"]) if b and a else "changed"
            moved = row_changes(b, a) if b and a else []
            how = "changed" if moved else how
            rows.append({"outcome": o, "claim": re.sub(r" \(k = \w+\)", "", named["claim"]),
                         "before": b["verdict"] if b else NOT_MEASURED,
                         "after": a["verdict"] if a else NOT_MEASURED,
                         "changed": how == "changed", "rows_only": how == "rows", "moved": moved})
    return rows


def change_lines(pairs: list[tuple[str, str, list[dict]]]) -> list[str]:
    """Markdown: per (previous run, new run), every claim's verdict on both, changed ones
    marked. `pairs` holds (old run name, new run name, `claim_changes` rows)."""
    if not pairs:
        return []
    out = ["## What changed against the previous round", "",
           "Each claim's verdict on the previous round's run and on the run that replaces it, both "
           "computed by the current rules from the saved runs (so a change is the data's, not the "
           "rules': the row's own, or through Benjamini-Hochberg that of the other tests in its "
           "family). **changed** marks a different verdict; *same verdicts, other rows* marks a "
           "per-row tally (claims 4-5: one verdict per fixed row that is read) with the same "
           "verdicts over other rows (e.g. fewer rows read, the raw shift no longer a verdict) and no row "
           "read in both runs with another verdict (such a row is named beside the change mark).", ""]
    for old, new, rows in pairs:
        n, k = sum(r["changed"] for r in rows), sum(r.get("rows_only", False) for r in rows)
        out += [f"`{old}` → `{new}`: {n} of {len(rows)} claim verdicts changed"
                + (f", {k} the same verdicts over other rows" if k else "") + ".", "",
                "| claim | outcome | previous round | this round | |", "|---|---|---|---|---|"]
        out += [f"| {r['claim']} | {V.OUTCOME_NAMES[r['outcome']]} | "
                f"{r['before']} | {r['after']} | {_mark(r)} |" for r in rows]
        out.append("")
    return out


def _mark(row: dict) -> str:
    moved = "; ".join(row.get("moved") or [])
    return ("**changed**" + (f" (a row read in both: {moved})" if moved else "") if row["changed"]
            else "*same verdicts, other rows*" if row.get("rows_only") else "")
