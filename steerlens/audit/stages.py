"""The audit's stages, in order. Each computes one artefact of the run directory once, through
`RunStore.cached`/`cached_json`, from the artefacts before it; forward passes are shared:
the subspace and the dose unit come from the refusal direction's activations, the logit
screen and the refusal projections from the grid's first decode step.
"""

from __future__ import annotations

import torch

from steerlens.audit.artefacts import CAAVector, Refusal, Vectors
from steerlens.audit.config import AuditConfig
from steerlens.audit.evaluate import behaviour_effect
from steerlens.audit.reuse import REFUSAL_FILES, SUBSPACE_FILES, refusal_inputs, reused, subspace_inputs
from steerlens.audit.settings import build_settings, dosed, validation_settings
from steerlens.core.activations import collect_resid
from steerlens.core.geometry import cosine, fraction_in_subspace, unit
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import ablation, addition
from steerlens.core.vectors import SteeringVector
from steerlens.datasets.behaviours import behaviour_split
from steerlens.datasets.loaders import load_categorized, load_instructions
from steerlens.methods.caa import balanced, label_shuffled, pair_activations
from steerlens.methods.polarity import item_polarity
from steerlens.methods.refusal import refusal_scores, sample, select_refusal_direction
from steerlens.methods.subspace import RefusalSubspace, choose_k_by_ablation, refusal_subspace
from steerlens.rundir import RunStore
from steerlens.schema import (
    DOSE_FILE,
    HARM_LABELS,
    OVERLAP_FILE,
    REFUSAL_FILE,
    REFUSAL_TENSORS,
    SETTINGS_FILE,
    SUBSPACE_FILE,
    SUBSPACE_TENSORS,
    SUMMARY_FILE,
    VECTOR_FILES,
    vector_file,
)


def _log(msg: str) -> None:
    import sys

    print(f"[steerlens] {msg}", file=sys.stderr, flush=True)


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


# -- 3. steering vectors ---------------------------------------------------------------------

def _caa_acts(model, cfg: AuditConfig, ref: Refusal, behaviour: str):
    """The behaviour's sampled CAA items (both answer orders, unless `balance` is "none") read
    at every layer up to the steering layer: the pair activations every extraction method
    shares."""
    items = behaviour_split(behaviour, "generate")
    items = [items[i] for i in sample(range(len(items)), cfg.n_caa_items, cfg.seed)]
    layers = sorted({lay for lay in ref.direction.layers if lay <= ref.layer} | {ref.layer})
    used = list(items) if cfg.balance == "none" else balanced(items)
    acts = pair_activations(model, used, layers, system=cfg.system,
                            batch_size=cfg.batch_size, desc=f"CAA {behaviour}")
    return items, layers, acts


def _caa_from(items, layers, acts, cfg: AuditConfig, ref: Refusal, behaviour: str,
              pol: SteeringVector) -> CAAVector:
    """The CAA vector under `cfg.balance` (`methods.polarity`), its cosines with the letter
    and polarity directions per layer, and label-shuffled nulls of the same kind (the pairs
    weighted and the polarity direction projected out as the vector's were)."""
    from steerlens.audit.polarity import at_layers, polarity_cosines
    from steerlens.methods.caa import split_half_cosine
    from steerlens.methods.polarity import polarity_free, project_out

    direction = at_layers(pol, layers) if pol is not None else None
    vec, plan = polarity_free(acts, cfg.balance, lambda: direction)
    group = 1 if cfg.balance == "none" else 2
    meta = {"kind": "caa", "behaviour": behaviour, "n_items": len(items), **plan.meta(),
            "split_half_cosine": split_half_cosine(acts.diffs, group, cfg.seed).tolist(),
            "letter_cosine": cosine(vec, acts.letter_direction()).tolist(),
            "unbalanced_letter_cosine": cosine(acts.diffs[0::group].mean(0),
                                               acts.letter_direction()).tolist()}
    sv = SteeringVector(vec, layers, "resid_pre", meta)
    if pol is not None:
        sv.meta["polarity_cosine"] = polarity_cosines(sv, pol)
    diffs = acts.diffs if plan.weights is None else acts.diffs * plan.weights[:, None, None].to(
        acts.diffs.dtype)
    nulls = label_shuffled(diffs, cfg.n_shuffled, cfg.seed)
    if plan.method != "none":
        nulls = project_out(nulls, direction.to(nulls.dtype))
    return CAAVector(sv, nulls[:, layers.index(ref.layer)])


def _method_vector(acts, layers, method: str, behaviour: str, cfg: AuditConfig,
                   pol: SteeringVector) -> SteeringVector:
    """Another extraction method over the same pair activations (`methods.extraction`)."""
    from steerlens.audit.polarity import at_layers, polarity_cosines
    from steerlens.methods.extraction import extract

    sv = extract(acts, layers, method, behaviour=behaviour, balance=cfg.balance,
                 polarity=at_layers(pol, layers) if pol is not None else None)
    sv.meta["method"] = method
    if pol is not None:
        sv.meta["polarity_cosine"] = polarity_cosines(sv, pol)
    return sv


def vector_name(behaviour: str, method: str) -> str:
    """CAA vectors keep the behaviour's name; other methods' are `behaviour:method`."""
    return behaviour if method == "mean_difference" else f"{behaviour}:{method}"


def _behaviour_vectors(store: RunStore, model, cfg: AuditConfig, ref: Refusal, b: str,
                       pol: SteeringVector):
    """The behaviour's CAA vector (and shuffled nulls) and its other methods' vectors, each in
    its own file; the pair activations are computed once, only if a file is missing."""
    names = {m: vector_file(b, m) for m in ("mean_difference", *cfg.methods)}
    cache: dict = {}

    def acts():
        if not cache:
            _log(f"pair activations: {b} ({cfg.n_caa_items} items, both answer orders)")
            cache["v"] = _caa_acts(model, cfg, ref, b)
        return cache["v"]

    caa = store.artefact(names["mean_difference"], CAAVector,
                         lambda: _caa_from(*acts(), cfg, ref, b, pol))
    out = {vector_name(b, m): store.artefact(
        names[m], SteeringVector, lambda m=m: _method_vector(acts()[2], acts()[1], m, b, cfg, pol))
        for m in cfg.methods if m != "mean_difference"}
    if "mean_difference" in cfg.methods:
        out = {b: caa.vector, **out}
    return out, caa.null


def vector_stage(store: RunStore, model, cfg: AuditConfig, ref: Refusal,
                 files: dict[str, SteeringVector], pol: SteeringVector | None = None) -> Vectors:
    """The audited vectors; `pol`: the polarity direction (default: the run's file, if any:
    runs made before it have none, and their vectors are on disk already)."""
    from steerlens.audit.polarity import polarity_cos, stored_polarity, warn_files

    pol = pol if pol is not None else stored_polarity(store)
    vecs, nulls = {}, {}
    for b in cfg.behaviours:
        got, null = _behaviour_vectors(store, model, cfg, ref, b, pol)
        vecs.update(got)
        nulls[b] = null
    vecs.update(files)
    if files:
        store.cached_json(VECTOR_FILES, lambda: {name: {
            **{k: sv.meta.get(k) for k in ("file", "format", "model_hint", "site_assumed")},
            "read_from": sv.meta.get("renumbered_from", sv.site), "site": sv.site,
            "layers": sv.layers,
            **({"polarity_cos": polarity_cos(sv, pol, ref.layer)} if pol is not None else {})}
            for name, sv in files.items()})
        if pol is not None:
            warn_files(files, pol, ref.layer)
    return Vectors(vecs, nulls)


# -- 4. dose ---------------------------------------------------------------------------------

def dose_scale(cfg: AuditConfig, ref: Refusal, vectors: Vectors) -> float:
    """Norm of a dose-1 vector at the steering layer: the mean residual norm (resid unit), or
    the mean CAA vector norm (the paper's equal-norm convention)."""
    if cfg.dose_unit == "resid":
        return ref.resid_norm
    norms = [float(v.at(ref.layer).norm()) for v in vectors.vectors.values()]
    return sum(norms) / len(norms)


def _effects(model, cfg: AuditConfig, ref: Refusal, named: dict, doses: list, scale: float) -> dict:
    """Behaviour effects of vectors that share a behaviour, in one pass over its held-out items
    (one unsteered reading and body cache for all of them); a lone vector is read as before."""
    behaviour = next(iter(named.values())).meta.get("behaviour", next(iter(named)))
    items = behaviour_split(behaviour, "test")[: cfg.n_behaviour_test]
    key = (lambda n, d: f"{d:+g}") if len(named) == 1 else (lambda n, d: f"{n}|{d:+g}")
    settings = {key(n, d): addition(dosed(sv.at(ref.layer), d, scale).to(model.cfg.device), ref.layer)
                for n, sv in named.items() for d in doses}
    _log(f"behaviour effect: {', '.join(named)} at doses {doses}")
    eff = behaviour_effect(model, items, settings, cfg.batch_size, cfg.system,
                           groups=[item_polarity(it) for it in items])
    return {n: {"unsteered": eff["unsteered"], **{f"{d:+g}": eff[key(n, d)] for d in doses}}
            for n in named}


def _compute_dose(model, cfg: AuditConfig, ref: Refusal, vectors: Vectors) -> dict:
    scale = dose_scale(cfg, ref, vectors)
    doses = sorted(set(cfg.dose_sweep) | set(cfg.doses) | {-d for d in cfg.doses})
    out = {"unit": cfg.dose_unit, "scale": scale, "resid_norm": ref.resid_norm, "layer": ref.layer,
           "doses": doses, "audited": list(cfg.doses), "vectors": {}}
    groups: dict[str, dict] = {}
    for name, sv in vectors.vectors.items():
        norm = float(sv.at(ref.layer).norm())
        out["vectors"][name] = {"raw_norm": norm, "relative_norm": norm / ref.resid_norm}
        if sv.meta.get("kind") == "caa" or sv.meta.get("method"):
            groups.setdefault(sv.meta.get("behaviour", name), {})[name] = sv
    for named in groups.values():
        for name, effect in _effects(model, cfg, ref, named, doses, scale).items():
            out["vectors"][name].update(
                effect=effect, steers={f"{d:g}": _steers(effect, d) for d in cfg.doses},
                polarity_check={f"{d:g}": polarity_check(effect, d) for d in cfg.doses})
    return out


MIN_POLARITY_TEST = 3  # held-out items of a polarity needed before the check reads it


def polarity_check(effect: dict, dose: float) -> dict:
    """Per polarity of the matching answer (Yes-like, No-like) with at least
    `MIN_POLARITY_TEST` held-out items: does +dose raise p(matching) and -dose lower it there?
    A vector that only says "Yes" raises it on Yes-matching items and lowers it on No ones."""
    up, down = effect[f"{dose:+g}"].get("by_polarity"), effect[f"{-dose:+g}"].get("by_polarity")
    if up is None or down is None:
        return {}
    out = {}
    for pol in ("yes", "no"):
        n = up.get(pol, {}).get("n_items", 0)
        out[pol] = ({"n_items": n, "checked": False} if n < MIN_POLARITY_TEST else
                    {"n_items": n, "checked": True,
                     "ok": up[pol]["shift"] > 0 and down[pol]["shift"] < 0})
    return out


def _steers(effect: dict, dose: float) -> bool:
    """+dose raises p(matching) and -dose lowers it, each significantly (paired t, p < 0.05),
    and, where the held-out items hold at least `MIN_POLARITY_TEST` Yes-matching and as many
    No-matching ones, in the matching direction on both (`polarity_check`)."""
    up, down = effect[f"{dose:+g}"], effect[f"{-dose:+g}"]
    overall = (up["shift"] > 0 and up["p_value"] < 0.05 and down["shift"] < 0
               and down["p_value"] < 0.05)
    checks = polarity_check(effect, dose)
    both = all(c.get("checked") for c in checks.values()) and len(checks) == 2
    return overall and (not both or all(c["ok"] for c in checks.values()))


def dose_stage(store: RunStore, model, cfg: AuditConfig, ref: Refusal, vectors: Vectors) -> dict:
    return store.cached_json(DOSE_FILE, lambda: _compute_dose(model, cfg, ref, vectors))


# -- 5. geometry -----------------------------------------------------------------------------

def overlap_stage(store: RunStore, ref: Refusal, sub: RefusalSubspace, vectors: Vectors,
                  pol: SteeringVector | None = None) -> dict:
    """Per vector at the steering layer: its cosine with the refusal direction (per layer
    too), its fraction in the refusal subspace, and its cosines with the answer-polarity
    direction (`polarity_cos`) and, for CAA-family vectors, the letter direction."""
    from steerlens.audit.polarity import polarity_cos

    k = sub.evidence["k"]

    def compute() -> dict:
        out = {}
        for name, sv in vectors.vectors.items():
            v = sv.at(ref.layer)
            per_layer = {str(lay): float(cosine(sv.at(lay), ref.direction.at(lay)))
                         for lay in sv.layers if lay in ref.direction.layers and sv.at(lay).norm() > 0}
            out[name] = {"cosine": float(cosine(v, ref.direction.at(ref.layer))),
                         "cosine_per_layer": per_layer,
                         "fraction_in_subspace": float(fraction_in_subspace(v, sub.basis[:k])),
                         "fraction_in_subspace_kmax": float(fraction_in_subspace(v, sub.basis)),
                         "chance_cosine": 1.96 / v.shape[0] ** 0.5}
            if pol is not None:
                out[name]["polarity_cos"] = polarity_cos(sv, pol, ref.layer)
            letter = sv.meta.get("letter_cosine")
            if letter is not None and len(letter) == len(sv.layers):
                out[name]["letter_cos"] = float(letter[sv.layers.index(ref.layer)])
        return out

    return store.cached_json(OVERLAP_FILE, compute)


# -- 6. the grid's settings and readout -----------------------------------------------------

def readout(model, ref: Refusal, sub: RefusalSubspace):
    """First-step readout: refusal score, and projections at the layers from the steering layer
    on (row 0: that layer's refusal direction; then the subspace's other rows)."""
    from steerlens.core.generation import Readout
    from steerlens.methods.refusal import refusal_token_ids

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
    from steerlens.audit.reuse import HarmMemo
    from steerlens.judges.harm import load_harm_judge
    from steerlens.judges.rejudge import read_cells, rejudge

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
    from steerlens.results.summary import load_run_data, summarize

    summary = summarize(load_run_data(store.root))
    store.write_json(SUMMARY_FILE, summary)
    return store.read_json(SUMMARY_FILE)
