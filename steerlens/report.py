"""Self-contained plotly HTML dashboard of a run directory (plotly.js inlined: no network)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.io import to_html

from steerlens.store import atomic_write_text, read_json
from steerlens.summary import summarize


def overlap_heatmap(overlap: dict) -> go.Figure:
    names = list(overlap)
    layers = sorted({int(k) for v in overlap.values() for k in v["cosine_per_layer"]})
    z = [[overlap[n]["cosine_per_layer"].get(str(lay)) for lay in layers] for n in names]
    fig = go.Figure(go.Heatmap(z=z, x=layers, y=names, colorscale="RdBu", zmid=0,
                               colorbar={"title": "cosine"}))
    fig.update_layout(title="Cosine(steering vector, refusal direction) per layer",
                      xaxis_title="layer", yaxis_title="vector")
    return fig


def delta_bars(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    for attack in sorted({r["attack"] for r in rows}):
        sel = [r for r in rows if r["attack"] == attack and r["kind"] == "+"]
        fig.add_bar(name=attack, x=[r["setting"] for r in sel], y=[r["delta_asr"] for r in sel],
                    error_y={"type": "data", "symmetric": False,
                             "array": [r["ci_high"] - r["asr"] for r in sel],
                             "arrayminus": [r["asr"] - r["ci_low"] for r in sel]})
    fig.update_layout(title="ΔASR of +m·v vs baseline (error bars: 95% Wilson CI of the ASR)",
                      barmode="group", yaxis_title="ΔASR")
    return fig


def scatter_ols(rows: list[dict], regressions: dict) -> go.Figure:
    fig = go.Figure()
    for key, reg in regressions.items():
        attack, m = key.rsplit("@", 1)
        sel = [r for r in rows if r["attack"] == attack and r["kind"] == "+"
               and f"{r['multiplier']:g}" == m and "cosine" in r]
        xs = [r["cosine"] for r in sel]
        fig.add_scatter(x=xs, y=[r["delta_asr"] for r in sel], mode="markers+text",
                        text=[r["vector"] for r in sel], name=key, textposition="top center")
        if xs and reg["slope"] == reg["slope"]:
            lo, hi = min(xs), max(xs)
            fig.add_scatter(x=[lo, hi], y=[reg["intercept"] + reg["slope"] * x for x in (lo, hi)],
                            mode="lines", name=f"OLS {key} (R²={reg['r2']:.2f})")
    fig.update_layout(title="ΔASR vs cosine with the refusal direction",
                      xaxis_title="cosine", yaxis_title="ΔASR")
    return fig


def mitigation(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    kinds = [("+", "raw"), ("+perp1", "1-D orthogonalised"), ("+perpk", "k-D orthogonalised"),
             ("+random", "norm-matched random")]
    for kind, label in kinds:
        sel = [r for r in rows if r["kind"] == kind]
        if sel:
            fig.add_bar(name=label, x=[f"{r['vector']}@{r['multiplier']:g} / {r['attack']}"
                                       for r in sel], y=[r["delta_asr"] for r in sel])
    fig.update_layout(title="Mitigation: ΔASR of raw vs orthogonalised vs random", barmode="group",
                      yaxis_title="ΔASR")
    return fig


def projections(screen: dict) -> go.Figure:
    fig = go.Figure()
    for name, scores in screen.get("scores", {}).items():
        if name == "baseline" or name.endswith("+") or name.endswith("-"):
            fig.add_box(y=scores, name=name)
    fig.update_layout(title=f"Logit refusal score per setting ({screen.get('attack')}): "
                            "harmful prompts, baseline vs steered", yaxis_title="refusal log-odds")
    return fig


def selection(cands: list[dict]) -> go.Figure:
    fig = go.Figure()
    scored = [c for c in cands if "ablation_refusal" in c]
    for pos in sorted({c["position"] for c in scored}):
        sel = [c for c in scored if c["position"] == pos]
        fig.add_scatter(x=[c["layer"] for c in sel], y=[c["ablation_refusal"] for c in sel],
                        mode="lines+markers", name=f"ablation refusal, pos {pos}")
        fig.add_scatter(x=[c["layer"] for c in sel], y=[c["addition_refusal"] for c in sel],
                        mode="lines+markers", name=f"addition refusal, pos {pos}")
        fig.add_scatter(x=[c["layer"] for c in sel], y=[c["kl"] for c in sel],
                        mode="lines+markers", name=f"ablation KL, pos {pos}", yaxis="y2")
    fig.update_layout(title="Refusal-direction selection scores per candidate",
                      xaxis_title="layer", yaxis_title="refusal score",
                      yaxis2={"overlaying": "y", "side": "right", "title": "KL"})
    return fig


def figures(run: str | Path) -> dict[str, go.Figure]:
    """Every dashboard figure, rebuilt from the run directory's files."""
    run = Path(run)
    s = summarize(run)
    figs = {"overlap": overlap_heatmap(s["overlap"]), "delta_asr": delta_bars(s["rows"]),
            "scatter": scatter_ols(s["rows"], s["regressions"]),
            "mitigation": mitigation(s["rows"])}
    if (run / "screen.json").exists():
        figs["projections"] = projections(read_json(run / "screen.json"))
    if (run / "refusal_candidates.json").exists():
        figs["selection"] = selection(read_json(run / "refusal_candidates.json"))
    return figs


def write_report(run: str | Path) -> Path:
    run = Path(run)
    figs = figures(run)
    parts = []
    for i, (name, fig) in enumerate(figs.items()):
        parts.append(f'<section id="{name}">' + to_html(
            fig, full_html=False, include_plotlyjs="inline" if i == 0 else False) + "</section>")
    cfg = read_json(run / "config.json")
    html = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>steerlens audit</title>"
            "</head><body style='font-family:sans-serif'>"
            f"<h1>steerlens audit: {cfg.get('model')}</h1>"
            f"<p>preset {cfg.get('preset')}, attacks {', '.join(cfg.get('attacks', []))}, "
            f"behaviours {', '.join(cfg.get('behaviours', []))}</p>"
            + "".join(parts) + "</body></html>")
    path = run / "report.html"
    atomic_write_text(path, html)
    return path
