"""Which tests answer the user's question, and how each family is adjusted (pre-registered in
docs/statistics.md; pure).

- **primary**: per vector, attack and dose, the +v cell against the baseline on each outcome
  (non-refusal, harmful compliance): "does this vector, as deployed, move the outcome?".
  Benjamini-Hochberg (1995) over this family only.
- **secondary**: −v, ⊥1 and ⊥k against the baseline and each fix against its raw +v cell
  (what the mechanism and the mitigations say once a shift is known): their own BH family, so
  adding settings never dilutes the primary answer; a fix's verdict is read only where its
  primary shift is a verdict (findings claims 4-5).
- **regressions**: claim 3's correlations with the vector as the unit: their own BH family.
- **instrument checks** (the refusal direction and subspace ablated or added on JBB) and the
  **generated null cells** are not hypotheses about the vector: never adjusted, reported with
  their own p.

Separate families, each with its own false-discovery rate, follow Efron (2008, "Simultaneous
inference: when should hypothesis testing problems be combined?", Ann. Appl. Stat. 2:197-223);
BH controls the FDR of each family at alpha for independent or positively dependent p-values
(Benjamini & Yekutieli 2001); `tests/results/test_hypothesis_families.py` checks it by simulation.
"""

from __future__ import annotations

from steerlens.results.inference import benjamini_hochberg_family

PRIMARY, SECONDARY, REGRESSIONS = "primary", "secondary", "regressions"
FAMILIES = (PRIMARY, SECONDARY, REGRESSIONS)
PRIMARY_KINDS = ("+v",)
SECONDARY_KINDS = ("-v", "+v_perp1", "+v_perpk")
INSTRUMENT_KINDS = ("refusal_ablated", "refusal_added", "subspace_ablated")


def row_family(kind: str) -> str | None:
    """The family of a cell's test against baseline (None: not a hypothesis)."""
    if kind in PRIMARY_KINDS:
        return PRIMARY
    if kind in SECONDARY_KINDS:
        return SECONDARY
    return None


def adjust(tests: list[tuple[str, str, float]]) -> dict:
    """BH within each family over (family, name, p) triples; returns per family the q-values by
    name, the adjusted count and the excluded (NaN) names."""
    out = {}
    for fam in FAMILIES:
        res = benjamini_hochberg_family([(n, p) for f, n, p in tests if f == fam])
        out[fam] = {"q": res["q"], "m_adjusted": res["m_adjusted"], "excluded": res["excluded"],
                    "names": [n for f, n, _ in tests if f == fam and n not in set(res["excluded"])]}
    return out
