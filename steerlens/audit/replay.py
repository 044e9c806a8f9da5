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

from steerlens.audit.artefacts import Refusal, Vectors, load_vector_files
from steerlens.audit.config import AuditConfig
from steerlens.audit.settings import Setting, build_settings, validation_settings
from steerlens.audit.stages import refusal_stage, subspace_stage, vector_stage
from steerlens.core.activations import collect_resid
from steerlens.core.geometry import scalar_projection
from steerlens.core.prompts import chat_prompts
from steerlens.errors import SteerlensError
from steerlens.methods.subspace import RefusalSubspace
from steerlens.results.summary import RunData, load_run_data
from steerlens.rundir import RunStore
from steerlens.schema import CONFIG_FILE, DOSE_FILE, REFUSAL_TENSORS, SETTINGS_FILE, SUBSPACE_TENSORS

REQUIRED = (CONFIG_FILE, REFUSAL_TENSORS, SUBSPACE_TENSORS,
            DOSE_FILE, SETTINGS_FILE)


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


class _ReadOnly(RunStore):
    """A run store that refuses to compute: every artefact must already be on disk."""

    def cached(self, name, compute, save, load):
        if not self.exists(name):
            raise SteerlensError(f"{self.root} has no {name}", fix="finish the run (--resume)")
        return load(self.path(name))

    def cached_json(self, name, compute):
        if not self.exists(name):
            raise SteerlensError(f"{self.root} has no {name}", fix="finish the run (--resume)")
        return self.read_json(name)


def replay_run(run: str | Path, model) -> AuditedRun:
    """The run's artefacts and every audited setting, on `model` (the run's model)."""
    root = Path(run)
    missing = [f for f in REQUIRED if not (root / f).exists()]
    if missing:
        raise SteerlensError(f"{root} is not a finished audit run (missing {', '.join(missing)})",
                             fix="pass an audit's --out directory, or finish it with --resume")
    store = _ReadOnly(root)
    cfg = AuditConfig.from_json(store.read_json(CONFIG_FILE)["config"])
    saved = Refusal.load(store.path(REFUSAL_TENSORS)).direction.direction
    if model.cfg.d_model != saved.shape[-1]:
        raise SteerlensError(f"{root} was audited on {cfg.model}, not on this model",
                             fix=f"load_model({cfg.model!r})")
    ref = refusal_stage(store, model, cfg)
    sub = subspace_stage(store, model, cfg, ref)
    vectors = vector_stage(store, model, cfg, ref, load_vector_files(cfg, model))
    dose = store.read_json(DOSE_FILE)
    grid = build_settings(cfg, model, ref, sub, vectors, dose["scale"])
    checks = validation_settings(model, ref, sub)
    return AuditedRun(root, cfg, ref, sub, vectors, dose, {s.name: s for s in grid + checks},
                      load_run_data(root))


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
    from steerlens.methods.refusal import refusal_scores

    dose = run.config.doses[0] if dose is None else dose
    names = {"baseline": "baseline", "+v": f"{vector}@{dose:g}+v",
             "+v⊥1": f"{vector}@{dose:g}+v_perp1", "+v⊥k": f"{vector}@{dose:g}+v_perpk"}
    return {k: float(refusal_scores(model, harmful, run.setting(n).steering, run.config.system,
                                    run.config.batch_size).mean()) for k, n in names.items()}

