"""The vector stages: each audited vector (CAA and the other extraction methods, under the
run's `balance`; the --vector files), its behaviour effect per dose (the behaviour check,
per answer polarity), and its geometry against the refusal direction, subspace and answer
polarity. Split from `audit.stages`, which keeps the model-level stages."""

from __future__ import annotations

from steerlens.audit.artefacts import CAAVector, Refusal, Vectors
from steerlens.audit.config import AuditConfig
from steerlens.audit.held_out import (
    CHECKED_POLARITIES,
    MIN_POLARITY_TEST,
    CheckItems,
    check_items,
    checked_effect,
    extraction_items,
)
from steerlens.audit.log import log as _log
from steerlens.audit.settings import dosed
from steerlens.core.geometry import cosine, fraction_in_subspace
from steerlens.core.steering import addition
from steerlens.core.vectors import SteeringVector
from steerlens.methods.caa import balanced, label_shuffled, pair_activations, split_half_cosine
from steerlens.methods.extraction import extract
from steerlens.methods.subspace import RefusalSubspace
from steerlens.rundir import RunStore
from steerlens.schema import DOSE_FILE, OVERLAP_FILE, VECTOR_FILES, vector_file

# -- 3. steering vectors ---------------------------------------------------------------------

def _caa_acts(model, cfg: AuditConfig, ref: Refusal, behaviour: str):
    """The behaviour's sampled CAA items (both answer orders, unless `balance` is "none") read
    at every layer up to the steering layer: the pair activations every extraction method
    shares."""
    items = extraction_items(behaviour, cfg.n_caa_items, cfg.seed)
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


def _check_items(cfg: AuditConfig, behaviour: str) -> CheckItems:
    """The behaviour check's items under the run's sizes and seed (`audit.held_out`)."""
    return check_items(behaviour, cfg.n_behaviour_test, cfg.n_caa_items, cfg.seed)


def _effects(model, cfg: AuditConfig, ref: Refusal, named: dict, doses: list, scale: float,
             check: CheckItems | None = None) -> dict:
    """Behaviour effects of vectors that share a behaviour, in one pass over its held-out items
    (one unsteered reading and body cache for all of them; the per-polarity top-up items in a
    second, `audit.held_out.checked_effect`); a lone vector is read as before."""
    behaviour = next(iter(named.values())).meta.get("behaviour", next(iter(named)))
    check = check if check is not None else _check_items(cfg, behaviour)
    key = (lambda n, d: f"{d:+g}") if len(named) == 1 else (lambda n, d: f"{n}|{d:+g}")
    settings = {key(n, d): addition(dosed(sv.at(ref.layer), d, scale).to(model.cfg.device), ref.layer)
                for n, sv in named.items() for d in doses}
    _log(f"behaviour effect: {', '.join(named)} at doses {doses}")
    eff = checked_effect(model, check, settings, cfg.batch_size, cfg.system)
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
    for behaviour, named in groups.items():
        check = _check_items(cfg, behaviour)
        for name, effect in _effects(model, cfg, ref, named, doses, scale, check).items():
            out["vectors"][name].update(
                effect=effect, steers={f"{d:g}": _steers(effect, d) for d in cfg.doses},
                polarity_check={f"{d:g}": polarity_check(effect, d, check.record)
                                for d in cfg.doses},
                polarity_items=check.record)
    return out


def polarity_check(effect: dict, dose: float, record: dict | None = None) -> dict:
    """Per polarity of the matching answer (Yes-like, No-like) with at least
    `MIN_POLARITY_TEST` items (held-out, topped up from unextracted generate items where too
    few: `audit.held_out`): does +dose raise p(matching) and -dose lower it there? A vector
    that only says "Yes" raises it on Yes-matching items and lowers it on No ones. `record`
    (`CheckItems.record`) gives the reason a polarity is not checked."""
    up, down = effect[f"{dose:+g}"].get("by_polarity"), effect[f"{-dose:+g}"].get("by_polarity")
    if up is None or down is None:
        return {}
    out = {}
    for pol in CHECKED_POLARITIES:
        n = up.get(pol, {}).get("n_items", 0)
        out[pol] = ({"n_items": n, "checked": True,
                     "ok": up[pol]["shift"] > 0 and down[pol]["shift"] < 0}
                    if n >= MIN_POLARITY_TEST else {"n_items": n, "checked": False})
        why = (record or {}).get(pol, {}).get("not_checked")
        if why and not out[pol]["checked"]:
            out[pol]["why"] = why
    return out


def _steers(effect: dict, dose: float) -> bool:
    """+dose raises p(matching) and -dose lowers it, each significantly (paired t, p < 0.05),
    and, where the items read per polarity (held-out, topped up: `audit.held_out`) hold at least
    `MIN_POLARITY_TEST` Yes-matching and as many No-matching ones, in the matching direction
    on both (`polarity_check`)."""
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
