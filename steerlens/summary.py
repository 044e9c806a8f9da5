"""Statistics of a run directory, computed only from its saved files (so figures can be rebuilt)."""

from __future__ import annotations

from pathlib import Path

from scipy.stats import spearmanr

from steerlens.stats import asr, mcnemar_exact, ols, per_category
from steerlens.store import read_json, write_json


def load_cells(run: Path) -> dict[tuple[str, str], dict]:
    cells = {}
    for p in sorted((Path(run) / "cells").glob("*.json")):
        c = read_json(p)
        cells[(c["attack"], c["setting"])] = c
    return cells


def summarize(run: str | Path, judge=None) -> dict:
    """ASR with CIs, ΔASR and McNemar p per (attack, setting); false refusals; OLS; screening.

    With `judge`, the saved completions are re-judged (nothing is written): how much do the
    numbers depend on the judge? Without it, the summary is also saved as summary.json.
    """
    run = Path(run)
    cells = load_cells(run)
    if judge is not None:
        for c in cells.values():
            c["jailbroken"] = judge.judge(c["goals"], c["completions"])
    overlap = read_json(run / "overlap.json") if (run / "overlap.json").exists() else {}
    rows = []
    for (attack, setting), c in sorted(cells.items()):
        if attack == "benign":
            continue
        base = cells.get((attack, "baseline"))
        r = {"attack": attack, "setting": setting, "vector": c.get("vector"),
             "kind": c.get("kind"), "multiplier": c.get("multiplier"), **asr(c["jailbroken"])}
        if base is not None:
            r["delta_asr"] = r["asr"] - asr(base["jailbroken"])["asr"]
            r.update({f"mcnemar_{k}": v for k, v in
                      mcnemar_exact(base["jailbroken"], c["jailbroken"]).items()})
        vec = c.get("vector")
        if vec in overlap:
            r["cosine"] = overlap[vec]["cosine"]
            r["fraction_in_subspace"] = overlap[vec]["fraction_in_subspace"]
        r["per_category"] = per_category(c["jailbroken"], c["categories"])
        rows.append(r)
    benign = []
    for (attack, setting), c in sorted(cells.items()):
        if attack == "benign":
            fr = asr([not j for j in c["jailbroken"]])
            benign.append({"setting": setting, "false_refusal_rate": fr["asr"],
                           "ci_low": fr["ci_low"], "ci_high": fr["ci_high"], "n": fr["n"]})
    regressions = {}
    for attack in sorted({r["attack"] for r in rows}):
        pts = [r for r in rows if r["attack"] == attack and r["kind"] == "+" and "cosine" in r]
        for m in sorted({r["multiplier"] for r in pts}):
            sel = [r for r in pts if r["multiplier"] == m]
            regressions[f"{attack}@{m:g}"] = {
                **ols([r["cosine"] for r in sel], [r["delta_asr"] for r in sel]),
                "vectors": [r["vector"] for r in sel]}
    screening = {}
    if (run / "screen.json").exists():
        sc = read_json(run / "screen.json")
        attack = sc["attack"]
        pairs = [(sum(v) / len(v), next(r["asr"] for r in rows
                                        if r["attack"] == attack and r["setting"] == n))
                 for n, v in sc["scores"].items()
                 if any(r["attack"] == attack and r["setting"] == n for r in rows)]
        xs, ys = [-p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
            rho = spearmanr(xs, ys)
            screening = {"attack": attack, "spearman_neg_score_vs_asr": float(rho.statistic),
                         "p_value": float(rho.pvalue), "n_settings": len(pairs),
                         }
    summary = {"rows": rows, "benign": benign, "regressions": regressions,
               "screening": screening, "overlap": overlap}
    if (run / "behaviour_effect.json").exists():
        summary["behaviour_effect"] = read_json(run / "behaviour_effect.json")
    if judge is None:
        write_json(run / "summary.json", summary)
    return summary


def format_table(summary: dict) -> str:
    """The end-of-run table: ASR per attack x setting with CI, ΔASR, McNemar p, cosine."""
    head = f"{'attack':<20} {'setting':<42} {'ASR':>5} {'95% CI':>13} {'ΔASR':>6} {'p':>6} {'cos':>6}"
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        ci = f"[{r['ci_low']:.2f},{r['ci_high']:.2f}]"
        d = f"{r['delta_asr']:+.2f}" if "delta_asr" in r else ""
        p = f"{r['mcnemar_p_value']:.3f}" if "mcnemar_p_value" in r else ""
        cos = f"{r['cosine']:+.2f}" if "cosine" in r else ""
        lines.append(f"{r['attack']:<20} {r['setting']:<42} {r['asr']:>5.2f} {ci:>13} {d:>6} "
                     f"{p:>6} {cos:>6}")
    for b in summary["benign"]:
        lines.append(f"{'benign (false ref.)':<20} {b['setting']:<42} {b['false_refusal_rate']:>5.2f}")
    for k, reg in summary["regressions"].items():
        lines.append(f"OLS ΔASR ~ cosine [{k}]: slope {reg['slope']:.3g}, R² {reg['r2']:.3g} "
                     f"(n={reg['n']})")
    if summary.get("screening"):
        s = summary["screening"]
        lines.append(f"logit screening vs ASR ({s['attack']}): Spearman "
                     f"{s['spearman_neg_score_vs_asr']:.2f} over {s['n_settings']} settings")
    for n, eff in summary.get("behaviour_effect", {}).items():
        parts = ", ".join(f"{k.split('@')[-1] if '@' in k else k}: {v:.2f}" for k, v in eff.items())
        lines.append(f"behaviour effect p(matching) [{n}]: {parts}")
    return "\n".join(lines)
