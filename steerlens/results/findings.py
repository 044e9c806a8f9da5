"""`steerlens findings RUN [RUN ...] --out docs/findings.md`: the paper's claims, measured.

Every number and verdict is computed here from the runs' saved files through `summarize`, so
the report cannot drift from the data (a test regenerates the committed report and compares).
One function per claim; each returns what the paper says, what was measured, and a verdict by
a fixed rule stated in its docstring. Every claim is read against the run's null (norm-matched
random and label-shuffled directions) and the design's power.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path

from steerlens.results.stats import smallest_permutation_p
from steerlens.results.summary import load_run_data, summarize
from steerlens.results.text import steered_tokens
from steerlens.rundir import atomic_write_text

ALPHA = 0.05


def _pts(x) -> str:
    return "n/a" if x is None or x != x else f"{round(100 * x):+d}"


def _g(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3g}"


def _q(r: dict) -> float:
    return r.get("q_value", 1.0) if r else 1.0


def _cell(r: dict) -> str:
    return (f"{r['setting']} / {r['attack']}: {_pts(r['delta_asr'])} pts "
            f"[{_pts(r['delta_ci_low'])}, {_pts(r['delta_ci_high'])}], q={_g(_q(r))}")


def _generated(vectors: list[dict]) -> list[dict]:
    return [f for f in vectors if "delta_asr" in f["plus"]]


# -- the paper's claims ---------------------------------------------------------------------

def claim_shift(s: dict) -> dict:
    """1. Verdict: 'supported' if +v raises ASR for one vector and lowers it for another, each
    with BH q < 0.05 and beyond the null; 'partly' if only one sign; else 'not supported'."""
    fs = _generated(s["vectors"])
    real = [f for f in fs if f["verdict"] in ("weakens refusal", "strengthens refusal")]
    up = [f for f in real if f["verdict"] == "weakens refusal"]
    down = [f for f in real if f["verdict"] == "strengthens refusal"]
    big = max(fs, key=lambda f: abs(f["plus"]["delta_asr"]), default=None)
    measured = (f"{len(up)} vector×attack cells weaken refusal, {len(down)} strengthen it, "
                f"{sum(f['verdict'] == 'not distinguishable from a random direction' for f in fs)} "
                f"are not distinguishable from random, of {len(fs)}"
                + (f"; largest: {_cell(big['plus'])}" if big else ""))
    verdict = ("supported" if up and down else "partly (one sign)" if up or down
               else "not supported")
    return {"claim": "1. CAA vectors raise ASR for some behaviours and lower it for others",
            "paper": "shifts of up to +57 or −50 points on JailbreakBench, by behaviour",
            "measured": measured, "verdict": verdict}


def claim_templates(s: dict) -> dict:
    """2. Verdict: 'supported' if mean |ΔASR(+v)| under templates exceeds no attack and the
    per-vector differences are significant (exact McNemar on the template cell is irrelevant
    here: a sign test over vectors, p < 0.05); 'same direction' if larger but not significant."""
    fs = _generated(s["vectors"])
    none = {(f["vector"], f["dose"]): abs(f["plus"]["delta_asr"]) for f in fs if f["attack"] == "none"}
    tmpl = {(f["vector"], f["dose"]): abs(f["plus"]["delta_asr"]) for f in fs if f["attack"] != "none"}
    pairs = [(none[k], tmpl[k]) for k in none if k in tmpl]
    if not pairs:
        return {"claim": "2. Shifts are larger under template attacks",
                "paper": "largest under simple template attacks",
                "measured": "no template attack in this run", "verdict": "not tested"}
    larger = sum(t > n for n, t in pairs)
    from scipy.stats import binomtest

    p = binomtest(larger, len(pairs), 0.5, alternative="greater").pvalue
    mn, mt = statistics.fmean(n for n, _ in pairs), statistics.fmean(t for _, t in pairs)
    verdict = ("supported" if mt > mn and p < ALPHA else "same direction, not significant"
               if mt > mn else "not supported")
    return {"claim": "2. Shifts are larger under template attacks than with no attack",
            "paper": "largest under simple template attacks",
            "measured": f"mean \\|ΔASR(+v)\\|: no attack {100 * mn:.0f} pts, templates {100 * mt:.0f} pts; "
                        f"larger under templates for {larger} of {len(pairs)} vectors (sign test p={_g(p)})",
            "verdict": verdict}


def claim_overlap(s: dict) -> dict:
    """3. Verdict: 'supported' if, with the vector as the unit, ΔASR correlates with the cosine
    or the refusal-projection shift with a permutation q < 0.05 and the expected sign (more
    refusal direction, fewer jailbreaks: r < 0); else 'not supported' (with n vectors stated)."""
    parts, ok, sizes = [], False, set()
    for key, reg in s["regressions"].items():
        for x in ("cosine", "projection_shift"):
            t = reg[x]
            parts.append(f"{key} {x}: r={_g(t['r'])}, permutation p={_g(t['p_value'])}, "
                         f"q={_g(t.get('q_value'))}, n={t['n']} vectors")
            ok |= t.get("q_value", 1) < ALPHA and t["r"] < 0
        sizes.add(len(reg["vectors"]))
    for n in sorted(sizes):
        floor = smallest_permutation_p(n)
        parts.append(f"with {n} vectors the smallest attainable permutation p is {_g(floor)}"
                     if math.isfinite(floor) else f"{n} vectors: the test needs at least 3")
    return {"claim": "3. Overlap with the refusal direction explains ΔASR (the vector is the unit)",
            "paper": "shifts come from overlap with the refusal direction",
            "measured": "; ".join(parts) or "fewer than 3 vectors", "verdict":
                "supported" if ok else "not supported at this power"}


def _fix_outcome(raw_vs_fix_q: float, fix_vs_base_q: float) -> str:
    """One vector's mitigation by two tests: raw vs fixed, and fixed vs baseline."""
    changed, still = raw_vs_fix_q < ALPHA, fix_vs_base_q < ALPHA
    return ("restores" if changed and not still else "partly restores" if changed
            else "does not restore" if still else "inconclusive")


def _mitigation(s: dict, key: str) -> tuple[list[str], list[str]]:
    """Per vector with an effect: the outcome of its fix and the numbers behind it."""
    lines, outcomes = [], []
    for f in _generated(s["vectors"]):
        m, row = f["mitigation"].get(key), f.get(key)
        if not m or f["verdict"] in ("no effect", "not distinguishable from a random direction"):
            continue
        outcomes.append(_fix_outcome(m.get("q_value", 1.0), _q(row)))
        lines.append(f"{f['vector']}/{f['attack']}: raw {_pts(f['plus']['delta_asr'])} → "
                     f"{_pts(m['delta_asr'])} pts (raw vs fixed q={_g(m.get('q_value'))}, fixed vs "
                     f"baseline q={_g(_q(row))}): {outcomes[-1]}")
    return lines, outcomes


def _fix_verdict(outcomes: list[str]) -> str:
    """Verdict rule of claims 4 and 5: per vector with a real effect, 'restores' if raw vs
    fixed differs (q < 0.05) and fixed vs baseline does not; 'partly' if both differ; 'does
    not restore' if only fixed vs baseline differs; 'inconclusive' if neither; the verdict
    lists the counts."""
    if not outcomes:
        return "not tested (no vector beyond the null)"
    return ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))


def claim_orthogonal(s: dict) -> dict:
    """4. Rule: see `_fix_verdict` (⊥ the refusal direction)."""
    lines, outcomes = _mitigation(s, "perp1")
    return {"claim": "4. 1-D orthogonalisation only partly restores safety",
            "paper": "removing the refusal-direction component only partly restores safety",
            "measured": "; ".join(lines) or "no vector beyond the null", "verdict": _fix_verdict(outcomes)}


def claim_subspace(s: dict) -> dict:
    """5. Rule: see `_fix_verdict` (⊥ the k-D subspace); plus 1-D vs k-D ablation on JBB."""
    lines, outcomes = _mitigation(s, "perpk")
    val = s.get("validation", {})
    abl = [f"{k}: ASR {val[k]['asr']:.2f}" for k in ("refusal_ablated", "subspace_ablated") if k in val]
    return {"claim": f"5. k-D (k = {s['subspace'].get('k')}) subspace orthogonalisation restores safety",
            "paper": "open: one refusal direction is the paper's stated limitation",
            "measured": "; ".join(lines + abl), "verdict": _fix_verdict(outcomes)}


def claim_null(s: dict) -> dict:
    """6. Verdict: 'vector-specific' if every vector cell with q < 0.05 also beats 95% of the
    null (first-token refusal shift); 'k of n vector-specific' if some do; 'random directions
    move ASR as much' if none does."""
    fs = _generated(s["vectors"])
    sig = [f for f in fs if _q(f["plus"]) < ALPHA]
    beyond = [f for f in sig if f["null_percentile_screen"] >= 95]
    nulls = [r for r in s["rows"] if r["kind"] in ("random", "shuffled") and "delta_asr" in r]
    null_sig = sum(_q(r) < ALPHA for r in nulls)
    measured = (f"{len(beyond)} of {len(sig)} significant vector cells beyond the 95th percentile "
                f"of {fs[0]['n_null_screened'] if fs else 0} screened null directions; "
                f"{null_sig} of {len(nulls)} generated null cells significant themselves; "
                "null percentiles: " + ", ".join(
                    f"{f['vector']}/{f['attack']} {f['null_percentile_screen']:.0f}" for f in fs))
    verdict = ("no significant vector" if not sig else "vector-specific" if len(beyond) == len(sig)
               else f"{len(beyond)} of {len(sig)} vector-specific" if beyond
               else "random directions move ASR as much")
    return {"claim": "6. Effects exceed a norm-matched null", "paper": "no random control reported",
            "measured": measured, "verdict": verdict}


CLAIMS: tuple[Callable[[dict], dict], ...] = (claim_shift, claim_templates, claim_overlap,
                                              claim_orthogonal, claim_subspace, claim_null)


# -- per-run sections -----------------------------------------------------------------------

def instrument_lines(s: dict) -> list[str]:
    """Design and power, the refusal direction's checks, the vectors' own behaviour."""
    d, ref, sub = s["design"], s["refusal"], s["subspace"]
    lines = [f"- Design: {d['n_goals']} JBB goals stratified over {len(d['categories'])} categories; "
             f"attacks {', '.join(d['attacks'])}; judge {s['judge']}; doses {d['doses']} "
             f"({d['dose_unit']} unit); **minimum detectable ΔASR {_pts(d['minimum_detectable_delta_asr'])} "
             f"points** (exact McNemar, α = 0.05, 80% power); {s['n_tests_bh']} tests under BH; "
             f"steered {d['steered_positions']}{steered_tokens(d)}.",
             f"- Refusal direction: layer {ref.get('layer')}, steering layer {ref.get('steering_layer')}; "
             f"Arditi filter kept {ref.get('n_after_filter')} of {ref.get('n_before_filter')}; "
             f"fallback: {ref.get('fallback') or 'none (passes Arditi)'}."]
    for kind, v in s["validation"].items():
        lines.append(f"- On JBB, {kind}: ASR {v['asr']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}], "
                     f"Δ {_pts(v['delta_asr'])} pts, p={_g(v['p_value'])}: "
                     f"{'passes' if v['passes'] else '**fails**'}.")
    lines.append(f"- Subspace: {sub.get('method')}, k = {sub.get('k')} by {sub.get('k_by')}; harmful "
                 "refusal score with k directions ablated: " + ", ".join(
                     f"{k}: {v:.2f}" for k, v in sorted(sub.get("ablation_refusal_score", {}).items())))
    for name, rec in s["dose"].get("vectors", {}).items():
        eff = rec.get("effect") or {}
        lines.append(f"- {name}: ‖v‖ = {rec['relative_norm']:.3f} of the residual norm; p(matching) "
                     + ", ".join(f"{k} {v['mean']:.2f}" for k, v in eff.items())
                     + f"; steers at the audited dose: {rec.get('steers')}.")
    return lines


def verdict_table(s: dict) -> list[str]:
    lines = ["| vector | dose | attack | ΔASR pts [95% CI] | q | null % (ΔASR, n generated) | "
             "null % (refusal score, n screened) | null % (projection) | cos | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in s["vectors"]:
        p = f["plus"]
        lines.append(f"| {f['vector']} | {f['dose']:g} | {f['attack']} | {_pts(p.get('delta_asr'))} "
                     f"[{_pts(p.get('delta_ci_low'))}, {_pts(p.get('delta_ci_high'))}] | "
                     f"{_g(p.get('q_value'))} | {_g(f.get('null_percentile_delta_asr'))} "
                     f"({f['n_null_generated']}) | {_g(f['null_percentile_screen'])} "
                     f"({f['n_null_screened']}) | "
                     f"{_g(f.get('null_percentile_projection'))} | "
                     f"{f['overlap'].get('cosine', float('nan')):+.2f} | {f['verdict']} |")
    return lines


def run_label(s: dict, config: dict) -> str:
    """Model, dose and design size: enough to tell apart two runs of one model."""
    doses = ", ".join(f"{d:g}" for d in config["doses"])
    return (f"{config['model']}, {config['dose_unit']} dose {doses}, {config['n_goals']} goals × "
            f"{len(config['attacks'])} attack{'s' if len(config['attacks']) > 1 else ''}")


def run_section(run: Path, s: dict, config: dict, claims: list[dict]) -> list[str]:
    lines = [f"## {run_label(s, config)} — `{run}`", "", f"Preset {config['preset']}; behaviours "
             f"{', '.join(config['behaviours'])}; CAA over {config['n_caa_items']} items in both "
             f"answer orders (letter-balanced); {config['max_new_tokens']} new tokens, greedy.", ""]
    lines += instrument_lines(s) + ["", *verdict_table(s), "", "| claim | paper | measured | verdict |",
                                    "|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['paper']} | {c['measured']} | {c['verdict']} |" for c in claims]
    return lines + [""]


def render(runs: list[str], discussion: str | None = None) -> str:
    loaded = []
    for run in runs:
        data = load_run_data(run)
        s = summarize(data)
        loaded.append((Path(run), s, data.config, [claim(s) for claim in CLAIMS]))
    cmd = " ".join(runs) + (f" --discussion {discussion}" if discussion else "")
    out = ["# Findings: the paper's claims, measured by steerlens", "",
           f"Generated by `steerlens findings {cmd}` from the saved run directories; do "
           "not edit by hand (a test regenerates it and compares). The commands that made the "
           "runs are in `docs/findings_commands.sh`. Verdict rules are the docstrings of "
           "`steerlens/results/findings.py`.", "", "## At a glance", "",
           "| claim | paper | " + " | ".join(run_label(s, c) for _, s, c, _ in loaded) + " |",
           "|---|---|" + "---|" * len(loaded)]
    for i, fn in enumerate(CLAIMS):
        first = loaded[0][3][i] if loaded else fn.__doc__
        claim = re.sub(r" \(k = \w+\)", " (k by ablation, per run)", first["claim"])
        out.append(f"| {claim} | {first['paper']} | "
                   + " | ".join(cl[i]["verdict"] for _, _, _, cl in loaded) + " |")
    out.append("")
    for run, s, config, cl in loaded:
        out += run_section(run, s, config, cl)
    if discussion:
        out += [Path(discussion).read_text().rstrip(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="steerlens findings", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--discussion", default=None, help="hand-written markdown appended at the end")
    p.add_argument("--out", default="docs/findings.md")
    args = p.parse_args(argv)
    for run in args.runs:
        if not (Path(run) / "config.json").exists():
            print(f"error: {run} is not a run directory (no config.json)")
            return 2
    atomic_write_text(Path(args.out), render(args.runs, args.discussion))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
