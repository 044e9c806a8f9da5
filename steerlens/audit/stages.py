"""The audit's stages, in order. Each computes one artefact of the run directory once, through
`RunStore.cached`/`cached_json`, from the artefacts before it; forward passes are shared:
the subspace and the dose unit come from the refusal direction's activations, the logit
screen and the refusal projections from the grid's first decode step.
"""

from __future__ import annotations

import torch

from steerlens.audit.artefacts import Refusal, Vectors
from steerlens.audit.config import AuditConfig
from steerlens.audit.log import log as _log
from steerlens.audit.reuse import (
    REFUSAL_FILES,
    SUBSPACE_FILES,
    HarmMemo,
    refusal_inputs,
    reused,
    subspace_inputs,
)
from steerlens.audit.settings import build_settings, validation_settings
from steerlens.core.activations import collect_resid
from steerlens.core.generation import Readout
from steerlens.core.geometry import unit
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import ablation
from steerlens.datasets.loaders import load_categorized, load_instructions
from steerlens.judges.harm import load_harm_judge
from steerlens.judges.rejudge import read_cells, rejudge
from steerlens.methods.refusal import refusal_scores, refusal_token_ids, sample, select_refusal_direction
from steerlens.methods.subspace import RefusalSubspace, choose_k_by_ablation, refusal_subspace
from steerlens.results.summary import load_run_data, summarize
from steerlens.rundir import RunStore
from steerlens.schema import (
    HARM_LABELS,
    REFUSAL_FILE,
    REFUSAL_TENSORS,
    SETTINGS_FILE,
    SUBSPACE_FILE,
    SUBSPACE_TENSORS,
    SUMMARY_FILE,
)

# -- 1. the refusal direction ----------------------------------------------------------------

def instructions(name: str, n: int, seed: int) -> list[str]:
    """`n` instructions of a refusal split (`harmful_train`, ...), sampled with `seed`."""
    return sample([x.instruction for x in load_instructions(name)], n, seed)


def _compute_refusal(model, cfg: AuditConfig) -> Refusal:
    """Arditi's pipeline on the train/val splits (never on JBB), plus what later stages need."""
    n_layers = model.cfg.n_layers
    layers = sorted(set(range(0, n_layers, cfg.refusal_layer_stride))
                    | ({cfg.layer} if cfg.layer is not None else set()))
    nt, nv = cfg.n_refusal_train, cfg.n_refusal_val
    rd, acts = select_refusal_direction(
        model, instructions("harmful_train", nt, cfg.seed), instructions("harmless_train", nt, cfg.seed),
        instructions("harmful_val", nv, cfg.seed), instructions("harmless_val", nv, cfg.seed),
        layers=layers, positions=[-1] if cfg.refusal_positions == "last" else None,
        filter_prompts=cfg.filter_refusal_prompts, system=cfg.system, batch_size=cfg.batch_size)
    layer = cfg.layer if cfg.layer is not None else rd.layer
    harmful, harmless = acts.at(layer, rd.position)
    return Refusal(rd, layer, harmful, harmless, acts.resid_norm(layer),
                   rd.meta.get("val_harmful", []))


def _refusal_files(store: RunStore, model, cfg: AuditConfig) -> Refusal:
    ref = store.artefact(REFUSAL_TENSORS, Refusal,
                         lambda: _compute_refusal(model, cfg))
    rd = ref.direction
    store.cached_json(REFUSAL_FILE, lambda: {
        **rd.meta, "layer": rd.layer, "position": rd.position, "steering_layer": ref.layer,
        "readout_layers": [lay for lay in rd.layers if lay >= ref.layer],
        "resid_norm": ref.resid_norm, "candidates": rd.candidates})
    return ref


def refusal_stage(store: RunStore, model, cfg: AuditConfig, reuse=None) -> Refusal:
    _log("refusal direction: Arditi filter, difference in means, selection")
    ref = reused(store, reuse, "refusal", lambda: refusal_inputs(cfg), REFUSAL_FILES,
                  lambda: _refusal_files(store, model, cfg))
    fb = ref.direction.meta.get("fallback")
    _log(f"refusal direction: layer {ref.direction.layer}, position {ref.direction.position}"
         f"{'; FALLBACK: ' + fb if fb else ''}; steering layer {ref.layer}")
    return ref


# -- 2. the refusal subspace -----------------------------------------------------------------

def _category_acts(model, cfg: AuditConfig, ref: Refusal) -> tuple[torch.Tensor, list[str]]:
    """StrongREJECT prompts (no JBB overlap), `n_category` per category, at the direction's
    position and the steering layer."""
    rows = load_categorized("strongreject")
    by_cat: dict[str, list[str]] = {}
    for r in rows:
        by_cat.setdefault(r.category, []).append(r.instruction)
    picked = [(c, x) for c, xs in sorted(by_cat.items()) for x in sample(xs, cfg.n_category, cfg.seed)]
    prompts = chat_prompts(model.tokenizer, [x for _, x in picked], cfg.system)
    acts = collect_resid(model, prompts, [ref.layer], [ref.direction.position],
                         batch_size=cfg.batch_size, desc="category activations")
    return acts[:, 0, 0].cpu(), [c for c, _ in picked]


def _ablation_scores(model, basis: torch.Tensor, prompts: list[str], cfg: AuditConfig) -> dict:
    """Mean refusal score of the validation harmful prompts with the first k rows ablated."""
    out = {0: float(refusal_scores(model, prompts, None, cfg.system, cfg.batch_size).mean())}
    for k in range(1, basis.shape[0] + 1):
        abl = ablation(basis[:k].to(model.cfg.device), model.cfg.n_layers)
        out[k] = float(refusal_scores(model, prompts, abl, cfg.system, cfg.batch_size).mean())
    return out


def _compute_subspace(model, cfg: AuditConfig, ref: Refusal) -> RefusalSubspace:
    first = ref.direction.at(ref.layer)
    if cfg.n_category > 0:
        h, cats = _category_acts(model, cfg, ref)
        sub = refusal_subspace(h, ref.harmless, cfg.k, categories=cats, method="category",
                               first=first, seed=cfg.seed)
    else:
        sub = refusal_subspace(ref.harmful, ref.harmless, cfg.k, method="cluster", first=first,
                               seed=cfg.seed)
    scores = _ablation_scores(model, sub.basis, ref.val_harmful, cfg)
    k = cfg.k or choose_k_by_ablation({k: s for k, s in scores.items() if k > 0}, scores[0])
    sub.evidence.update(ablation_refusal_score=scores, k=k, k_by="given" if cfg.k else "ablation")
    return sub


def _subspace_files(store: RunStore, model, cfg: AuditConfig, ref: Refusal) -> RefusalSubspace:
    sub = store.artefact(SUBSPACE_TENSORS, RefusalSubspace,
                         lambda: _compute_subspace(model, cfg, ref))
    store.cached_json(SUBSPACE_FILE, lambda: {"method": sub.method, **sub.evidence})
    return sub


def subspace_stage(store: RunStore, model, cfg: AuditConfig, ref: Refusal,
                   reuse=None) -> RefusalSubspace:
    _log("refusal subspace: contrastive directions, k by ablation effect")
    sub = reused(store, reuse, "subspace", lambda: subspace_inputs(cfg, store), SUBSPACE_FILES,
                  lambda: _subspace_files(store, model, cfg, ref))
    _log(f"refusal subspace: {sub.method}, k = {sub.evidence['k']} of {sub.k}")
    return sub


# -- 6. the grid's settings and readout -----------------------------------------------------

def readout(model, ref: Refusal, sub: RefusalSubspace):
    """First-step readout: refusal score, and projections at the layers from the steering layer
    on (row 0: that layer's refusal direction; then the subspace's other rows)."""
    layers = [lay for lay in ref.direction.layers if lay >= ref.layer]
    extra = sub.basis[1: sub.evidence["k"]].float()
    bases = torch.stack([torch.cat([unit(ref.direction.at(lay)).float()[None], extra])
                         for lay in layers])
    return Readout(refusal_token_ids(model.tokenizer), layers, bases)


def settings_stage(store: RunStore, model, cfg: AuditConfig, ref: Refusal, sub: RefusalSubspace,
                   vectors: Vectors, scale: float) -> dict:
    """The grid's settings, with their metadata written to settings.json."""
    grid = build_settings(cfg, model, ref, sub, vectors, scale)
    checks = validation_settings(model, ref, sub)
    store.cached_json(SETTINGS_FILE, lambda: {s.name: s.meta() for s in grid + checks})
    return {"grid": grid, "validation": checks}


def harm_stage(store: RunStore, model, reuse=None) -> None:
    """The harm judge over every generated cell -> judgements/harm.json (the second outcome);
    it reuses the audited model when that is the judge's own 0.5B, and each cell's labels
    from the reuse store when the same cell was judged before."""
    path = store.root / HARM_LABELS
    if path.exists():
        done = set(store.read_json(HARM_LABELS)["cells"])
        if done >= {name[: -len(".json")] for name, _ in read_cells(store.root)}:
            return
    _log("harm judge: judging every generated completion for harmful compliance")
    judge = load_harm_judge(model=model)
    memo = HarmMemo(reuse, judge.settings()) if reuse is not None else None
    rejudge(store.root, judge, "harm", memo)
    if memo is not None:
        reuse.records["harm"] = {"cells_reused": memo.hits, "cells_judged": memo.misses}


def summary_stage(store: RunStore) -> dict:
    summary = summarize(load_run_data(store.root))
    store.write_json(SUMMARY_FILE, summary)
    return store.read_json(SUMMARY_FILE)
