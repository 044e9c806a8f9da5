"""`python -m steerlens.findings RUN [RUN ...] --out docs/findings.md`: the paper's claims, measured.

Every number and every verdict is computed here from the run directories' saved files, so the
report cannot drift from the data. Figures are exported as PNG when kaleido can render them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from pathlib import Path

from steerlens.store import atomic_write_text, read_json
from steerlens.summary import summarize

ALPHA = 0.05


def _mean_abs(rows: list[dict]) -> float | None:
    vals = [abs(r["delta_asr"]) for r in rows if r.get("delta_asr") is not None]
    return statistics.fmean(vals) if vals else None


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.0f} pts" if pct else f"{x:.3g}"


def claims(summary: dict) -> list[tuple[str, str, str]]:
    """(claim, measurement, verdict) for the paper's six claims."""
    rows = [r for r in summary["rows"] if r["setting"] != "baseline"]
    raw = [r for r in rows if r["kind"] == "+"]
    out = []

    sig = [r for r in raw if r.get("mcnemar_p_value", 1) < ALPHA]
    up = sorted({r["vector"] for r in raw if r["delta_asr"] > 0})
    down = sorted({r["vector"] for r in raw if r["delta_asr"] < 0})
    verdict = ("supported" if up and down and sig else
               "directionally (both signs) but not significant at this sample size"
               if up and down else "not observed")
    out.append(("1. Steering raises ASR for some behaviours and lowers it for others",
                f"ΔASR > 0: {', '.join(up) or 'none'}; ΔASR < 0: {', '.join(down) or 'none'}; "
                f"{len(sig)}/{len(raw)} cells with exact McNemar p < {ALPHA}", verdict))

    none = [r for r in raw if r["attack"] == "none"]
    tmpl = [r for r in raw if r["attack"] != "none"]
    a, b = _mean_abs(none), _mean_abs(tmpl)
    verdict = ("n/a (needs both)" if a is None or b is None else
               "supported" if b > a else "not supported")
    out.append(("2. The shift is larger under template attacks than with no attack",
                f"mean \\|ΔASR\\|: no attack {_fmt(a)}, template attacks {_fmt(b)}", verdict))

    regs = summary["regressions"]
    parts = [f"{k}: slope {_fmt(v['slope'], False)}, R² {_fmt(v['r2'], False)}, n={v['n']}"
             for k, v in regs.items()]
    good = [v for v in regs.values() if v["r2"] is not None and v["r2"] == v["r2"]
            and v["r2"] > 0.5 and v["slope"] > 0]
    verdict = ("supported" if good and len(good) == len(regs) else
               "not supported (weak or no linear relation)" if regs else "n/a")
    if regs and max(v["n"] for v in regs.values()) < 5:
        verdict += "; too few behaviours for a meaningful fit"
    out.append(("3. cosine(vector, refusal direction) predicts ΔASR", "; ".join(parts) or "n/a",
                verdict))

    def by_kind(kind):
        return [r for r in rows if r["kind"] == kind]

    raw_m, p1, pk, rnd = (_mean_abs(by_kind(k)) for k in ("+", "+perp1", "+perpk", "+random"))
    p1_sig = sum(1 for r in by_kind("+perp1") if r.get("mcnemar_p_value", 1) < ALPHA)
    verdict = ("n/a" if raw_m is None or p1 is None else
               "supported" if p1 < raw_m and p1_sig > 0 else
               "shrinks \\|ΔASR\\|, and no cell differs significantly from baseline" if p1 < raw_m
               else "not supported: 1-D orthogonalisation does not shrink \\|ΔASR\\| here")
    out.append(("4. 1-D orthogonalisation shrinks \\|ΔASR\\| but does not restore baseline",
                f"mean \\|ΔASR\\| raw {_fmt(raw_m)}, 1-D {_fmt(p1)}; {p1_sig} 1-D cells still "
                f"significant", verdict))
    pk_sig = sum(1 for r in by_kind("+perpk") if r.get("mcnemar_p_value", 1) < ALPHA)
    verdict = ("n/a" if pk is None or raw_m is None else
               "restores baseline (k-D shift at most half the raw shift, none significant)"
               if pk <= 0.5 * raw_m and pk_sig == 0 else
               "does not restore baseline" + (" (though smaller than 1-D)"
                                              if p1 is not None and pk < p1 else ""))
    out.append(("5. k-D subspace orthogonalisation restores baseline",
                f"mean \\|ΔASR\\| k-D {_fmt(pk)} (1-D {_fmt(p1)}, raw {_fmt(raw_m)})", verdict))
    verdict = ("n/a" if rnd is None or raw_m is None else
               "the steering effect is vector-specific" if rnd < 0.5 * raw_m else
               "a random direction of the same norm moves ASR about as much: at this norm the "
               "effect is not specific to the behaviour vectors")
    out.append(("6. Norm-matched random control", f"mean \\|ΔASR\\| random {_fmt(rnd)} vs raw "
                f"{_fmt(raw_m)}", verdict))
    return out


def run_section(run: Path, fig_dir: Path | None) -> str:
    cfg = read_json(run / "config.json")
    s = summarize(run)
    base = [r for r in s["rows"] if r["setting"] == "baseline"]
    lines = [f"## {cfg['model']} — `{run}`", "",
             f"Preset `{cfg['preset']}`: behaviours {', '.join(cfg['behaviours'])}; attacks "
             f"{', '.join(cfg['attacks'])}; multipliers {cfg['multipliers']}; "
             f"{cfg['n_goals']} JBB goals; {cfg['max_new_tokens']} new tokens; seed {cfg['seed']}.",
             "", "Baseline ASR: " + "; ".join(
                 f"{r['attack']} {r['asr']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                 for r in base), "",
             "| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c} | {m} | {v} |" for c, m, v in claims(s)]
    lines += ["", "| attack | setting | ASR | 95% CI | ΔASR | McNemar p | cosine |",
              "|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['attack']} | {r['setting']} | {r['asr']:.2f} | "
                     f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r.get('delta_asr', 0):+.2f} | "
                     f"{r.get('mcnemar_p_value', 1):.3f} | "
                     f"{r['cosine']:+.3f} |" if "cosine" in r else
                     f"| {r['attack']} | {r['setting']} | {r['asr']:.2f} | "
                     f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | | | |")
    if fig_dir is not None:
        pngs = export_pngs(run, fig_dir)
        if pngs:
            lines += [""] + [f"![{p.stem}]({p.relative_to(fig_dir.parent)})" for p in pngs]
    return "\n".join(lines) + "\n"


def export_pngs(run: Path, fig_dir: Path) -> list[Path]:
    """PNG exports of the dashboard figures (needs kaleido); [] when unavailable."""
    from steerlens.report import figures

    try:
        import kaleido  # noqa: F401
    except ImportError:
        return []
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:  # kaleido renders with a local Chromium (Debian's package works)
        os.environ.setdefault("BROWSER_PATH", browser)
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fig in figures(run).items():
        path = fig_dir / f"{Path(run).name}_{name}.png"
        try:
            fig.write_image(str(path), width=1000, height=500)
        except Exception:  # kaleido present but no browser to render with
            return out
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m steerlens.findings")
    ap.add_argument("runs", nargs="+", help="audit run directories")
    ap.add_argument("--out", default="docs/findings.md")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    fig_dir = None if args.no_figures else out.parent / "figures"
    body = ["# Findings: the paper's claims, measured by steerlens", "",
            "Generated by `python -m steerlens.findings " + " ".join(args.runs) + "` from the "
            "saved run directories; do not edit by hand. Models are dequantized from GGUF. "
            "Verdicts are rules applied to the numbers (p < 0.05, exact McNemar against the "
            "baseline on the same prompts); small samples make most of them inconclusive.", ""]
    body += [run_section(Path(r), fig_dir) for r in args.runs]
    atomic_write_text(out, "\n".join(body))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
