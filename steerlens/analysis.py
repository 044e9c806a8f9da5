"""Interactive analyses for notebooks, built on a run directory (public API, no logic in cells)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import torch
from safetensors.torch import load_file

from steerlens.activations import collect_resid
from steerlens.directions import RefusalDirection, SteeringVector
from steerlens.geometry import scalar_projection
from steerlens.prompts import chat_token_rows, header_ids
from steerlens.steering import addition
from steerlens.store import read_json


def load_run(run: str | Path) -> dict:
    """The saved pieces of an audit run: config, refusal direction, subspace basis, vectors."""
    run = Path(run)
    vecs = {p.name.split(".")[0]: SteeringVector.load(p)
            for p in sorted((run / "vectors").glob("*.raw.safetensors"))}
    return {"config": read_json(run / "config.json"),
            "refusal": RefusalDirection.load(run / "refusal_direction.safetensors"),
            "basis": load_file(str(run / "refusal_subspace.safetensors"))["basis"],
            "vectors": vecs, "run": run}


def refusal_projections(
    model,
    refusal: RefusalDirection,
    harmful: Sequence[str],
    harmless: Sequence[str],
    layers: Sequence[int],
    vector: SteeringVector | None = None,
    steer_layer: int | None = None,
    multiplier: float = 8.0,
    system: str | None = None,
) -> dict[str, dict[int, list[float]]]:
    """Per layer, the projection onto the refusal direction (at that layer) of the last-token
    activations of harmful, harmless, and steered harmless prompts."""
    tok = model.tokenizer
    hdr = header_ids(tok, system)
    layers = sorted(set(layers))
    groups = {"harmful": (harmful, None), "harmless": (harmless, None)}
    if vector is not None:
        lay = steer_layer if steer_layer is not None else refusal.layer
        s = addition(vector.at(lay).to(model.cfg.device), lay, multiplier)
        groups[f"harmless + {multiplier:g}·v"] = (harmless, s)
    out: dict[str, dict[int, list[float]]] = {}
    for name, (prompts, steering) in groups.items():
        if steering is None:
            rows, _ = chat_token_rows(tok, list(prompts), system, include_header=False)
            acts = collect_resid(model, rows, layers, [-1], prefix=hdr, desc=None)
        else:
            # Steering acts after the instruction (CAA); whole rows, so no shared prefix here.
            rows, n_suffix = chat_token_rows(tok, list(prompts), system)
            with steering.window(n_suffix):
                acts = collect_resid(model, rows, layers, [-1], fwd_hooks=steering.hooks(),
                                     desc=None)
        out[name] = {lay: scalar_projection(acts[:, i, 0].cpu(), refusal.at(lay)).tolist()
                     for i, lay in enumerate(layers)}
    return out


def projection_figure(proj: dict[str, dict[int, list[float]]]) -> go.Figure:
    """Violin per group and layer of the refusal-direction projections."""
    fig = go.Figure()
    for name, by_layer in proj.items():
        xs, ys = [], []
        for lay, vals in by_layer.items():
            xs += [lay] * len(vals)
            ys += vals
        fig.add_violin(x=xs, y=ys, name=name, box_visible=True, meanline_visible=True)
    fig.update_layout(violinmode="group", title="Projection onto the refusal direction per layer",
                      xaxis_title="layer", yaxis_title="scalar projection")
    return fig


def mitigation_figure(result: dict) -> go.Figure:
    """Bars of the harmful refusal score per vector: baseline, raw, 1-D and k-D orthogonalised."""
    fig = go.Figure()
    names = list(result["vectors"])
    keys = [k for k in next(iter(result["vectors"].values())) if k != "restored_fraction"]
    for k in keys:
        fig.add_bar(name=k, x=names, y=[result["vectors"][n][k] for n in names])
    fig.add_hline(y=result["baseline"], line_dash="dash", annotation_text="baseline")
    fig.update_layout(barmode="group", yaxis_title="harmful refusal log-odds",
                      title="Mitigation: refusal score under raw vs orthogonalised steering")
    return fig


def to_device(t: torch.Tensor, model) -> torch.Tensor:
    return t.to(model.cfg.device)
