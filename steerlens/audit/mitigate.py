"""`python -m steerlens.audit.mitigate RUN`: what fixes a finished audit's vectors, and at what cost.

On a finished run, without touching its files or redoing its cells, into `RUN/mitigations/`:
1. the transforms, each from the vector and the model's refusal geometry, calibrated only on
   data that is not JBB (`methods.mitigations`, `methods.learned`):
   `perp1`/`perpk` (orthogonalised at the steering layer; taken from the run when it has them),
   `compensate` (downstream compensation on held-out harmful prompts, `harmful_val`),
   `gate` (CAST: condition point chosen on the refusal train prompts; `condition.safetensors`),
   `learned` (a learned safety component removed; `learned/*.safetensors` with its curve);
2. their cells on the run's JBB goals and attacks and on its benign goals (`cells/`, the same
   grid code and judge as the run), the harm judge's labels (`judgements/harm.json`), and how
   often the gate lets the steering through on harmful and benign goals (`gate.json`);
3. the costs (`costs.json`): the behaviour effect kept (p(matching) on the held-out items) and
   the capability side effects (accuracy on CAA's MMLU and TruthfulQA A/B sets), raw and per fix;
4. `mitigations.json` / `mitigations.md`: per vector, fix, attack and outcome the verdicts
   (`results.mitigations`).
Resumable: every artefact is written once, atomically; a rerun continues.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from steerlens.errors import SteerlensError
from steerlens.rundir import RunStore

MITIGATIONS = ("perp1", "perpk", "compensate", "gate", "learned")
SUFFIX = {"perp1": "+v_perp1", "perpk": "+v_perpk", "compensate": "+v_comp", "gate": "+v_gated",
          "learned": "+v_learned"}


@dataclass(frozen=True)
class MitigateConfig:
    """What the mitigate stage computes (its hash guards a resumed run)."""

    mitigations: tuple[str, ...] = MITIGATIONS
    n_capability: int = 100  # items per capability set (each in both answer orders)
    n_calibration: int = 32  # held-out harmful prompts (harmful_val) for the compensation
    learned_steps: int = 10
    learned_harmful: int = 8  # harmful train prompts in the learned component's objective
    learned_items: int = 4  # training A/B items of the behaviour (both orders)
    learned_lr: float = 0.05
    seed: int = 0
    attacks: tuple[str, ...] = ()  # a subset of the run's attacks (empty: all of them)
    vectors: tuple[str, ...] = ()  # a subset of the run's vectors (empty: all of them)

    def to_json(self) -> dict:
        return asdict(self)


def _log(msg: str) -> None:
    print(f"[steerlens] {msg}", file=sys.stderr, flush=True)


def check(run: Path, mcfg: MitigateConfig) -> None:
    """Fail before loading anything: a finished run, known mitigations, sane sizes."""
    if not (run / "summary.json").exists() or not (run / "config.json").exists():
        raise SteerlensError(f"{run} is not a finished audit run (no summary.json)",
                             fix="run python -m steerlens.audit first, or finish it with --resume")
    bad = [m for m in mcfg.mitigations if m not in MITIGATIONS]
    if bad or not mcfg.mitigations:
        raise SteerlensError(f"unknown mitigation(s) {bad}", fix=f"use some of: {', '.join(MITIGATIONS)}")
    ran = RunStore(run).read_json("config.json")["config"]["attacks"]
    if set(mcfg.attacks) - set(ran):
        raise SteerlensError(f"--attacks {list(mcfg.attacks)}: the run audited {ran}",
                             fix="name attacks the run has, or none for all of them")
    names = {f["vector"] for f in RunStore(run).read_json("summary.json")["vectors"]}
    if set(mcfg.vectors) - names:
        raise SteerlensError(f"--vectors {list(mcfg.vectors)}: the run audited {sorted(names)}",
                             fix="name vectors the run has, or none for all of them")
    deployed = [n for n in (mcfg.vectors or names) if n.startswith("file:")] if RunStore(
        run).read_json("config.json")["config"].get("protocol") == "deployed" else []
    if deployed:
        raise SteerlensError(f"{deployed} were audited as deployed (every layer, every "
                             "position); the fixes here act at one layer after the instruction",
                             fix="pass --vectors with the run's CAA vectors, or audit the file "
                                 "under --protocol caa and mitigate that run")
    if min(mcfg.n_capability, mcfg.n_calibration, mcfg.learned_harmful, mcfg.learned_items) < 1:
        raise SteerlensError("mitigate sizes must be at least 1", fix="e.g. --n-capability 100")
    store = RunStore(run / "mitigations")
    import json

    if store.exists("config.json") and store.read_json("config.json") != json.loads(
            json.dumps(mcfg.to_json())):
        raise SteerlensError(f"{store.root} holds a mitigation run with other settings",
                             fix="delete that directory or use the same settings")


# -- the transforms ----------------------------------------------------------------------------

def _condition(store: RunStore, model, cfg, ref):
    """CAST's condition point on the refusal train prompts (never JBB), saved once."""
    from steerlens.audit.stages import _split
    from steerlens.core.tensorfile import load_tensors, save_tensors
    from steerlens.methods.mitigations import Condition, find_condition_point

    path = store.path("condition.safetensors")
    if not path.exists():
        n = cfg.n_refusal_train
        c = find_condition_point(model, _split("harmful_train", n, cfg.seed),
                                 _split("harmless_train", n, cfg.seed), range(1, ref.layer + 1),
                                 system=cfg.system, batch_size=cfg.batch_size)
        from steerlens.rundir import atomic_save_tensor

        meta = {"layer": c.layer, "threshold": c.threshold, "comparator": c.comparator, "f1": c.f1}
        atomic_save_tensor(lambda tmp: save_tensors(tmp, {"direction": c.direction}, meta), path)
    t, meta = load_tensors(path)
    return Condition(t["direction"], meta["layer"], meta["threshold"], meta["comparator"], meta["f1"])


def _compensation(store: RunStore, model, cfg, ref, tag: str, v: torch.Tensor):
    """Downstream compensation of `v`, its per-layer multipliers saved (`compensation/`)."""
    from steerlens.audit.stages import _split
    from steerlens.core.geometry import unit
    from steerlens.core.steering import addition, as_float, combine
    from steerlens.methods.mitigations import compensation

    rd, L = ref.direction, ref.layer
    later = [k for k in rd.layers if k > L]
    dev = model.cfg.device
    add = addition(v.float().to(dev), L)

    def compute() -> dict:
        calib = _split("harmful_val", store_cfg(store)["n_calibration"], cfg.seed + 1)
        s = compensation(model, add, {k: rd.at(k) for k in later}, later, calib, cfg.system,
                         cfg.batch_size)
        return {"layers": later, "multipliers": [float(a.multiplier) for a in s.interventions[1:]],
                "n_calibration": len(calib)}

    rec = store.cached_json(f"compensation/{tag}.json", compute)
    return combine(add, *[addition(as_float(unit(rd.at(k)), model), k, m)
                          for k, m in zip(rec["layers"], rec["multipliers"])])


def store_cfg(store: RunStore) -> dict:
    return store.read_json("config.json")


def _learned(store: RunStore, model, cfg, ref, name: str, sv, tag: str, v: torch.Tensor):
    """The learned safety component of `v` (`learned/{tag}.safetensors`, curve in its meta)."""
    from steerlens.audit.stages import _split
    from steerlens.core.geometry import unit
    from steerlens.core.tensorfile import load_tensors, save_tensors
    from steerlens.datasets.behaviours import behaviour_split
    from steerlens.methods.learned import learned_component
    from steerlens.rundir import atomic_save_tensor

    path = store.path(f"learned/{tag}.safetensors")
    if not path.exists():
        m = store_cfg(store)
        items = behaviour_split(sv.meta.get("behaviour", name), "generate")[-m["learned_items"]:]
        harmful = _split("harmful_train", m["learned_harmful"], cfg.seed + 2)
        _log(f"learned safety component: {tag} ({m['learned_steps']} steps)")
        comp = learned_component(model, v, ref.layer, harmful, items, unit(ref.direction.at(ref.layer)),
                                 m["learned_steps"], m["learned_lr"], system=cfg.system)
        atomic_save_tensor(lambda tmp: save_tensors(tmp, {"direction": comp.direction},
                                                    {"curve": comp.curve, "best_step": comp.best_step}),
                           path)
    t, _ = load_tensors(path)
    u = t["direction"].to(v)
    return v - (v @ u) * u


@dataclass
class _Ctx:
    """What every fix of one run needs."""

    store: RunStore
    model: object
    cfg: object
    ref: object
    sub: object
    cond: object = None

    def add(self, x: torch.Tensor):
        from steerlens.core.steering import addition

        return addition(x.float().to(self.model.cfg.device), self.ref.layer)


def _fix(c: _Ctx, fix: str, name: str, sv, tag: str, v: torch.Tensor):
    """(kind, steering) of one fix of `v` (the vector `name` dosed)."""
    from steerlens.audit.evaluate import Kind
    from steerlens.core.geometry import orthogonalize, orthogonalize_subspace
    from steerlens.methods.mitigations import gated

    L = c.ref.layer
    if fix == "perp1":
        return Kind.PERP1, c.add(orthogonalize(v, c.ref.direction.at(L)))
    if fix == "perpk":
        return Kind.PERPK, c.add(orthogonalize_subspace(v, c.sub.basis[: c.sub.evidence["k"]]))
    if fix == "compensate":
        return Kind.COMPENSATED, _compensation(c.store, c.model, c.cfg, c.ref, tag, v)
    if fix == "gate":
        return Kind.GATED, gated(c.add(v), c.cond)
    return Kind.LEARNED, c.add(_learned(c.store, c.model, c.cfg, c.ref, name, sv, tag, v))


def _has_behaviour(sv) -> bool:
    return sv.meta.get("kind") == "caa" or bool(sv.meta.get("method"))


def mitigation_settings(store: RunStore, model, cfg, ref, sub, vectors, scale: float) -> list:
    """Per vector and audited dose the raw +v and each chosen fix (the run may hold some of
    their cells already: perp1 and perpk in the standard presets)."""
    from steerlens.audit.evaluate import Kind, Setting
    from steerlens.audit.stages import dosed

    chosen = store_cfg(store)["mitigations"]
    c = _Ctx(store, model, cfg, ref, sub)
    if "gate" in chosen:
        c.cond = _condition(store, model, cfg, ref)
    out = []
    for d in cfg.doses:
        for name, sv in vectors.vectors.items():
            tag, v = f"{name}@{d:g}", dosed(sv.at(ref.layer), d, scale)
            out.append(Setting(f"{tag}+v", Kind.PLUS, c.add(v), name, d))
            for m in chosen:
                if m == "learned" and not _has_behaviour(sv):
                    continue  # no behaviour items to keep the effect on (a --vector file)
                kind, steering = _fix(c, m, name, sv, tag, v)
                out.append(Setting(tag + SUFFIX[m], kind, steering, name, d))
    return out


# -- cells, gate rates, costs --------------------------------------------------------------------

def _blocks(cfg, settings: list, run: Path) -> list:
    """Per attack (and the benign goals) each vector's fixed settings whose cells the run does
    not hold already (the standard presets generate +v_perp1/+v_perpk on harmful goals only)."""
    from steerlens.audit.grid import _by_owner, cell_name
    from steerlens.datasets.loaders import load_jbb, stratified

    def missing(attack: str) -> list:
        return [s for s in settings if s.kind.value != "+v"
                and not (run / cell_name(attack, s.name)).exists()]

    goals = stratified(load_jbb("harmful"), cfg.n_goals)
    out = [b for a in cfg.attacks for b in _by_owner(a, goals, missing(a))]
    if cfg.n_benign:
        out += _by_owner("benign", stratified(load_jbb("benign"), cfg.n_benign), missing("benign"))
    return [b for b in out if b.settings]


def gate_rates(model, cfg, cond) -> dict:
    """Share of goals on which the gate lets the steering through, per attack and on benign."""
    from steerlens.datasets.attacks import get_attack
    from steerlens.datasets.loaders import load_jbb, stratified
    from steerlens.methods.mitigations import gate_decisions

    harmful = stratified(load_jbb("harmful"), cfg.n_goals)
    out = {}
    for a in cfg.attacks:
        att = get_attack(a)
        texts = [att.render(g.goal, g.target) for g in harmful]
        dec = gate_decisions(model, texts, cond, cfg.system, cfg.batch_size)
        out[a] = {"steered": sum(dec), "n": len(dec), "rate": sum(dec) / len(dec)}
    if cfg.n_benign:
        dec = gate_decisions(model, [g.goal for g in stratified(load_jbb("benign"), cfg.n_benign)],
                             cond, cfg.system, cfg.batch_size)
        out["benign"] = {"steered": sum(dec), "n": len(dec), "rate": sum(dec) / len(dec)}
    return out


def _p_matching(model, items, settings: dict, batch_size: int, system) -> dict[str, list[float]]:
    """Per prompt (both answer orders of each item) p(matching) under each setting."""
    from steerlens.audit.evaluate import answer_prompts, p_matching
    from steerlens.core.generation import next_token_logits_grid
    from steerlens.core.steering import Steering

    ans = answer_prompts(model.tokenizer, items, system)
    grid = next_token_logits_grid(model, ans.prompts, {"unsteered": Steering(), **settings}, batch_size)
    return {k: p_matching(v.cpu(), ans).tolist() for k, v in grid.items()}


def costs(model, cfg, vectors, settings: list, mcfg: dict, seed: int) -> dict:
    """Behaviour effect (held-out items of each vector's behaviour) and capability (MMLU,
    TruthfulQA sample) per prompt, for the raw +v and every fix of each vector."""
    from steerlens.datasets.behaviours import behaviour_split
    from steerlens.datasets.loaders import load_capability
    from steerlens.methods.refusal import sample

    out = {"behaviour": {}, "capability": {}}
    by_vec: dict[str, dict] = {}
    for s in settings:
        by_vec.setdefault(s.vector, {})[s.name] = s.steering
    for name, steer in by_vec.items():
        sv = vectors.vectors[name]
        if not _has_behaviour(sv):
            continue
        items = behaviour_split(sv.meta.get("behaviour", name), "test")[: cfg.n_behaviour_test]
        _log(f"costs: behaviour effect kept, {name}")
        out["behaviour"][name] = _p_matching(model, items, steer, cfg.batch_size, cfg.system)
    allsteer = {n: s for v in by_vec.values() for n, s in v.items()}
    for cap in ("mmlu", "truthfulqa"):
        items = load_capability(cap)
        idx = sample(range(len(items)), mcfg["n_capability"], seed)
        _log(f"costs: {cap} accuracy, {len(allsteer)} settings")
        out["capability"][cap] = _p_matching(model, [items[i] for i in idx], allsteer,
                                             cfg.batch_size, cfg.system)
    return out


# -- the driver ----------------------------------------------------------------------------------

def _load_run(run: Path, model):
    from steerlens.audit.config import AuditConfig
    from steerlens.audit.stages import Refusal, load_vector_files, vector_stage
    from steerlens.methods.subspace import RefusalSubspace

    rstore = RunStore(run)
    cfg = AuditConfig.from_json(rstore.read_json("config.json")["config"])
    ref = Refusal.load(rstore.path("refusal_direction.safetensors"))
    sub = RefusalSubspace.load(rstore.path("refusal_subspace.safetensors"))
    vectors = vector_stage(rstore, model, cfg, ref, load_vector_files(cfg, model))
    return cfg, ref, sub, vectors, rstore.read_json("dose.json")["scale"]


def run_mitigate(run: Path, mcfg: MitigateConfig) -> dict:
    """Every step of the module docstring; returns the mitigation summary."""
    from steerlens.audit.config import AuditConfig, RunOptions
    from steerlens.audit.grid import _run_jobs, plan_jobs
    from steerlens.audit.stages import harm_stage, readout
    from steerlens.core.models import load_model
    from steerlens.results.mitigations import summarize_mitigations, write_mitigations

    run = Path(run)
    check(run, mcfg)
    saved = AuditConfig.from_json(RunStore(run).read_json("config.json")["config"])
    model = load_model(saved.model, device=saved.device, dtype=saved.dtype)
    torch.set_grad_enabled(False)
    store = RunStore(run / "mitigations")
    store.root.mkdir(exist_ok=True)
    store.cached_json("config.json", mcfg.to_json)
    store.cached_json("run.json", lambda: {"config_hash": RunStore(run).read_json("config.json")["hash"]})
    cfg, ref, sub, vectors, scale = _load_run(run, model)
    if mcfg.attacks:
        cfg = replace(cfg, attacks=tuple(a for a in cfg.attacks if a in mcfg.attacks))
    if mcfg.vectors:
        vectors = replace(vectors, vectors={k: v for k, v in vectors.vectors.items() if k in mcfg.vectors})
    fixes = mitigation_settings(store, model, cfg, ref, sub, vectors, scale)
    grid = _blocks(cfg, fixes, run)
    store.cached_json("settings.json", lambda: {s.name: s.meta() for b in grid for s in b.settings})
    store.cached_json("judge.json", lambda: RunStore(run).read_json("judge.json"))
    jobs = plan_jobs(store, cfg, grid, readout(model, ref, sub))
    if jobs:
        _run_jobs(store, model, cfg, RunOptions(), jobs)
    if (run / "judgements" / "harm.json").exists():
        harm_stage(store, model)
    if "gate" in mcfg.mitigations:
        store.cached_json("gate.json", lambda: gate_rates(model, cfg, _condition(store, model, cfg, ref)))
    store.cached_json("costs.json", lambda: costs(model, cfg, vectors, fixes, mcfg.to_json(), mcfg.seed))
    summary = summarize_mitigations(run)
    write_mitigations(run, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m steerlens.audit.mitigate",
                                description="What fixes a finished audit's vectors, at what cost.")
    p.add_argument("run", help="a finished audit run directory")
    d = MitigateConfig()
    p.add_argument("--mitigations", nargs="+", default=list(d.mitigations),
                   help=f"some of {', '.join(MITIGATIONS)} (default: all)")
    p.add_argument("--n-capability", type=int, default=d.n_capability,
                   help="MMLU and TruthfulQA items each (both answer orders)")
    p.add_argument("--n-calibration", type=int, default=d.n_calibration,
                   help="held-out harmful prompts that calibrate the compensation")
    p.add_argument("--learned-steps", type=int, default=d.learned_steps,
                   help="optimisation steps of the learned safety component")
    p.add_argument("--attacks", nargs="+", default=[],
                   help="only these of the run's attacks (default: all of them)")
    p.add_argument("--vectors", nargs="+", default=[],
                   help="only these of the run's vectors, e.g. those that lower refusal (default: all)")
    a = p.parse_args(argv)
    mcfg = MitigateConfig(tuple(a.mitigations), a.n_capability, a.n_calibration, a.learned_steps,
                          attacks=tuple(a.attacks), vectors=tuple(a.vectors))
    from steerlens.errors import cli_main
    from steerlens.results.mitigations import format_mitigations

    return cli_main(lambda: run_mitigate(Path(a.run), mcfg), format_mitigations)


if __name__ == "__main__":
    sys.exit(main())
