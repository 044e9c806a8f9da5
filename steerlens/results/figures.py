"""Plotly figures of a run, built only from its summary and saved cells (regenerable).

Each function takes the summary (`summary.summarize`) and/or the run's data and returns one
figure sized for a 1366×768 laptop screen: legends sit below the plot, margins leave room for
axis labels.
"""

from __future__ import annotations

import plotly.graph_objects as go

from steerlens.results import verdicts as V
from steerlens.results.summary import NULL_KINDS, RunData
from steerlens.schema import DELTA_KEYS

NR = DELTA_KEYS["nonrefusal"]

LAYOUT = dict(height=460, margin=dict(l=80, r=30, t=90, b=40),
              legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
              font=dict(size=12), template="plotly_white")
COLORS = {V.RAISES["nonrefusal"]: "#d62728", V.LOWERS["nonrefusal"]: "#1f77b4",
          V.NOT_BEYOND_NULL: "#7f7f7f", V.TOO_FEW_NULLS: "#9467bd", V.NO_SHIFT: "#bbbbbb"}


def _fig(title: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(**{**LAYOUT, "title": dict(text=title, x=0, y=1, yanchor="top", pad=dict(t=10),
                                                  font=dict(size=14)), **layout})
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


# A dashboard figure's width at 1366 px (half the page's grid) and plotly's legend metrics at
# font 12: what `fit_top_legend` packs the legend's items into.
FIG_WIDTH, ITEM_PAD, CHAR_PX, ROW_PX, TITLE_LINE_PX = 620, 46, 6.6, 21, 20


def legend_rows(names: list[str], width: float) -> int:
    """Rows a horizontal legend of these item names needs in a plot area `width` px wide: one
    row when all fit, else (as plotly.js lays it out) a grid of columns as wide as the widest
    item."""
    if not names:
        return 0
    widths = [ITEM_PAD + CHAR_PX * len(n) for n in names]
    if sum(widths) <= width:
        return 1
    cols = max(1, int(width // max(widths)))
    return -(-len(names) // cols)


def fit_top_legend(fig: go.Figure) -> go.Figure:
    """Room for a legend that sits on top (the default): a top margin for the title's lines plus
    the legend's rows, so neither covers the other; legends placed below are left alone."""
    leg = fig.layout.legend
    if (leg.yanchor or "bottom") != "bottom" or (leg.y if leg.y is not None else 1.0) < 1.0:
        return fig
    names = [t.name or "" for t in fig.data if t.showlegend is not False and t.name]
    title = (fig.layout.title.text or "")
    m = fig.layout.margin
    width = FIG_WIDTH - (m.l if m.l is not None else 80) - (m.r if m.r is not None else 30)
    top = 14 + TITLE_LINE_PX * (title.count("<br>") + 1) + ROW_PX * legend_rows(names, width)
    fig.update_layout(margin=dict(t=max(top, fig.layout.margin.t or 0)))
    return fig


def _pct(x) -> float | None:
    return None if x is None else 100 * x


def delta_non_refusal(summary: dict) -> go.Figure:
    """The non-refusal shift of every audited vector (+v) with its CI, against the generated
    null cells."""
    fig = _fig("Δ non-refusal rate of each vector (+v, 95% CI)<br>against norm-matched null directions",
               yaxis_title="Δ non-refusal (points)")
    labels, ys, lo, hi, col = [], [], [], [], []
    for f in summary["vectors"]:
        p = f["plus"]
        if NR not in p:
            continue
        labels.append(f"{f['vector']} @{f['dose']:g} · {f['attack']}")
        ys.append(100 * p[NR])
        lo.append(100 * (p[NR] - p["delta_ci_low"]))
        hi.append(100 * (p["delta_ci_high"] - p[NR]))
        col.append(COLORS.get(f.get("verdict"), "#333"))
    fig.add_bar(x=labels, y=ys, marker_color=col, name="vector +v",
                error_y=dict(type="data", array=hi, arrayminus=lo))
    nulls = [r for r in summary["rows"] if r["kind"] in NULL_KINDS and NR in r]
    fig.add_scatter(x=[f"null ({r['attack']})" for r in nulls], y=[100 * r[NR] for r in nulls],
                    mode="markers", marker=dict(color="#7f7f7f", size=9, symbol="x"),
                    name="null directions (generated)", text=[r["setting"] for r in nulls])
    fig.add_hline(y=0, line_color="black", line_width=1)
    fig.update_xaxes(tickangle=-40)
    return fig


def screen_null(summary: dict) -> go.Figure:
    """First-token refusal-score shift of each vector inside the null of random directions."""
    fig = _fig("First-token refusal-score shift:<br>vectors inside the null distribution",
               yaxis_title="Δ refusal log-odds (harmful goals)")
    for attack in sorted({r["attack"] for r in summary["rows"]}):
        null = [r["refusal_score_shift"] for r in summary["rows"] if r["attack"] == attack
                and r["kind"] in NULL_KINDS and "refusal_score_shift" in r]
        if null:
            fig.add_box(y=null, x=[attack] * len(null), name=f"null ({attack})", boxpoints="all",
                        jitter=0.4, marker_color="#999", showlegend=attack == summary["rows"][0]["attack"])
    shown = set()  # one legend item per vector and dose, whatever the attacks
    for f in summary["vectors"]:
        name = f"{f['vector']} @{f['dose']:g}"
        fig.add_scatter(x=[f["attack"]], y=[f["plus"].get("refusal_score_shift")], mode="markers",
                        marker=dict(size=13, color=COLORS.get(f.get("verdict"), "#333"),
                                    line=dict(width=1, color="black")),
                        name=name, legendgroup=name, showlegend=name not in shown,
                        hovertext=f"{name} ({f['attack']}): {f.get('verdict', '')}")
        shown.add(name)
    fig.update_layout(boxmode="overlay")
    return fig


def projection_layers(data: RunData, summary: dict) -> go.Figure:
    """Per readout layer: projections onto the refusal direction of harmful goals (baseline),
    harmless goals (JBB benign, baseline) and harmful goals under each vector (+v)."""
    fig = _fig("Refusal projection per layer:<br>harmful, harmless and steered activations",
               xaxis_title="layer", yaxis_title="projection onto the refusal direction",
               violinmode="group")
    layers = summary["refusal"].get("readout_layers") or []
    attack = (summary["design"].get("attacks") or ["none"])[0]
    groups = [("harmful", data.cells.get((attack, "baseline"))),
              ("harmless (benign)", data.cells.get(("benign", "baseline")))]
    groups += [(f"harmful +{f['vector']} @{f['dose']:g}", data.cells.get((attack, f["plus"]["setting"])))
               for f in summary["vectors"] if f["attack"] == attack]
    for name, cell in groups:
        rows = (cell or {}).get("projection") or []
        if not rows or not rows[0]:
            continue
        xs = [layers[j] if j < len(layers) else j for r in rows for j in range(len(r))]
        ys = [r[j][0] for r in rows for j in range(len(r))]
        fig.add_violin(x=xs, y=ys, name=name, box_visible=True, meanline_visible=True,
                       points=False, scalemode="width")
    return fig


def projection_shift(summary: dict) -> go.Figure:
    """Mean projection shift (setting − baseline) across the layers from the steering layer on."""
    fig = _fig("Refusal-projection shift of each setting across layers<br>(harmful goals; "
               "a correlate read after steering, not an intervention)",
               xaxis_title="layer", yaxis_title="Δ projection (mean over goals)")
    layers = summary["refusal"].get("readout_layers") or []
    for r in summary["rows"]:
        shift = r.get("projection_shift") or []
        if not shift or r["kind"] == "baseline":
            continue
        null = r["kind"] in NULL_KINDS
        if null and not r["generated"]:
            continue
        x = layers[: len(shift)] if len(layers) >= len(shift) else list(range(len(shift)))
        fig.add_scatter(x=x, y=shift, mode="lines+markers", name=f"{r['setting']} ({r['attack']})",
                        line=dict(dash="dot", color="#aaa") if null else None,
                        legendgroup=r["kind"], visible=True if r["kind"] in ("+v", "-v") or null
                        else "legendonly")
    fig.add_hline(y=0, line_color="black", line_width=1)
    # many settings: the legend below the axis, in its own margin (on top it would cover the title)
    fig.update_layout(height=680, margin=dict(b=260),
                      legend=dict(orientation="h", yanchor="top", y=-0.28, font=dict(size=10)))
    return fig


def validation(summary: dict) -> go.Figure:
    """Non-refusal on JBB with the refusal direction/subspace ablated or the direction added."""
    fig = _fig("Refusal direction on JBB: ablated (non-refusal must rise),<br>added (must fall)",
               yaxis_title="non-refusal rate (%)")
    base = next((r for r in summary["rows"] if r["kind"] == "baseline" and "non_refusal" in r), None)
    rows = ([base] if base else []) + [r for r in summary["rows"] if r["kind"] in
                                       ("refusal_ablated", "subspace_ablated", "refusal_added")]
    fig.add_bar(x=[f"{r['setting']}<br>({r['attack']})" for r in rows],
                y=[100 * r["non_refusal"] for r in rows], name="non-refusal", marker_color="#555",
                error_y=dict(type="data", array=[100 * (r["ci_high"] - r["non_refusal"]) for r in rows],
                             arrayminus=[100 * (r["non_refusal"] - r["ci_low"]) for r in rows]))
    return fig


def mitigation(summary: dict) -> go.Figure:
    """Non-refusal under raw, 1-D and k-D orthogonalised vectors, beside the baseline."""
    fig = _fig("Non-refusal rate: raw vs orthogonalised vectors (⊥ refusal direction,<br>⊥ subspace); "
               "— = the unsteered baseline under the same attack",
               yaxis_title="non-refusal rate (%)", barmode="group")
    for key, label in (("plus", "raw +v"), ("perp1", "+v ⊥1"), ("perpk", "+v ⊥k")):
        fs = [f for f in summary["vectors"] if f.get(key) and "non_refusal" in f[key]]
        fig.add_bar(x=[f"{f['vector']} @{f['dose']:g} · {f['attack']}" for f in fs],
                    y=[100 * f[key]["non_refusal"] for f in fs], name=label,
                    error_y=dict(type="data",
                                 array=[100 * (f[key]["ci_high"] - f[key]["non_refusal"]) for f in fs],
                                 arrayminus=[100 * (f[key]["non_refusal"] - f[key]["ci_low"]) for f in fs]))
    base = {r["attack"]: r["non_refusal"] for r in summary["rows"]
            if r["kind"] == "baseline" and "non_refusal" in r}
    fs = [f for f in summary["vectors"] if f["attack"] in base and "non_refusal" in (f.get("plus") or {})]
    if fs:  # each bar group against its own attack's baseline (attacks' baselines differ)
        fig.add_scatter(x=[f"{f['vector']} @{f['dose']:g} · {f['attack']}" for f in fs],
                        y=[100 * base[f["attack"]] for f in fs], mode="markers",
                        name="unsteered baseline (same attack)", showlegend=False,
                        marker=dict(symbol="line-ew-open", size=40, color="#222", line=dict(width=2)))
    fig.update_xaxes(tickangle=-40)
    return fig


def behaviour(summary: dict) -> go.Figure:
    """p(matching answer) on held-out CAA items per dose: does each vector steer its behaviour?"""
    fig = _fig("Does each vector steer its own behaviour?<br>p(matching) on held-out items",
               xaxis_title=f"dose ({summary['dose'].get('unit', '')} unit)",
               yaxis_title="p(matching answer)")
    for name, rec in summary["dose"].get("vectors", {}).items():
        eff = rec.get("effect")
        if not eff:
            continue
        pts = sorted((0.0 if k == "unsteered" else float(k), v) for k, v in eff.items())
        xs, vals = [d for d, _ in pts], [v for _, v in pts]
        fig.add_scatter(x=xs, y=[v["mean"] for v in vals], mode="lines+markers", name=name,
                        error_y=dict(type="data", array=[v["ci_high"] - v["mean"] for v in vals],
                                     arrayminus=[v["mean"] - v["ci_low"] for v in vals]))
    for d in summary["design"].get("doses") or []:
        fig.add_vline(x=d, line_dash="dot", line_color="#999")
    return fig


def cosine_scatter(summary: dict) -> go.Figure:
    """Per vector: its antisymmetric non-refusal shift against cosine with the refusal direction."""
    fig = _fig("Correlation across vectors: Δ non-refusal (½(+v − −v))<br>against "
               "cos(v, refusal direction)",
               xaxis_title="cosine with the refusal direction",
               yaxis_title="½(Δ+v − Δ−v) non-refusal, pts")
    for key, reg in summary["regressions"].items():
        xs = reg["cosine"].get("x") or [summary["overlap"].get(v, {}).get("cosine") for v in reg["vectors"]]
        fig.add_scatter(x=xs, y=[100 * y for y in reg["effect"]], mode="markers+text",
                        text=reg["vectors"], textposition="top center", name=key,
                        marker=dict(size=11), cliponaxis=False)
    fig.update_xaxes(zeroline=True)
    return fig


def selection(summary: dict) -> go.Figure:
    """Arditi's candidates: ablation and addition refusal scores, the chosen one marked."""
    fig = _fig("Refusal-direction candidates (Arditi et al.)", xaxis_title="layer",
               yaxis_title="refusal score (log-odds)")
    cands = summary["refusal"].get("candidates") or []
    cands = [c for c in cands if "ablation_refusal" in c]
    for key, label in (("ablation_refusal", "harmful, direction ablated"),
                       ("addition_refusal", "harmless, direction added")):
        fig.add_scatter(x=[c["layer"] for c in cands], y=[c[key] for c in cands], mode="markers",
                        name=label, text=[f"position {c['position']}, KL {c['kl']:.3f}, "
                                          f"{'passes' if c.get('passes_arditi') else 'fails'} Arditi"
                                          for c in cands])
    layer = summary["refusal"].get("layer")
    if layer is not None:
        fig.add_vline(x=layer, line_dash="dash", annotation_text=f"chosen: layer {layer}")
    return fig


def subspace_k(summary: dict) -> go.Figure:
    """Harmful refusal score with the first k subspace directions ablated (k chosen by it)."""
    sub = summary["subspace"]
    scores = sub.get("ablation_refusal_score") or {}
    ks = sorted(int(k) for k in scores)
    fig = _fig(f"Refusal subspace: k = {sub.get('k')} ({sub.get('method')}), chosen by ablation",
               xaxis_title="directions ablated (k)", yaxis_title="harmful refusal score")
    fig.add_scatter(x=ks, y=[scores[str(k)] if str(k) in scores else scores[k] for k in ks],
                    mode="lines+markers", name="validation harmful prompts")
    return fig


ALL = {"delta_non_refusal": delta_non_refusal, "screen_null": screen_null,
       "projection_shift": projection_shift,
       "validation": validation, "mitigation": mitigation, "behaviour": behaviour,
       "cosine": cosine_scatter, "selection": selection, "subspace_k": subspace_k}


def figures(summary: dict, data: RunData) -> dict[str, go.Figure]:
    """Every figure of the report, by name."""
    out = {name: make(summary) for name, make in ALL.items()}
    out["projection_layers"] = projection_layers(data, summary)
    return out


SHORT = {"nonrefusal": "non-refusal", "harm": "harmful compliance"}
FIX_COLORS = {"perp1": "#1f77b4", "perpk": "#17becf", "compensate": "#2ca02c", "gate": "#9467bd",
              "learned": "#d62728", "clamp1": "#ff7f0e", "clampk": "#8c564b"}


def _side(kept: float) -> str:
    """A point's label toward the plot's middle, so names near its edges stay inside it."""
    return "top left" if kept > 0.9 else "top right" if kept < 0.6 else "top center"


def pareto(msummary: dict, attack: str, outcome: str = "nonrefusal") -> go.Figure:
    """Per vector and fix: share of the raw shift removed (safety restored) against the share
    of the behaviour effect kept; the top-right corner is a fix that works and costs nothing."""
    from steerlens.results.mitigations import pareto as points

    fig = _fig(f"Fixes under {attack}: {V.OUTCOME_NAMES[outcome]}<br>shift removed vs steering kept",
               xaxis_title="behaviour effect kept (share of raw)",
               yaxis_title=f"share of the raw Δ {SHORT[outcome]} removed")
    pts = points(msummary, attack, outcome)
    for fix in dict.fromkeys(p["fix"] for p in pts):
        sel = [p for p in pts if p["fix"] == fix]
        fig.add_scatter(x=[p["kept"] for p in sel], y=[p["restored"] for p in sel], mode="markers+text",
                        name=fix, text=[p["vector"] for p in sel], cliponaxis=False,
                        textposition=[_side(p["kept"]) for p in sel],
                        marker=dict(size=11, color=FIX_COLORS.get(fix)),
                        hovertext=[p["verdict"] for p in sel])
    fig.add_vline(x=0.8, line_dash="dot", annotation_text="keep bar 0.8")
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="fully restored")
    return fig


def library_scatter(analysis: dict, outcome: str = "nonrefusal",
                    predictor: str = "projection_shift") -> go.Figure:
    """One point per real vector (by method): its shift against a predictor, with the fit's r."""
    c = analysis["outcomes"][outcome]["all"][predictor]
    label = {"cosine": "cosine with the refusal direction (steering layer)",
             "projection_shift": "refusal-projection shift, later layers"}[predictor]
    fig = _fig(f"{V.OUTCOME_NAMES[outcome]} shift vs {predictor.replace('_', ' ')}: "
               f"r = {c.get('r', float('nan')):+.2f}, p = {c.get('p_value', float('nan')):.3g}, "
               f"n = {c.get('n', 0)}", xaxis_title=label, yaxis_title=f"Δ {SHORT[outcome]} (points)")
    units = analysis["vectors"]
    for m in dict.fromkeys(u["method"] for u in units):
        sel = [u for u in units if u["method"] == m and u[outcome] is not None]
        fig.add_scatter(x=[u[predictor] for u in sel], y=[100 * u[outcome] for u in sel],
                        mode="markers", name=m, text=[u["vector"] for u in sel])
    if predictor == "projection_shift":
        nulls = [n for n in analysis["nulls"] if n[outcome] is not None]
        fig.add_scatter(x=[n["projection_shift"] for n in nulls], y=[100 * n[outcome] for n in nulls],
                        mode="markers", name="nulls", text=[f"{n['kind']}: {n['setting']}" for n in nulls],
                        marker=dict(color="#aaaaaa", symbol="x", size=8))
    fig.add_hline(y=0, line_color="black", line_width=1)
    return fig


def layer_scan(analysis: dict) -> go.Figure:
    """Mean and largest |refusal-score shift| of isotropic random directions at each layer."""
    s = analysis["layer_scan"]
    layers = sorted(int(k) for k in s["mean_abs_shift"])
    fig = _fig(f"Layer fragility: random directions at dose {s['dose']} of each layer's norm",
               xaxis_title="layer (resid_pre)", yaxis_title="|first-token refusal-score shift|")
    for key, name in (("mean_abs_shift", "mean over directions"), ("max_abs_shift", "largest")):
        vals = {int(k): v for k, v in s[key].items()}
        fig.add_scatter(x=layers, y=[vals[k] for k in layers], mode="lines+markers", name=name)
    return fig
