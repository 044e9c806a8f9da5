"""The numbers the hand-written discussion cites, computed from the runs (pure).

docs/findings_discussion.md writes `{{RUN:KEY}}` where it cites a number (RUN is the run
directory's name); `steerlens findings` fills each from the summary and mitigations computed
now, so the prose cannot keep a number the rules no longer give. An unknown key is an error.
"""

from __future__ import annotations

import re

from steerlens.errors import SteerlensError
from steerlens.results.summary import NULL_KINDS
from steerlens.results.text import points
from steerlens.schema import DELTA_KEYS

PLACEHOLDER = re.compile(r"\{\{([^{}:]+):([^{}]+)\}\}")
ALPHA = 0.05


def _o(row: dict, o: str) -> dict:
    return row if o == "nonrefusal" else row.get("harm", {})


def _ci(d: dict, key: str = "delta") -> str:
    lo, hi = ("delta_ci_low", "delta_ci_high") if key.startswith("delta_") else ("ci_low", "ci_high")
    return f"{points(d[key])} [{points(d[lo])}, {points(d[hi])}]"


def _p(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.2g}"


def summary_facts(s: dict) -> dict[str, str]:
    """Null cells significant on their own, each outcome's MDE, template splits by direction."""
    out = {}
    for o in s["design"].get("outcomes", []):
        nulls = [r for r in s["rows"] if r["kind"] in NULL_KINDS and "mcnemar_p_value" in _o(r, o)]
        k = sum(_o(r, o)["mcnemar_p_value"] < ALPHA for r in nulls)
        out[f"null_sig.{o}"] = f"{k} of {len(nulls)}"
        by = s["design"]["by_outcome"][o]
        out[f"mde.{o}"] = points(by["minimum_detectable_shift"]).lstrip("+")
        if "minimum_detectable_shift_corrected" in by:
            out[f"mde_corrected.{o}"] = points(by["minimum_detectable_shift_corrected"]).lstrip("+")
        for f in s["vectors"]:
            g = _o(f["plus"], o)
            if DELTA_KEYS[o] in g:
                out[f"shift.{o}.{f['attack']}.{f['vector']}"] = (
                    f"{_ci(g, DELTA_KEYS[o])}, q {_p(g.get('q_value'))}"
                    + (f"; judge-corrected {_ci(g['corrected'])}" if g.get("corrected") else ""))
        for a, t in s.get("templates", {}).get(o, {}).items():
            for d, x in t.get("by_direction", {}).items():
                out[f"template.{a}.{o}.{d}"] = (f"{100 * x['mean_difference']:+.1f} points per vector "
                                                f"and goal (p {_p(x['p_value'])})")
    return out


def _fix_fact(o: str, r: dict) -> str:
    """One fix on one outcome: fixed vs baseline, verdict and its tests; on harm, which numbers
    the verdict rests on (the judged labels) and the judge-corrected shift beside them."""
    if o != "harm":
        return (f"{_ci(r['vs_baseline'])}, {r['verdict']} (raw vs fixed q {_p(r['vs_raw']['q_value'])}; "
                f"TOST p {_p(r['p_tost'])} within ±{round(100 * r['margin'])})")
    c = (r.get("corrected") or {}).get("vs_baseline")
    return (f"{_ci(r['vs_baseline'])} as judged, {r['verdict']} on the judged labels (raw vs fixed q "
            f"{_p(r['vs_raw']['q_value'])}; TOST p {_p(r['p_tost'])} within ±{round(100 * r['margin'])} "
            "judged points)" + (f"; judge-corrected {_ci(c)}" if c else ""))


def _fix_facts(tag: str, f: dict) -> dict[str, str]:
    out = {}
    for a, by in f["outcomes"].items():
        for o, r in by.items():
            out[f"fix.{tag}.{f['fix']}.{a}.{o}"] = _fix_fact(o, r)
    if f.get("false_refusal"):
        out[f"false_refusal.{tag}.{f['fix']}"] = _ci(f["false_refusal"])
    for c, x in f.get("capability", {}).items():
        out[f"capability.{tag}.{f['fix']}.{c}"] = _ci(x)
    return out


def mitigation_facts(m: dict) -> dict[str, str]:
    """Per vector and fix: each outcome's fixed-vs-baseline shift and verdict, false refusals
    and capability with their intervals; the range of every capability interval's ends."""
    out, ends = {}, []
    for v in m["vectors"]:
        if v.get("raw_false_refusal"):
            out[f"false_refusal.{v['tag']}.raw"] = _ci(v["raw_false_refusal"])
        ends += [x for c in v.get("raw_capability", {}).values() for x in (c["ci_low"], c["ci_high"])]
        for f in v["fixes"]:
            out.update(_fix_facts(v["tag"], f))
            ends += [x for c in f.get("capability", {}).values() for x in (c["ci_low"], c["ci_high"])]
    if ends:
        out["capability_ci_range"] = f"{points(min(ends))} to {points(max(ends))}"
    return out


def fill(text: str, facts: dict[str, dict[str, str]]) -> str:
    """Every `{{RUN:KEY}}` replaced by its computed value."""
    def one(m: re.Match) -> str:
        run, key = m.group(1).strip(), m.group(2).strip()
        if key not in facts.get(run, {}):
            raise SteerlensError(f"the discussion cites {{{{{run}:{key}}}}}, which the runs do not give",
                                 fix="use a key of steerlens.results.facts (run directory name:key)")
        return facts[run][key]
    return PLACEHOLDER.sub(one, text)
