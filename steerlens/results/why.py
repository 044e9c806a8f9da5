"""The dashboard's "Why" by intervention: per attack, the share of each audited vector's effect
on the first-token refusal score that goes away when a component of the residual stream (the
refusal direction, the refusal subspace, the answer-polarity direction) is held at the
unsteered run's value, per layer band, with its paired-bootstrap interval (`mediation.json`,
`audit.mediation`, docs/mediation.md). The generated nulls' shares are drawn beside them.
Only for a run with mediation (`--mediation`); the correlational figures stay in `figures`.
The generated outcomes' shares (`mediation_generated.json`: the clamp cells, `audit.generated`)
get a figure of their own per attack: one bar per outcome, vector and basis."""

from __future__ import annotations

import plotly.graph_objects as go

from steerlens.results.figures import _fig

OUTCOME = "first-token refusal score"
BASES = {"direction": "refusal direction", "subspace": "refusal subspace",
         "polarity": "answer-polarity direction"}
PATTERNS = {"direction": "", "subspace": "/", "polarity": "."}  # the basis; the colour is the vector
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def band_order(bands: dict) -> list[str]:
    """Every layer from the steering layer first, then the parts from the shallowest (the
    saved JSON sorts its keys as strings: "14-17" before "14-23")."""
    return sorted(bands, key=lambda b: (-len(bands[b]), bands[b][0] if bands[b] else 0))


def _pct(x) -> float | None:
    return None if x is None else 100 * x


def _bar(fig: go.Figure, bands: list[str], label: str, basis: str, by_band: dict, color: str) -> None:
    """One vector's shares through one basis: a bar per band with its interval."""
    recs = [by_band.get(b) or {} for b in bands]
    ys = [_pct(r.get("share")) for r in recs]
    ci = [r.get("share_ci") or [None, None] for r in recs]
    up = [0 if y is None or c[1] is None else 100 * c[1] - y for y, c in zip(ys, ci)]
    down = [0 if y is None or c[0] is None else y - 100 * c[0] for y, c in zip(ys, ci)]
    hover = [r.get("undefined") or f"effect {r.get('effect', float('nan')):+.3f}" for r in recs]
    fig.add_bar(x=bands, y=ys, name=f"{label}: {BASES.get(basis, basis)}", hovertext=hover,
                marker=dict(color=color, pattern=dict(shape=PATTERNS.get(basis, "x"))),
                error_y=dict(type="data", array=up, arrayminus=down))


def _nulls(fig: go.Figure, bands: list[str], per: dict, basis: str) -> None:
    """The generated nulls' own shares through `basis`, as grey marks per band."""
    xs, ys, text = [], [], []
    for name, rec in per.items():
        if rec.get("kind") == "+v":
            continue
        for b in bands:
            share = ((rec["shares"].get(basis) or {}).get(b) or {}).get("share")
            if share is not None:
                xs.append(b), ys.append(100 * share), text.append(name)
    if xs:
        fig.add_scatter(x=xs, y=ys, mode="markers", text=text, legendgroup="nulls",
                        name=f"generated nulls: {BASES.get(basis, basis)}",
                        marker=dict(color="#999", symbol="x", size=7))


def mediated_shares(med: dict, attack: str) -> go.Figure:
    """Per layer band, each audited vector's (+v) mediated share per basis, nulls beside."""
    fig = _fig(f"Why, by intervention ({attack}): share of each vector's effect<br>on the "
               f"{OUTCOME} held back by holding a component at unsteered",
               xaxis_title="layers where the component is held (resid_pre)",
               yaxis_title=f"share of the Δ {OUTCOME}<br>held back (%)", barmode="group")
    bands, per = band_order(med.get("bands") or {}), med["attacks"][attack]
    vectors = [(n, r) for n, r in per.items() if r.get("kind") == "+v"]
    for i, (name, rec) in enumerate(vectors):
        label = f"{rec.get('vector', name)} @{rec.get('dose', '')}"
        for basis, by_band in rec["shares"].items():
            _bar(fig, bands, label, basis, by_band, PALETTE[i % len(PALETTE)])
    for basis in dict.fromkeys(b for _, r in per.items() for b in r["shares"]):
        _nulls(fig, bands, per, basis)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=bands)
    fig.add_hline(y=0, line_color="black", line_width=1)
    fig.add_hline(y=100, line_dash="dot", annotation_text="all of the effect")
    fig.update_layout(height=640, margin=dict(b=240), legend=dict(
        orientation="h", yanchor="top", y=-0.3, font=dict(size=10),
        title=dict(text=f"{OUTCOME}, held at unsteered:", side="top")))
    return fig


def mediation_figures(summary: dict) -> dict[str, go.Figure]:
    """One figure per attack of the run's mediation.json; none without it."""
    med = summary.get("mediation") or {}
    return {f"mediation-{a}": mediated_shares(med, a) for a in med.get("attacks") or {}}


GENERATED = {"nonrefusal": "non-refusal", "harm": "harmful compliance"}


def _generated_bar(fig: go.Figure, label: str, basis: str, per_outcome: dict, color: str) -> None:
    """One +v's generated shares through one basis (clamp1: direction, clampk: subspace)."""
    outs = [o for o in GENERATED if basis in (per_outcome.get(o) or {})]
    recs = [per_outcome[o][basis] for o in outs]
    ys = [_pct(r.get("share")) for r in recs]
    ci = [r.get("share_ci") or [None, None] for r in recs]
    up = [0 if y is None or c[1] is None else 100 * c[1] - y for y, c in zip(ys, ci)]
    down = [0 if y is None or c[0] is None else y - 100 * c[0] for y, c in zip(ys, ci)]
    hover = [r.get("undefined") or f"Δ {100 * r.get('effect', float('nan')):+.0f} points"
             for r in recs]
    fig.add_bar(x=[f"{GENERATED[o]} (Δ generated)" for o in outs], y=ys, hovertext=hover,
                name=f"{label}: {BASES.get(basis, basis)} clamped",
                marker=dict(color=color, pattern=dict(shape=PATTERNS.get(basis, "x"))),
                error_y=dict(type="data", array=up, arrayminus=down))


def generated_shares(gen: dict, attack: str) -> go.Figure:
    """Per generated outcome, each +v's share held back by the clamp (the component held at an
    unsteered twin's from the steering layer on), with its paired-bootstrap interval; a share
    whose total effect's interval includes 0 is undefined and drawn as no bar."""
    layers = gen.get("clamp_layers") or []
    where = f"layers {layers[0]}-{layers[-1]}" if layers else "the clamp layers"
    fig = _fig(f"Why, by intervention ({attack}): share of each vector's<br>effect on the "
               f"generated outcomes held back by clamping<br>a component at an unsteered "
               f"twin's ({where})", xaxis_title="generated outcome (judged completions)",
               yaxis_title="mediated share of the Δ (%)", barmode="group")
    per = (gen.get("attacks") or {}).get(attack) or {}
    for i, (tag, rec) in enumerate(per.items()):
        for basis in dict.fromkeys(b for o in rec.values() for b in o):
            _generated_bar(fig, tag, basis, rec, PALETTE[i % len(PALETTE)])
    fig.add_hline(y=0, line_color="black", line_width=1)
    fig.add_hline(y=100, line_dash="dot", annotation_text="all of the effect")
    fig.update_layout(height=580, margin=dict(t=110, b=200), legend=dict(
        orientation="h", yanchor="top", y=-0.3, font=dict(size=10)))
    return fig


def generated_figures(gen: dict | None) -> dict[str, go.Figure]:
    """One figure per attack of a `mediation_generated.json` record; none without it."""
    gen = gen or {}
    return {f"mediation-generated-{a}": generated_shares(gen, a) for a in gen.get("attacks") or {}}
