"""The mediation stage (`--mediation`): for every audited vector (+v) and every generated null
of the run, the share of its first-token refusal-score effect that runs through the refusal
direction (1-D) and the refusal subspace (k-D), and the answer-polarity direction when the run
has one, per band of layers from the steering layer on (`methods.mediation`).

Per attack: one unsteered pass over the JBB goals reads the components (bodies cached once),
then per setting one stacked pass of its arms (plain, and each basis held in each band). Each
setting's per-goal scores go to mediation/<attack>__<setting>.json as soon as they exist, so a
killed stage resumes; mediation.json holds the shares, recomputed from those files.
"""

from __future__ import annotations

import torch

from steerlens.audit.log import log as _log
from steerlens.rundir import RunStore
from steerlens.schema import MEDIATION_FILE, POLARITY_TENSORS, mediation_name

MEDIATED_KINDS = ("+v", "shuffled", "random", "covariance", "pair_diff")


def mediated_settings(grid: list) -> list:
    """+v of every audited vector and every generated null (the verdicts' null cells)."""
    return [s for s in grid if s.kind.value in MEDIATED_KINDS and s.generate]


def _polarity(store: RunStore) -> dict[int, torch.Tensor] | None:
    """The run's answer-polarity direction per layer (a `SteeringVector` at resid_pre, as the
    polarity stage writes it), when the run has one."""
    from steerlens.core.vectors import SteeringVector

    if not store.exists(POLARITY_TENSORS):
        return None
    sv = SteeringVector.load(store.path(POLARITY_TENSORS)).as_resid_pre()
    return {lay: sv.at(lay) for lay in sv.layers if float(sv.at(lay).norm()) > 0}


def bases(store: RunStore, model, ref, sub) -> tuple[list[int], dict, dict]:
    """(held layers, per-layer bases by name, what each basis is) from the steering layer on:
    the refusal direction of each layer (the deepest computed one at or below it), the
    subspace (that direction and the subspace's other rows), the polarity direction."""
    from steerlens.methods.mediation import direction_layer, per_layer_bases

    layers = list(range(ref.layer, model.cfg.n_layers))
    rd = ref.direction
    dirs = {lay: rd.at(lay) for lay in rd.layers}
    k = sub.evidence["k"]
    out = {"direction": per_layer_bases(dirs, layers)}
    info = {"direction": {"k": 1, "direction_layers": {str(lay): direction_layer(rd.layers, lay)
                                                        for lay in layers}}}
    if k > 1:
        out["subspace"] = per_layer_bases(dirs, layers, sub.basis[1:k])
        info["subspace"] = {"k": k, "rows_beyond_the_direction": "the subspace's, at the "
                            f"steering layer {ref.layer}"}
    pol = _polarity(store)
    if pol:
        out["polarity"] = per_layer_bases(pol, layers)
        info["polarity"] = {"k": 1, "file": POLARITY_TENSORS,
                            "direction_layers": {str(lay): direction_layer(sorted(pol), lay)
                                                 for lay in layers}}
    return layers, out, info


def _attack_scores(store: RunStore, model, cfg, attack: str, goals, settings, held) -> dict:
    """Per-goal scores of one attack: the unsteered run's and each setting's (from its file,
    else computed and written)."""
    from steerlens.audit.evaluate import attack_prompts
    from steerlens.core.generation import refusal_log_odds
    from steerlens.core.patching import TailPatcher
    from steerlens.datasets.attacks import get_attack
    from steerlens.methods.mediation import mediation_scores, stack_bases
    from steerlens.methods.refusal import refusal_token_ids

    layers, named, bands = held
    reader, cols = stack_bases(named)
    ids = refusal_token_ids(model.tokenizer)
    patcher = None
    out = {}
    for s in settings:
        name = mediation_name(attack, s.name)
        if not store.exists(name):
            if patcher is None:
                prompts = attack_prompts(model.tokenizer, get_attack(attack), goals, cfg.system)
                patcher = TailPatcher(model, prompts, layers, reader,
                                      lambda x: refusal_log_odds(x, ids), cfg.batch_size)
                store.write_json(mediation_name(attack, "baseline"), {"scores": patcher.baseline.tolist()})
            store.write_json(name, mediation_scores(patcher, s.steering, cols, bands))
        out[s.name] = store.read_json(name)
    out["baseline"] = store.read_json(mediation_name(attack, "baseline"))["scores"]
    return out


def _shares(scores: dict, settings, seed: int) -> dict:
    from steerlens.methods.mediation import shares

    return {s.name: {**s.meta(), "shares": shares(scores[s.name], scores["baseline"], seed)}
            for s in settings}


def mediation_stage(store: RunStore, model, cfg, ref, sub, settings: dict) -> dict:
    """mediation.json: per attack and setting, the mediated shares (see the module docstring)."""
    from steerlens.datasets.loaders import load_jbb, stratified
    from steerlens.methods.mediation import layer_bands

    chosen = mediated_settings(settings["grid"])
    layers, named, info = bases(store, model, ref, sub)
    bands = layer_bands(ref.layer, model.cfg.n_layers)
    goals = stratified(load_jbb("harmful"), cfg.n_goals)
    _log(f"mediation: {len(chosen)} settings x {1 + len(named) * len(bands)} arms per attack")
    out = {"outcome": "first-token refusal score (log-odds of the refusal first tokens)",
           "site": "resid_pre, steered (post-instruction) positions; at the steering layer "
                   "after the addition", "held_at": "the unsteered run's component",
           "interval": "paired percentile bootstrap over goals (2000 resamples); share "
                       "undefined when the effect's 95% t-interval includes 0",
           "steering_layer": ref.layer, "bands": bands, "bases": info, "attacks": {}}
    for attack in cfg.attacks:
        scores = _attack_scores(store, model, cfg, attack, goals, chosen, (layers, named, bands))
        out["attacks"][attack] = _shares(scores, chosen, cfg.seed)
    store.write_json(MEDIATION_FILE, out)
    return store.read_json(MEDIATION_FILE)
