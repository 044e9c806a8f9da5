"""Notebook analyses on a finished run, with the steering *exactly as audited*.

`replay_run(run, model)` rebuilds every setting of the grid through the audit's own stage code
from the run's saved artefacts (refusal direction, subspace, vectors, dose scale): the same
vectors, layer, dose and positions, not the raw CAA means. Nothing is recomputed or written;
an incomplete run is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from steerlens.audit.artefacts import Refusal, Vectors
from steerlens.audit.config import AuditConfig
from steerlens.audit.finished import open_audited
from steerlens.audit.settings import Setting, build_settings, validation_settings
from steerlens.core.activations import collect_resid
from steerlens.core.geometry import scalar_projection
from steerlens.core.prompts import chat_prompts
from steerlens.errors import SteerlensError
from steerlens.methods.refusal import refusal_scores
from steerlens.methods.subspace import RefusalSubspace
from steerlens.results.summary import RunData, load_run_data
from steerlens.schema import CONFIG_FILE, DOSE_FILE, REFUSAL_TENSORS, SETTINGS_FILE, SUBSPACE_TENSORS

REQUIRED = (CONFIG_FILE, REFUSAL_TENSORS, SUBSPACE_TENSORS, DOSE_FILE, SETTINGS_FILE)


@dataclass
class AuditedRun:
    """A run's artefacts and its settings, rebuilt for `model`."""

    root: Path
    config: AuditConfig
    refusal: Refusal
    subspace: RefusalSubspace
    vectors: Vectors
    dose: dict
    settings: dict[str, Setting]
    data: RunData

    def setting(self, name: str) -> Setting:
        if name not in self.settings:
            raise SteerlensError(f"no setting {name!r} in {self.root}",
                                 fix=f"use one of: {', '.join(list(self.settings)[:12])} ...")
        return self.settings[name]


def replay_run(run: str | Path, model) -> AuditedRun:
    """The run's artefacts and every audited setting, on `model` (the run's model)."""
    f = open_audited(run, model, REQUIRED)
    grid = build_settings(f.config, model, f.refusal, f.subspace, f.vectors, f.scale)
    checks = validation_settings(model, f.refusal, f.subspace)
    return AuditedRun(f.root, f.config, f.refusal, f.subspace, f.vectors, f.dose,
                      {s.name: s for s in grid + checks}, load_run_data(f.root))


def refusal_projections(
    model, run: AuditedRun, harmful: Sequence[str], harmless: Sequence[str],
    settings: Sequence[str] = (), layers: Sequence[int] | None = None,
) -> dict[str, dict[int, list[float]]]:
    """Per group and layer, the last-token projections onto that layer's refusal direction:
    harmful and harmless prompts unsteered, and harmful prompts under each audited setting."""
    rd = run.refusal.direction
    layers = sorted(layers or [lay for lay in rd.layers if lay >= run.refusal.layer])
    groups = {"harmful": (harmful, None), "harmless": (harmless, None)}
    groups.update({f"harmful, {n}": (harmful, run.setting(n).steering) for n in settings})
    out: dict[str, dict[int, list[float]]] = {}
    for name, (texts, steering) in groups.items():
        prompts = chat_prompts(model.tokenizer, list(texts), run.config.system)
        acts = collect_resid(model, prompts, layers, [rd.position], steering=steering,
                             batch_size=run.config.batch_size, desc=None).cpu()
        out[name] = {lay: scalar_projection(acts[:, i, 0], rd.at(lay)).tolist()
                     for i, lay in enumerate(layers)}
    return out


def projection_figure(proj: dict[str, dict[int, list[float]]]) -> go.Figure:
    """Violins per group and layer of the refusal-direction projections."""
    fig = go.Figure()
    for name, by_layer in proj.items():
        xs = [lay for lay, vals in by_layer.items() for _ in vals]
        ys = [v for vals in by_layer.values() for v in vals]
        fig.add_violin(x=xs, y=ys, name=name, box_visible=True, meanline_visible=True)
    fig.update_layout(violinmode="group", xaxis_title="layer", yaxis_title="projection",
                      title="Projection onto the refusal direction, per layer",
                      legend=dict(orientation="h", y=-0.2), margin=dict(l=70, r=20, t=50, b=80))
    return fig


def mitigation_scores(model, run: AuditedRun, harmful: Sequence[str], vector: str,
                      dose: float | None = None) -> dict[str, float]:
    """Mean first-token refusal score of `harmful` under baseline, +v, +v⊥1 and +v⊥k, each
    the audited setting (the screen the audit itself reads at the first decode step)."""
    dose = run.config.doses[0] if dose is None else dose
    names = {"baseline": "baseline", "+v": f"{vector}@{dose:g}+v",
             "+v⊥1": f"{vector}@{dose:g}+v_perp1", "+v⊥k": f"{vector}@{dose:g}+v_perpk"}
    return {k: float(refusal_scores(model, harmful, run.setting(n).steering, run.config.system,
                                    run.config.batch_size).mean()) for k, n in names.items()}

