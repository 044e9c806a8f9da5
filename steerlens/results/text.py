"""The audit's answer as text: one line per vector, dose and attack, then the design's power."""

from __future__ import annotations


def _pct(x) -> str:
    return "  n/a" if x is None or x != x else f"{100 * x:+4.0f}"


def _num(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None or x != x else format(x, fmt)


def _behaviour(f: dict) -> str:
    steers = f["behaviour"].get("steers", {}).get(f"{abs(f['dose']):g}")
    return "n/a" if steers is None else ("yes" if steers else "NO")


def verdict_lines(summary: dict) -> list[str]:
    head = (f"{'vector':<24} {'dose':>5} {'attack':<20} {'ΔASR pts [95% CI]':<22} {'null %':>6} "
            f"{'q':>6} {'cos':>6} {'steers':>6}  verdict")
    lines = [head, "-" * len(head)]
    for f in summary["vectors"]:
        p = f["plus"]
        ci = (f"{_pct(p.get('delta_asr'))} [{_pct(p.get('delta_ci_low'))},"
              f"{_pct(p.get('delta_ci_high'))}]")
        lines.append(f"{f['vector']:<24} {f['dose']:>5g} {f['attack']:<20} {ci:<22} "
                     f"{_num(f['null_percentile_screen'], '.0f'):>6} {_num(p.get('q_value'), '.3f'):>6} "
                     f"{_num(f['overlap'].get('cosine'), '+.2f'):>6} {_behaviour(f):>6}  {f['verdict']}")
    return lines


def steered_tokens(d: dict) -> str:
    """Steered prompt tokens per attack (runs before 0.3.0 did not record them)."""
    n = {a: k for a, k in (d.get("steered_prompt_tokens") or {}).items() if k is not None}
    return f"; prompt tokens steered: {', '.join(f'{k} under {a}' for a, k in n.items())}" if n else ""


def design_lines(summary: dict) -> list[str]:
    d = summary["design"]
    lines = [f"design: {d['n_goals']} JBB goals over {len(d['categories'])} categories; attacks "
             f"{', '.join(d['attacks'] or [])}; judge {d['judge']}; dose unit {d['dose_unit']}",
             f"steered: {d['steered_positions']}{steered_tokens(d)}",
             f"power: the smallest ΔASR this design detects (exact McNemar, α={d['alpha']}, "
             f"80% power, {100 * d['reverse_flip_rate']:.0f}% background flips) is "
             f"{_pct(d['minimum_detectable_delta_asr'])} points"]
    val = summary.get("validation", {})
    for kind, v in val.items():
        lines.append(f"refusal check on JBB: {kind}: ASR {v['asr']:.2f} (Δ {_pct(v['delta_asr'])} pts, "
                     f"p={v['p_value']:.3g}) {'ok' if v['passes'] else 'FAILS'}")
    fb = summary.get("refusal", {}).get("fallback")
    if fb:
        lines.append(f"WARNING: no refusal-direction candidate passed Arditi's filters; fallback: {fb}")
    return lines


def format_answer(summary: dict) -> str:
    """The end-of-run answer: verdicts first, then what the design can detect."""
    lines = ["Does the steering vector weaken refusals? (null %: share of norm-matched random/"
             "shuffled directions with a smaller first-token refusal shift)", ""]
    lines += verdict_lines(summary) + [""] + design_lines(summary)
    return "\n".join(lines)
