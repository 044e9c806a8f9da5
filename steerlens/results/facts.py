"""The numbers the hand-written discussion cites, computed from the runs (pure).

docs/findings_discussion.md writes `{{RUN:KEY}}` where it cites a number (RUN is the run
directory's name); `steerlens findings` fills each from the summary and mitigations computed
now, so the prose cannot keep a number the rules no longer give. An unknown key is an error.
"""

from __future__ import annotations

import re

from steerlens.errors import SteerlensError
from steerlens.results.summary import NULL_KINDS
from steerlens.results.text import null_share_text, points, share_text
from steerlens.results.verdicts import read_fix_verdict
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


def _template_text(x: dict) -> str:
    """Claim 2's per-goal mean difference, its 95% interval (when stored) and sign-flip p."""
    ci = f" [{100 * x['ci'][0]:+.1f}, {100 * x['ci'][1]:+.1f}]" if "ci" in x else ""
    return f"{100 * x['mean_difference']:+.1f}{ci} points per vector and goal (p {_p(x['p_value'])})"


def summary_facts(s: dict) -> dict[str, str]:
    """Null cells significant on their own, each outcome's MDE, claim 2 (`all` and split by
    direction)."""
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
            for d, x in {"all": t, **t.get("by_direction", {})}.items():
                out[f"template.{a}.{o}.{d}"] = _template_text(x)
    med = s.get("mediation") or {}
    return {**out, **evidence_facts(s), **instrument_facts(s), **first_token_facts(med),
            **generated_facts(med.get("generated") or {})}


def evidence_facts(s: dict) -> dict[str, str]:
    """Per outcome, attack and vector: the verdict (`verdict.O.ATTACK.VECTOR`) and how many of
    its generated nulls shift that outcome at least as far (`nulls.O.ATTACK.VECTOR`)."""
    out = {}
    for f in s["vectors"]:
        at = f"{f['attack']}.{f['vector']}"
        for o, v in (f.get("verdicts") or {}).items():
            out[f"verdict.{o}.{at}"] = v
        for o, ev in (f.get("evidence") or {}).items():
            n = ev.get("null") or {}
            if "count" in n:
                out[f"nulls.{o}.{at}"] = (f"{n['count']} of {n['n_null']} generated nulls at least as "
                                          f"extreme (permutation p {_p(n['p_value'])})")
    return out


def instrument_facts(s: dict) -> dict[str, str]:
    """The instrument checks: the refusal direction on JBB (`validation.NAME`: non-refusal
    unsteered → with it ablated or added), its layer, k, and each vector's own behaviour at every
    dose (`behaviour.VECTOR.DOSE`: p(matching) unsteered → steered;
    `behaviour_polarity.VECTOR.DOSE.POLE`: the shift on the items of one answer polarity)."""
    out = {}
    for name, r in (s.get("validation") or {}).items():
        out[f"validation.{name}"] = (f"non-refusal {r['non_refusal'] - r['delta_non_refusal']:.2f} "
                                     f"→ {r['non_refusal']:.2f}")
    if (r := s.get("refusal") or {}).get("layer") is not None:
        out["refusal.layer"] = str(r["layer"])
        out["refusal.fallback"] = "the fallback rule" if r.get("fallback") else "Arditi's filters"
    if (k := (s.get("subspace") or {}).get("k")) is not None:
        out["subspace.k"] = str(k)
    for v, d in ((s.get("dose") or {}).get("vectors") or {}).items():
        eff = d.get("effect") or {}
        base = (eff.get("unsteered") or {}).get("mean")
        for dose, e in eff.items():
            if dose == "unsteered" or base is None:
                continue
            out[f"behaviour.{v}.{dose}"] = f"p(matching) {base:.2f} → {e['mean']:.2f}"
            for pole, x in (e.get("by_polarity") or {}).items():
                top = (f" ({x['n_top_up']} of them from outside the extraction set)"
                       if x.get("n_top_up") else "")
                out[f"behaviour_polarity.{v}.{dose}.{pole}"] = (
                    f"{x['shift']:+.2f} on {x['n_items']} items{top}")
    return out


def first_token_facts(med: dict) -> dict[str, str]:
    """mediation.json, every layer from the steering layer on: per setting (+v and null), attack
    and basis `mediation.SETTING.ATTACK.BASIS` = "x% [lo, hi]", and the effect it is a share of
    (`mediation_effect.SETTING.ATTACK`, log-odds with its t-interval); each band of layers alone
    (`mediation_at.BAND.SETTING.ATTACK.BASIS`); the generated nulls' shares through each basis
    (`mediation_nulls.ATTACK.BASIS`: defined count, median, range)."""
    if not med.get("attacks"):
        return {}
    every = max(med["bands"], key=lambda b: len(med["bands"][b]))
    out = {"mediation_band": every}
    for a, per in med["attacks"].items():
        for b in med.get("bases") or ["direction"]:
            out[f"mediation_nulls.{a}.{b}"] = null_share_text(per, every, b)
        for name, rec in per.items():
            for b, by in rec["shares"].items():
                if every in by:
                    out[f"mediation.{name}.{a}.{b}"] = share_text(by[every])
                for band, x in by.items():  # each band of layers on its own
                    out[f"mediation_at.{band}.{name}.{a}.{b}"] = share_text(x)
            d = rec["shares"].get("direction", {}).get(every)
            if d:
                lo, hi = d["effect_ci"]
                out[f"mediation_effect.{name}.{a}"] = f"{d['effect']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    return out


def generated_facts(gen: dict) -> dict[str, str]:
    """mediation_generated.json: `mediation_generated.TAG+v.ATTACK.OUTCOME.BASIS` = "x% [lo, hi]"
    and the total effect it is a share of (`..._effect...`, points with its t-interval)."""
    out = {}
    for a, per in (gen.get("attacks") or {}).items():
        for name, by in per.items():
            for o, bases in by.items():
                for b, r in bases.items():
                    out[f"mediation_generated.{name}.{a}.{o}.{b}"] = share_text(r)
                    lo, hi = r["effect_ci"]
                    out[f"mediation_generated_effect.{name}.{a}.{o}"] = (
                        f"{points(r['effect'])} [{points(lo)}, {points(hi)}]")
    return out


def _fix_fact(o: str, r: dict) -> str:
    """One fix on one outcome: fixed vs baseline, verdict and its tests; on harm, which numbers
    the verdict rests on (the judged labels) and the judge-corrected shift beside them."""
    if o != "harm":
        return (f"{_ci(r['vs_baseline'])}, {read_fix_verdict(r)} (raw vs fixed q "
                f"{_p(r['vs_raw']['q_value'])}; TOST p {_p(r['p_tost'])} within ±{round(100 * r['margin'])})")
    c = (r.get("corrected") or {}).get("vs_baseline")
    return (f"{_ci(r['vs_baseline'])} as judged, {read_fix_verdict(r)} on the judged labels (raw vs fixed q "
            f"{_p(r['vs_raw']['q_value'])}; TOST p {_p(r['p_tost'])} within ±{round(100 * r['margin'])} "
            "judged points)" + (f"; judge-corrected {_ci(c)}" if c else ""))


def _fix_facts(tag: str, f: dict) -> dict[str, str]:
    out = {}
    for a, by in f["outcomes"].items():
        for o, r in by.items():
            out[f"fix.{tag}.{f['fix']}.{a}.{o}"] = _fix_fact(o, r)
    if f.get("false_refusal"):
        out[f"false_refusal.{tag}.{f['fix']}"] = _ci(f["false_refusal"])
    if k := f.get("behaviour_kept"):  # the share of the behaviour effect the fix keeps
        out[f"behaviour_kept.{tag}.{f['fix']}"] = (f"{k['share']:.2f} [{k['ci_low']:.2f}, "
                                                   f"{k['ci_high']:.2f}], {k['verdict']}")
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
    for vec, r in (m.get("decode_seconds") or {}).items():  # the clamps' decode cost (costs.json)
        for setting, x in (r.get("ratio_to_plus") or {}).items():  # "+v_clamp1": wall s / +v's
            out[f"decode_ratio.{vec}.{setting.removeprefix('+v_')}"] = f"{x:.2f}x"
    # prefixed: the audit's own mediation_generated.json gives the unprefixed keys
    return {**out, **{f"fix_{k}": v for k, v in generated_facts(m.get("mediation_generated") or {}).items()}}


def fill(text: str, facts: dict[str, dict[str, str]]) -> str:
    """Every `{{RUN:KEY}}` replaced by its computed value."""
    def one(m: re.Match) -> str:
        run, key = m.group(1).strip(), m.group(2).strip()
        if key not in facts.get(run, {}):
            raise SteerlensError(f"the discussion cites {{{{{run}:{key}}}}}, which the runs do not give",
                                 fix="use a key of steerlens.results.facts (run directory name:key)")
        return facts[run][key]
    return PLACEHOLDER.sub(one, text)
