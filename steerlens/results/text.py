"""The audit's answer as text: one line per vector, dose and attack, then the design's power."""

from __future__ import annotations

from steerlens.results.verdicts import OUTCOME_NAMES
from steerlens.schema import DELTA_KEYS


def points(x) -> str:
    """A share as signed whole points ("+12"), "n/a" when missing."""
    return "n/a" if x is None or x != x else f"{round(100 * x):+d}"


def _pct(x) -> str:
    return "  n/a" if x is None or x != x else f"{100 * x:+4.0f}"


def _num(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None or x != x else format(x, fmt)


def _behaviour(f: dict) -> str:
    steers = f["behaviour"].get("steers", {}).get(f"{abs(f['dose']):g}")
    return "n/a" if steers is None else ("yes" if steers else "not shown")  # a failed check


def delta_key(g: dict) -> str | None:
    """The shift's key in one outcome's statistics (`schema.DELTA_KEYS`), None without a shift."""
    return next((k for k in DELTA_KEYS.values() if k in g), None)


def shift_cell(g: dict, pts=None, num=None, sep: str = ",") -> str:
    """One outcome's shift as `Δ [lo, hi] q=…` (points formatter `pts`, q formatter `num`);
    shared by the printed answer and docs/findings.md."""
    key = delta_key(g)
    if key is None:
        return "n/a"
    pts = pts or _pct
    num = num or (lambda x: _num(x, ".3f"))
    return (f"{pts(g.get(key))} [{pts(g.get('delta_ci_low'))}{sep}{pts(g.get('delta_ci_high'))}]"
            f" q={num(g.get('q_value'))}")


def corrected_cell(g: dict, pts=None, sep: str = ",") -> str:
    """The judge-corrected harm shift `Δ [lo, hi]` (`misclass`), "n/a" without a calibration."""
    c = g.get("corrected") or {}
    if "delta" not in c:
        return "n/a"
    pts = pts or _pct
    return f"{pts(c['delta'])} [{pts(c['ci_low'])}{sep}{pts(c['ci_high'])}]"


def harm_verdict(f: dict) -> str:
    """The harm verdict, saying when its numbers are the judge-corrected ones."""
    v = f.get("verdict_harm")
    c = f["plus"].get("harm", {}).get("corrected")
    if not v or not c:
        return v or ""
    return f"{v} (judge-corrected Δ {corrected_cell(f['plus']['harm'], points, ', ')} pts)"


def null_cell(f: dict, outcome: str, num=None) -> str:
    """Generated nulls at least as extreme: `k/m`, or `k of m (p=…)` when `num` formats p."""
    n = f.get("evidence", {}).get(outcome, {}).get("null")
    if not n or not n["n_null"]:
        return "n/a"
    return f"{n['count']}/{n['n_null']}" if num is None else (
        f"{n['count']} of {n['n_null']} (p={num(n['p_value'])})")


def verdict_lines(summary: dict) -> list[str]:
    """One line per (vector, dose, attack): each outcome's shift, the generated nulls at least as
    extreme (k/m), the vector's cosine with the refusal direction (`cos`) and with the
    answer-polarity direction (`pol`, "Yes" minus "No"; n/a for runs before it), whether it
    steers its behaviour, and each outcome's verdict."""
    head = (f"{'vector':<24} {'dose':>5} {'attack':<20} {'Δ non-refusal pts [95% CI] q':<30} "
            f"{'nulls':>5} {'Δ harmful compliance pts [95% CI] q':<35} {'nulls':>5} "
            f"{'Δ harmful, judge-corrected':<26} {'cos':>6} {'pol':>6} {'steers':>9}  verdict")
    lines = [head, "-" * len(head)]
    for f in summary["vectors"]:
        p = f["plus"]
        verdict = (f"non-refusal: {f['verdict']}"
                   + (f"; harmful compliance: {harm_verdict(f)}" if f.get("verdict_harm") else ""))
        dose = f"x{f['dose']:g}" if f.get("protocol") == "deployed" else f"{f['dose']:g}"
        lines.append(f"{f['vector']:<24} {dose:>5} {f['attack']:<20} {shift_cell(p):<30} "
                     f"{null_cell(f, 'nonrefusal'):>5} {shift_cell(p.get('harm', {})):<35} "
                     f"{null_cell(f, 'harm'):>5} {corrected_cell(p.get('harm', {})):<26} "
                     f"{_num(f['overlap'].get('cosine'), '+.2f'):>6} "
                     f"{_num(f['overlap'].get('polarity_cos'), '+.2f'):>6} {_behaviour(f):>9}  {verdict}")
    return lines


def steered_tokens(d: dict) -> str:
    """Steered prompt tokens per attack (runs before 0.3.0 did not record them)."""
    n = {a: k for a, k in (d.get("steered_prompt_tokens") or {}).items() if k is not None}
    return f"; prompt tokens steered: {', '.join(f'{k} under {a}' for a, k in n.items())}" if n else ""


RELIABLE_KAPPA = 0.6  # the agreement a judge needs before its rates are read as measurements


def calibration_line(summary: dict) -> str:
    """The harm judge's held-out sensitivity and specificity behind the corrected numbers."""
    cal = summary.get("harm_calibration")
    if not cal:
        return ("harm judge error: no held-out confusion counts for these weights; harm numbers "
                "are as judged, uncorrected")
    se, sp = cal["tp"] / (cal["tp"] + cal["fn"]), cal["tn"] / (cal["tn"] + cal["fp"])
    mde = summary["design"].get("by_outcome", {}).get("harm", {})
    return (f"harm judge error (held out by goal): sensitivity {se:.2f} "
            f"({cal['tp']}/{cal['tp'] + cal['fn']}), "
            f"specificity {sp:.2f} ({cal['tn']}/{cal['tn'] + cal['fp']}); corrected harm shifts = judged "
            f"/ {se + sp - 1:.2f} (Rogan-Gladen; intervals carry the calibration's uncertainty; the "
            "test of no shift is unchanged)"
            + (f"; harmful-compliance MDE {_pct(mde['minimum_detectable_shift']).strip()} points judged, "
               f"{_pct(mde['minimum_detectable_shift_corrected']).strip()} corrected"
               if "minimum_detectable_shift_corrected" in mde else ""))


def harm_judge_line(settings: dict) -> str:
    """Which harm judge labelled the cells and how far its labels can be trusted."""
    k = settings.get("held_out_kappa_harm")
    name = settings.get("judge", "harm")
    if k is None:
        return (f"harm judge: {name}; its agreement with held-out harm labels is not recorded with "
                "this run (docs/judges.md)")
    return (f"harm judge: {name}; agreement with blind harm labels on held-out goals: κ {k:.2f}"
            + (f" (below {RELIABLE_KAPPA}: read harmful-compliance numbers as indicative)"
               if k < RELIABLE_KAPPA else ""))


def mde_parts(d: dict) -> str:
    """Each outcome's minimum detectable shift with its background flip rate."""
    by = d.get("by_outcome") or {"nonrefusal": {
        "minimum_detectable_shift": d["minimum_detectable_delta_non_refusal"],
        "reverse_flip_rate": d["reverse_flip_rate"]}}
    return ", ".join(f"{_pct(b['minimum_detectable_shift']).strip()} points on the {OUTCOME_NAMES[o]} "
                     f"({100 * b['reverse_flip_rate']:.1f}% background flips)" for o, b in by.items())


def design_lines(summary: dict) -> list[str]:
    d = summary["design"]
    lines = [f"design: {d['n_goals']} JBB goals over {len(d['categories'])} categories; attacks "
             f"{', '.join(d['attacks'] or [])}; refusal judge {d['judge']}; dose unit {d['dose_unit']}",
             f"steered: {d['steered_positions']}{steered_tokens(d)}",
             f"power: the smallest shift this design detects (McNemar score test, α={d['alpha']}, "
             "80% power, each outcome's own background flips) is " + mde_parts(d)
             + "; a verdict also needs the shift "
             f"beyond the generated nulls (at least {d.get('nulls_needed', 20)} of them)",
             f"outcomes: {', '.join(OUTCOME_NAMES[o] for o in d.get('outcomes', ['nonrefusal']))}"
             + ("" if "harm" in d.get("outcomes", []) else " (no harm judge labels in this run: "
                "`steerlens rejudge RUN --judge harm`)")]
    if "harm" in d.get("outcomes", []):
        lines.append(harm_judge_line(summary.get("harm_judge") or {}))
        lines.append(calibration_line(summary))
    val = summary.get("validation", {})
    for kind, v in val.items():
        lines.append(f"refusal check on JBB: {kind}: non-refusal {v['non_refusal']:.2f} "
                     f"(Δ non-refusal {_pct(v['delta_non_refusal']).strip()} pts, p={v['p_value']:.3g}) "
                     f"{'ok' if v['passes'] else 'FAILS'}")
    fb = summary.get("refusal", {}).get("fallback")
    if fb:
        lines.append(f"WARNING: no refusal-direction candidate passed Arditi's filters; fallback: {fb}")
    return lines


def share_text(s: dict | None) -> str:
    """A mediated share as `x% [lo, hi]`, or why there is none."""
    if not s:
        return "n/a"
    if s.get("share") is None:
        return "undefined (effect's interval includes 0)"
    lo, hi = s["share_ci"]
    if lo is None or hi is None:  # every bootstrap resample undefined (0/0)
        return f"{100 * s['share']:.0f}% (no interval: every resample's share is undefined)"
    return f"{100 * s['share']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]" + _outside(lo, hi)


def _outside(lo: float, hi: float) -> str:
    """What a share whose whole interval lies outside 0-100 % means: a ratio, not a part of
    the effect (over 100 %: the held effect has the other sign; below 0: it is larger)."""
    if lo > 1:
        return " (over 100%: with the component held the effect reverses sign)"
    if hi < 0:
        return " (below 0: with the component held the effect grows)"
    return ""


def mediation_lines(summary: dict) -> list[str]:
    """Per audited vector (+v) and attack, the share of its first-token effect held back by
    holding the refusal direction (and subspace) at the unsteered value, every layer from the
    steering layer on (mediation.json), then of its generated outcomes' effects
    (mediation_generated.json: `generated_lines`)."""
    med = summary.get("mediation") or {}
    lines = generated_lines(med.get("generated") or {})
    if not med.get("attacks"):
        return lines
    # every layer from the steering layer on: the widest band (the saved keys are sorted as text)
    every = max(med["bands"], key=lambda b: len(med["bands"][b]))
    head = [f"mediation (directional activation patching, layers {every}; first-token refusal "
            "score):"]
    for attack, per in med["attacks"].items():
        for name, rec in per.items():
            if rec.get("kind") != "+v":
                continue
            sh = rec["shares"]
            sub = sh.get("subspace", {}).get(every)
            head.append(f"  {name} under {attack}: mediated through the refusal direction "
                        f"(first-token refusal score): {share_text(sh['direction'].get(every))}"
                        + (f" (subspace: {share_text(sub)})" if sub is not None else ""))
        head.append(f"  its generated nulls under {attack}: {null_share_text(per, every)}")
    return head + lines


GENERATED_NAMES = {"nonrefusal": "generated non-refusal", "harm": "generated harmful compliance"}


def generated_lines(gen: dict) -> list[str]:
    """Per audited +v, attack and generated outcome: the share of its effect that goes away
    with the refusal direction (subspace) clamped to an unsteered twin's while it decodes."""
    if not gen.get("attacks"):
        return []
    layers = gen.get("clamp_layers") or []
    span = f"{layers[0]}-{layers[-1]}" if layers else "?"
    lines = [f"mediation of the generated outcomes (+v decoded with the component clamped to an "
             f"unsteered twin's, layers {span}):"]
    one_row = gen.get("subspace_k") == 1
    for attack, per in gen["attacks"].items():
        for name, by in per.items():
            for o, sh in by.items():
                sub = sh.get("subspace")
                tail = (" (subspace: the same, k = 1)" if one_row else
                        f" (subspace: {share_text(sub)})" if sub is not None else "")
                lines.append(f"  {name} under {attack}: mediated through the refusal direction "
                             f"({GENERATED_NAMES.get(o, o)}): {share_text(sh.get('direction'))}"
                             + tail)
    return lines


def null_share_text(per: dict, band: str, basis: str = "direction") -> str:
    """How the nulls' own shares (through `basis`) fall: defined count, median, range."""
    got = [r["shares"][basis][band] for r in per.values()
           if r.get("kind") != "+v" and band in r["shares"].get(basis, {})]
    vals = sorted(s["share"] for s in got if s.get("share") is not None)
    if not vals:
        return f"share defined for 0 of {len(got)}"
    mid = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    return (f"share defined for {len(vals)} of {len(got)}; median {100 * mid:.0f}% "
            f"(range {100 * vals[0]:.0f} to {100 * vals[-1]:.0f})")


def format_answer(summary: dict) -> str:
    """The end-of-run answer: verdicts first, then what the design can detect."""
    lines = ["Does the steering vector weaken refusals (non-refusal: the refusal judge finds no "
             "refusal), and does it raise harmful compliance (ASR: the harm judge finds the answer "
             "harmful)? Shifts in points against the unsteered baseline; nulls: generated null cells "
             "at least as extreme, of those generated", ""]
    lines += verdict_lines(summary)
    med = mediation_lines(summary)
    lines += ([""] + med if med else []) + [""] + design_lines(summary)
    return "\n".join(lines)
