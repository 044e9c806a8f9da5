"""The dashboard's "Why" by intervention: per attack, the share of each audited vector's effect
on the first-token refusal score that goes away when a component of the residual stream (the
refusal direction, the refusal subspace, the answer-polarity direction) is held at the
unsteered run's value, per layer band, with its paired-bootstrap interval (`mediation.json`,
`audit.mediation`, docs/mediation.md). The generated nulls' shares are drawn beside them.
Only for a run with mediation (`--mediation`); the correlational figures stay in `figures`."""

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
               yaxis_title=f"mediated share of the Δ {OUTCOME} (%)", barmode="group")
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
