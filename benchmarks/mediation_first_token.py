"""First-token mediated shares of a finished run's vectors on the embedded model, and their cost
against one generated cell.

From the run's refusal direction, subspace, vectors and dose scale: on `--n-goals` JBB goals
(stratified, as the audit draws them) under each attack, every audited vector's +v and
`--n-random` random-direction nulls (the run's own draws) and its label-shuffled null, each
with the refusal direction and the subspace held at the unsteered value in every layer band
(`audit.mediation`); then one +v cell generated as the grid does (64 tokens, refusal stop),
timed, for the cost comparison.

    PYTHONPATH=. python benchmarks/mediation_first_token.py results/findings-0.5b-resid \\
        --json docs/mediation_0.5b.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _settings(run: Path, cfg, ref, vectors: list[str], n_random: int, d_model: int, dev):
    from steerlens.audit.artefacts import CAAVector
    from steerlens.audit.settings import dosed, random_directions
    from steerlens.core.steering import addition

    scale = json.loads((run / "dose.json").read_text())["scale"]
    add = lambda v: addition(v.float().to(dev), ref.layer)  # noqa: E731
    out = {}
    for name in vectors:
        caa = CAAVector.load(run / "vectors" / f"{name}.safetensors")
        out[f"{name}@0.15+v"] = ("+v", add(dosed(caa.vector.at(ref.layer), 0.15, scale)))
        out[f"{name}@0.15shuffled0"] = ("shuffled", add(dosed(caa.null[0], 0.15, scale)))
    for i, x in enumerate(random_directions(cfg["n_null_screen"] + cfg["n_null_generate"],
                                           d_model, cfg["seed"])[:n_random]):
        out[f"random{i}@0.15"] = ("random", add(dosed(x, 0.15, scale)))
    return out


def _one_cell(model, prompts, steering) -> float:
    """Seconds to generate one cell as the grid does (64 new tokens, refusal stop)."""
    from steerlens.audit.evaluate import refusal_stop
    from steerlens.core.generation import generate_grid
    from steerlens.judges.registry import get_judge

    t = time.time()
    generate_grid(model, prompts, {"cell": steering}, 64, 16,
                  decided=refusal_stop(get_judge("refusal_string")), desc=None)
    return time.time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--n-goals", type=int, default=30)
    p.add_argument("--n-random", type=int, default=4)
    p.add_argument("--attacks", nargs="+", default=["none"])
    p.add_argument("--vectors", nargs="+", default=["corrigible-neutral-HHH"])
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    from steerlens.audit.artefacts import Refusal
    from steerlens.audit.evaluate import attack_prompts
    from steerlens.audit.mediation import bases
    from steerlens.core.generation import refusal_log_odds
    from steerlens.core.models import load_model
    from steerlens.core.patching import TailPatcher
    from steerlens.datasets.attacks import get_attack
    from steerlens.datasets.loaders import load_jbb, stratified
    from steerlens.methods.mediation import layer_bands, mediation_scores, shares, stack_bases
    from steerlens.methods.refusal import refusal_token_ids
    from steerlens.methods.subspace import RefusalSubspace
    from steerlens.rundir import RunStore

    torch.set_grad_enabled(False)
    cfg = json.loads((a.run / "config.json").read_text())["config"]
    model = load_model(cfg["model"], device="cpu")
    ref = Refusal.load(a.run / "refusal_direction.safetensors")
    sub = RefusalSubspace.load(a.run / "refusal_subspace.safetensors")
    sub.evidence["k"] = json.loads((a.run / "subspace.json").read_text())["k"]
    layers, named, info = bases(RunStore(a.run), model, ref, sub)
    bands = layer_bands(ref.layer, model.cfg.n_layers)
    reader, cols = stack_bases(named)
    ids = refusal_token_ids(model.tokenizer)
    settings = _settings(a.run, cfg, ref, a.vectors, a.n_random, model.cfg.d_model, model.cfg.device)
    goals = stratified(load_jbb("harmful"), a.n_goals)
    out = {"run": str(a.run), "n_goals": a.n_goals, "bands": bands, "bases": info,
           "steering_layer": ref.layer, "attacks": {}, "seconds": {}}
    for attack in a.attacks:
        prompts = attack_prompts(model.tokenizer, get_attack(attack), goals, cfg["system"])
        t = time.time()
        tp = TailPatcher(model, prompts, layers, reader, lambda x: refusal_log_odds(x, ids), 16)
        sec = {"unsteered_pass": time.time() - t, "per_setting": {}}
        res = {}
        for name, (kind, steer) in settings.items():
            t = time.time()
            sc = mediation_scores(tp, steer, cols, bands)
            sec["per_setting"][name] = time.time() - t
            res[name] = {"kind": kind, "shares": shares(sc, tp.baseline.tolist(), cfg["seed"])}
            print(attack, name, json.dumps(res[name]["shares"]["direction"][next(iter(bands))]),
                  flush=True)
        out["attacks"][attack], out["seconds"][attack] = res, sec
        if a.json:  # before the slow cell: a run cut short keeps what it finished
            a.json.write_text(json.dumps(out, indent=1) + "\n")
        first = next(n for n, (k, _) in settings.items() if k == "+v")
        sec["one_generated_cell"] = _one_cell(model, prompts, settings[first][1])
        if a.json:
            a.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["seconds"], indent=1))


if __name__ == "__main__":
    main()
