"""`python -m steerlens.audit.mitigate RUN`: what fixes a finished audit's vectors, and at what cost.

On a finished run, without touching its files or redoing its cells, into `RUN/mitigations/`:
1. the transforms (`audit.fixes`), each from the vector and the model's refusal geometry,
   calibrated only on data that is not JBB (`methods.mitigations`, `methods.learned`):
   `perp1`/`perpk` (orthogonalised at the steering layer; taken from the run when it has them),
   `compensate` (downstream compensation on held-out harmful prompts, `harmful_val`),
   `gate` (CAST: condition point chosen on the refusal train prompts; `condition.safetensors`),
   `learned` (a learned safety component removed; `learned/*.safetensors` with its curve),
   `clamp1`/`clampk` (+v with its refusal direction / subspace component held at an unsteered
   twin's at `--clamp-layers`, decoded beside the twin: no vector, twice the rows per step);
2. their cells on the run's JBB goals and attacks and on its benign goals (`cells/`, the same
   grid code and judge as the run), the harm judge's labels (`judgements/harm.json`), and how
   often the gate lets the steering through on harmful and benign goals (`gate.json`);
3. the costs (`costs.json`): the behaviour effect kept (p(matching) on the held-out items) and
   the capability side effects (accuracy on CAA's MMLU and TruthfulQA A/B sets), raw and per fix
   (a clamp's from one pass of [twins; rows]); the clamps' decode wall time against the plain
   +v's, each alone on `--n-timing` goals (`decode_seconds`); with a clamp, the generated-outcome
   mediation shares from its cells (`mediation_generated.json`, `audit.generated`);
4. `mitigations.json` / `mitigations.md`: per vector, fix, attack and outcome the verdicts
   (`results.mitigations`).
Resumable: every artefact is written once, atomically; a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from steerlens.audit.artefacts import Vectors
from steerlens.audit.config import AuditConfig
from steerlens.audit.deployed import is_deployed
from steerlens.audit.finished import AUDITED, FinishedRun, open_audited, run_config
from steerlens.audit.fixes import (
    CLAMPS,
    MITIGATIONS,
    MitigateConfig,
    clamp_layers,
    condition,
    has_behaviour,
    mitigation_settings,
)
from steerlens.audit.flags import add_flags, config_of
from steerlens.audit.generated import mitigation_generated, share_cells
from steerlens.audit.grid import Block, by_owner, plan_jobs, run_jobs
from steerlens.audit.held_out import held_out_items
from steerlens.audit.log import log as _log
from steerlens.audit.options import EPILOG, Spec, normalise_value
from steerlens.audit.settings import Kind, Setting
from steerlens.audit.stages import harm_stage, readout
from steerlens.core.generation import next_token_logits_grid
from steerlens.core.models import load_model
from steerlens.core.patching import twinned_next_token_logits
from steerlens.core.steering import Steering
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_capability, load_jbb, stratified
from steerlens.errors import ArgumentParser, SteerlensError, cli_main
from steerlens.methods.caa import answer_prompts, p_matching
from steerlens.methods.mitigations import Condition, gate_decisions
from steerlens.methods.refusal import sample
from steerlens.results.mitigations import format_mitigations, summarize_mitigations, write_mitigations
from steerlens.rundir import ReadOnlyStore, RunStore, open_run
from steerlens.schema import (
    CONFIG_FILE,
    COSTS_FILE,
    GATE_FILE,
    HARM_LABELS,
    JUDGE_FILE,
    MANIFEST_FILE,
    MEDIATION_DIR,
    MITIGATED_RUN_FILE,
    MITIGATIONS_DIR,
    REFUSAL_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    cell_name,
)


def check_config(mcfg: MitigateConfig) -> None:
    """Known mitigations and sane sizes (no run needed); each message names its option."""
    if not isinstance(mcfg, MitigateConfig):
        raise SteerlensError(f"mitigate takes a MitigateConfig; got {type(mcfg).__name__}",
                             fix="pass MitigateConfig(mitigations=(...), ...) or use steerlens.mitigate")
    bad = [m for m in mcfg.mitigations if m not in MITIGATIONS]
    if bad or not mcfg.mitigations:
        raise SteerlensError(f"--mitigations: {f'unknown mitigation(s) {bad}' if bad else 'none given'}",
                             fix=f"use some of: {', '.join(MITIGATIONS)}")
    sizes = {"--n-capability": mcfg.n_capability, "--n-calibration": mcfg.n_calibration,
             "--learned-steps": mcfg.learned_steps, "--learned-harmful": mcfg.learned_harmful,
             "--learned-items": mcfg.learned_items, "--learned-val-harmful": mcfg.learned_val_harmful,
             "--learned-val-items": mcfg.learned_val_items, "--learned-window": mcfg.learned_window}
    for flag, n in sizes.items():
        if n < 1:
            raise SteerlensError(f"{flag} {n}: mitigate sizes must be at least 1",
                                 fix="e.g. --n-capability 100")
    if not (mcfg.learned_tol >= 0 and mcfg.learned_keep > 0):
        raise SteerlensError(f"--learned-tol {mcfg.learned_tol} / --learned-keep {mcfg.learned_keep}: "
                             "the tolerance must be at least 0 and the bar above 0",
                             fix="e.g. --learned-tol 0.01 --learned-keep 0.9")
    if mcfg.n_timing < 0:
        raise SteerlensError(f"--n-timing {mcfg.n_timing}: a number of goals (0: no timing)",
                             fix="e.g. --n-timing 8")


def _check_clamp(store: ReadOnlyStore, mcfg: MitigateConfig) -> None:
    """--clamp-layers within the run's steering layer .. last layer (from its files)."""
    if not (set(CLAMPS) & set(mcfg.mitigations) and mcfg.clamp_layers):
        return
    ref = store.read_json(REFUSAL_FILE) if store.exists(REFUSAL_FILE) else {}
    if "steering_layer" in ref and store.exists(MANIFEST_FILE):
        clamp_layers(mcfg.clamp_layers, ref["steering_layer"], store.read_json(MANIFEST_FILE)["n_layers"])


def check_into(into: str) -> str:
    """`--into`: `mitigations` or `mitigations-NAME` (a letter, digit, '-', '_' or '.' each)."""
    import re

    if into != MITIGATIONS_DIR and not re.fullmatch(rf"{MITIGATIONS_DIR}-[A-Za-z0-9][A-Za-z0-9_.-]*", into):
        raise SteerlensError(f"--into {into!r}: a mitigation run lives in RUN/{MITIGATIONS_DIR} or "
                             f"RUN/{MITIGATIONS_DIR}-NAME", fix=f"e.g. --into {MITIGATIONS_DIR}-clamp")
    return into


def check(run: str | Path, mcfg: MitigateConfig, into: str = MITIGATIONS_DIR) -> ReadOnlyStore:
    """Fail before loading anything: a finished run, known mitigations, sane sizes, no other
    mitigation run in its directory; returns the run, opened read-only."""
    check_config(mcfg)
    check_into(into)
    store = open_run(normalise_value(Spec("run"), run))
    ran = run_config(store).attacks
    if set(mcfg.attacks) - set(ran):
        raise SteerlensError(f"--attacks {list(mcfg.attacks)}: the run audited {list(ran)}",
                             fix="name attacks the run has, or none for all of them")
    names = {f["vector"] for f in store.read_json(SUMMARY_FILE)["vectors"]}
    if set(mcfg.vectors) - names:
        raise SteerlensError(f"--vectors {list(mcfg.vectors)}: the run audited {sorted(names)}",
                             fix="name vectors the run has, or none for all of them")
    deployed = [n for n in (mcfg.vectors or names) if is_deployed(run_config(store), n)]
    if deployed:
        raise SteerlensError(f"{deployed} were audited as deployed (every layer, every "
                             "position); the fixes here act at one layer after the instruction",
                             fix="pass --vectors with the run's CAA vectors, or audit the file "
                                 "under --protocol caa and mitigate that run")
    _check_clamp(store, mcfg)
    mine = RunStore(store.root / into)
    if mine.exists(CONFIG_FILE) and mine.read_json(CONFIG_FILE) != json.loads(
            json.dumps(mcfg.to_json())):
        raise SteerlensError(f"{mine.root} holds a mitigation run with other settings",
                             fix=f"use the same settings, --into {MITIGATIONS_DIR}-NAME for a "
                                 "mitigation run of its own beside it, or delete that directory")
    return store


# -- cells, gate rates, costs --------------------------------------------------------------------

def missing_blocks(cfg: AuditConfig, settings: list[Setting], run: Path) -> list[Block]:
    """Per attack (and the benign goals) each vector's fixed settings whose cells the run does
    not hold already (the standard presets generate +v_perp1/+v_perpk on harmful goals only)."""
    def missing(attack: str) -> list[Setting]:
        return [s for s in settings if s.kind is not Kind.PLUS
                and not (run / cell_name(attack, s.name)).exists()]

    goals = stratified(load_jbb("harmful"), cfg.n_goals)
    out = [b for a in cfg.attacks for b in by_owner(a, goals, missing(a))]
    if cfg.n_benign:
        out += by_owner("benign", stratified(load_jbb("benign"), cfg.n_benign), missing("benign"))
    return [b for b in out if b.settings]


def _rate(decisions: list[bool]) -> dict:
    return {"steered": sum(decisions), "n": len(decisions), "rate": sum(decisions) / len(decisions)}


def gate_rates(model, cfg: AuditConfig, cond: Condition) -> dict:
    """Share of goals on which the gate lets the steering through, per attack and on benign."""
    harmful = stratified(load_jbb("harmful"), cfg.n_goals)
    out = {}
    for a in cfg.attacks:
        att = get_attack(a)
        texts = [att.render(g.goal, g.target) for g in harmful]
        out[a] = _rate(gate_decisions(model, texts, cond, cfg.system, cfg.batch_size))
    if cfg.n_benign:
        benign = [g.goal for g in stratified(load_jbb("benign"), cfg.n_benign)]
        out["benign"] = _rate(gate_decisions(model, benign, cond, cfg.system, cfg.batch_size))
    return out


def _p_matching(model, items, settings: dict, batch_size: int, system) -> dict[str, list[float]]:
    """Per prompt (both answer orders of each item) p(matching) under each setting; a clamp's
    from one pass of [twins; rows] (`twinned_next_token_logits`)."""
    ans = answer_prompts(model.tokenizer, items, system)
    plain = {k: s for k, s in settings.items() if not getattr(s, "twinned", False)}
    grid = next_token_logits_grid(model, ans.prompts, {"unsteered": Steering(), **plain}, batch_size)
    grid.update({k: twinned_next_token_logits(model, ans.prompts, s, batch_size)
                 for k, s in settings.items() if k not in plain})
    return {k: p_matching(grid[k].cpu(), ans).tolist() for k in ["unsteered", *settings]}


def decode_cost(model, cfg: AuditConfig, settings: list[Setting], n: int) -> dict:
    """Per vector with a clamp fix: wall seconds to decode `n` goals of the first attack under
    the plain +v and under each clamp, each alone, same goals and batch size (a clamp decodes
    each row beside its unsteered twin: twice the rows per step)."""
    from steerlens.audit.evaluate import attack_prompts, evaluate_job
    from steerlens.judges.registry import get_judge

    clamps = [s for s in settings if getattr(s.steering, "twinned", False)]
    if not clamps or n < 1:
        return {}
    goals = stratified(load_jbb("harmful"), cfg.n_goals)[:n]
    prompts = attack_prompts(model.tokenizer, get_attack(cfg.attacks[0]), goals, cfg.system)
    judge, out = get_judge(cfg.judge), {}
    for vec in dict.fromkeys(s.vector for s in clamps):
        rec = {"attack": cfg.attacks[0], "n_goals": len(goals), "rows_per_step": {}}
        for s in [x for x in settings if x.vector == vec and (x.kind is Kind.PLUS or x in clamps)]:
            t = time.perf_counter()
            evaluate_job(model, prompts, goals, [s], judge, cfg.max_new_tokens, cfg.batch_size, None)
            rec[s.kind.value] = round(time.perf_counter() - t, 3)
            rec["rows_per_step"][s.kind.value] = 2 if s in clamps else 1
        plus = rec.get(Kind.PLUS.value)
        rec["ratio_to_plus"] = {s.kind.value: rec[s.kind.value] / plus
                                for s in clamps if s.vector == vec and plus}
        out[vec] = rec
    return out


def costs(model, cfg: AuditConfig, vectors: Vectors, settings: list[Setting],
          mcfg: MitigateConfig) -> dict:
    """Behaviour effect (held-out items of each vector's behaviour) and capability (MMLU,
    TruthfulQA sample) per prompt, for the raw +v and every fix of each vector."""
    out = {"behaviour": {}, "capability": {}}
    by_vec: dict[str, dict] = {}
    for s in settings:
        by_vec.setdefault(s.vector, {})[s.name] = s.steering
    for name, steer in by_vec.items():
        sv = vectors.vectors[name]
        if not has_behaviour(sv):
            continue
        items = held_out_items(sv.meta.get("behaviour", name), cfg.n_behaviour_test)
        _log(f"costs: behaviour effect kept, {name}")
        out["behaviour"][name] = _p_matching(model, items, steer, cfg.batch_size, cfg.system)
    allsteer = {n: s for v in by_vec.values() for n, s in v.items()}
    for cap in ("mmlu", "truthfulqa"):
        items = load_capability(cap)
        idx = sample(range(len(items)), mcfg.n_capability, mcfg.seed)
        _log(f"costs: {cap} accuracy, {len(allsteer)} settings")
        out["capability"][cap] = _p_matching(model, [items[i] for i in idx], allsteer,
                                             cfg.batch_size, cfg.system)
    _log("costs: decode time of the clamps against the plain +v")
    out["decode_seconds"] = decode_cost(model, cfg, settings, mcfg.n_timing)
    return out


# -- the driver ----------------------------------------------------------------------------------

def _chosen(run: FinishedRun, mcfg: MitigateConfig) -> tuple[AuditConfig, Vectors]:
    """The run's config and vectors, less the attacks and vectors not asked for."""
    cfg = run.config
    if mcfg.attacks:
        cfg = replace(cfg, attacks=tuple(a for a in cfg.attacks if a in mcfg.attacks))
    return cfg, run.vectors.subset(mcfg.vectors)


def run_mitigate(run: str | Path, mcfg: MitigateConfig, into: str = MITIGATIONS_DIR,
                 model=None) -> dict:
    """Every step of the module docstring, into RUN/`into`; returns the mitigation summary
    (`model`: the audited model already loaded, as the audit's `--fixes` passes it)."""
    audited = check(run, mcfg, into)
    saved = run_config(audited)
    if model is None:
        model = load_model(saved.model, device=saved.device, dtype=saved.dtype)
    torch.set_grad_enabled(False)
    done = open_audited(audited.root, model, AUDITED)
    store = RunStore(audited.root / into)
    store.root.mkdir(exist_ok=True)
    store.cached_json(CONFIG_FILE, mcfg.to_json)
    store.cached_json(MITIGATED_RUN_FILE, lambda: {"config_hash": audited.read_json(CONFIG_FILE)["hash"]})
    cfg, vectors = _chosen(done, mcfg)
    fixes = mitigation_settings(store, model, cfg, mcfg, done.refusal, done.subspace, vectors,
                                done.scale)
    grid = missing_blocks(cfg, fixes, audited.root)
    store.cached_json(SETTINGS_FILE, lambda: {s.name: s.meta() for b in grid for s in b.settings})
    store.cached_json(JUDGE_FILE, lambda: audited.read_json(JUDGE_FILE))
    share_cells(audited.root / MEDIATION_DIR, store, [s for b in grid for s in b.settings],
                cfg.attacks, [g.goal for g in stratified(load_jbb("harmful"), cfg.n_goals)])
    jobs = plan_jobs(store, cfg, grid, readout(model, done.refusal, done.subspace))
    if jobs:
        run_jobs(store, model, cfg, jobs)
    if audited.exists(HARM_LABELS):
        harm_stage(store, model)
    mitigation_generated(audited.root, store, cfg, vectors, mcfg.mitigations,
                         clamp_layers(mcfg.clamp_layers, done.refusal.layer, model.cfg.n_layers),
                         k=done.subspace.evidence["k"])
    if "gate" in mcfg.mitigations:
        store.cached_json(GATE_FILE, lambda: gate_rates(model, cfg, condition(store, model, cfg,
                                                                              done.refusal)))
    store.cached_json(COSTS_FILE, lambda: costs(model, cfg, vectors, fixes, mcfg))
    summary = summarize_mitigations(audited.root, into)
    write_mitigations(audited.root, summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    """`steerlens mitigate RUN`: the flags generated from `MitigateConfig`."""
    p = ArgumentParser(prog="python -m steerlens.audit.mitigate", epilog=EPILOG,
                                description="What fixes a finished audit's vectors, at what cost.")
    p.add_argument("run", help="a finished audit run directory")
    p.add_argument("--into", default=MITIGATIONS_DIR, metavar="DIR",
                   help=f"where under RUN (default {MITIGATIONS_DIR}; {MITIGATIONS_DIR}-NAME: a "
                        "mitigation run with other settings beside the first, read by report, "
                        "findings and the stored-summary check alike)")
    add_flags(p, MitigateConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    into = vars(a).pop("into")
    return cli_main(lambda: run_mitigate(a.run, config_of(MitigateConfig, vars(a)), into),
                    format_mitigations)


if __name__ == "__main__":
    sys.exit(main())
