"""Generated-outcome mediation (`--mediation-generated`): for every audited vector's +v, the
share of its effect on each generated outcome (non-refusal, harmful compliance) that goes away
when its component along the refusal direction (or in the refusal subspace) is held at an
unsteered twin's, at every layer from the steering layer on, while it decodes:

    share = (Δ(+v) − Δ(+v clamped)) / Δ(+v),   Δ = per-goal label − the baseline cell's label,

with a paired percentile bootstrap over goals (`methods.mediation.mediated_share`; undefined
when Δ(+v)'s 95 % t-interval includes 0). The clamped cells are the clamp fixes' cells
(`audit.fixes.clamp`, named `vector@dose+v_clamp1` / `+v_clampk`): computed once, under
RUN/mediation/cells (harm labels under RUN/mediation/judgements/), and shared with
`audit.mitigate`, each copying the other's when their layers and goals are the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steerlens.audit.fixes import CLAMPS, clamp_layers, clamp_settings
from steerlens.audit.log import log as _log
from steerlens.rundir import RunStore, read_json
from steerlens.schema import (
    CONFIG_FILE,
    FIX_SUFFIX,
    MEDIATION_DIR,
    MEDIATION_GENERATED_FILE,
    OUTCOME_LABELS,
    cell_name,
)

BASES = {"clamp1": "direction", "clampk": "subspace"}
OUTCOMES = {"nonrefusal": "non-refusal (the refusal judge's label)",
            "harm": "harmful compliance (the harm judge's label)"}


def share_cells(src: Path, dst: RunStore, settings: list, attacks, goals: list[str]) -> int:
    """Copy into `dst` the clamp cells `src` holds for the same setting, layers and goals
    (the mitigation run's into the mediation's, or back); returns how many."""
    n = 0
    for a in attacks:
        for s in settings:
            name = cell_name(a, s.name)
            if dst.exists(name) or not (src / name).exists():
                continue
            c = read_json(src / name)
            if c.get("clamp_layers") == list(s.held_layers) and c.get("goals") == goals:
                dst.write_json(name, c)
                n += 1
    return n


def _labels(cells: dict, attack: str, name: str, label: str) -> np.ndarray | None:
    got = cells.get((attack, name), {}).get(label)
    return None if got is None else np.asarray(got, dtype=np.float64)


def vector_shares(cells: dict, attack: str, tag: str, seed: int = 0) -> dict:
    """One +v (`tag` = vector@dose) under one attack: per outcome and basis, the share."""
    from steerlens.methods.mediation import mediated_share

    out = {}
    for o, label in OUTCOME_LABELS.items():
        base, plus = _labels(cells, attack, "baseline", label), _labels(cells, attack, tag + "+v", label)
        if base is None or plus is None:
            continue
        per = {}
        for fix, basis in BASES.items():
            held = _labels(cells, attack, tag + FIX_SUFFIX[fix], label)
            if held is not None:
                per[basis] = mediated_share(plus - base, held - base, seed=seed)
        if per:
            out[o] = per
    return out


def generated_mediation(cells: dict, tags: list[str], attacks, layers: list[int],
                        seed: int = 0, k: int | None = None) -> dict:
    """The record of every +v (`tags`) under every attack (see the module docstring); with a
    one-row subspace (`k` = 1) no clampk cell is decoded and the record says the subspace's
    share is the direction's."""
    rec = {"outcomes": {o: OUTCOMES[o] for o in OUTCOME_LABELS},
            "definition": "(Δ(+v) − Δ(+v clamped)) / Δ(+v), Δ against the baseline cell per goal",
            "held_at": "an unsteered twin's component, the twin fed the steered row's tokens",
            "bases": {"direction": "clamp1: the refusal direction of each layer",
                      "subspace": "clampk: that direction and the subspace's other rows"},
            "clamp_layers": layers,
            "interval": "paired percentile bootstrap over goals (2000 resamples); share "
                        "undefined when Δ(+v)'s 95% t-interval includes 0",
            "attacks": {a: {t + "+v": vector_shares(cells, a, t, seed) for t in tags}
                        for a in attacks}}
    if k is not None:
        rec["subspace_k"] = k
        if k == 1:
            rec["bases"]["subspace"] = "the subspace has one row (k = 1): the direction's share"
    return rec


def run_cells(run: Path, *dirs: Path) -> dict:
    """The run's cells (harm labels merged) and those of `dirs` (mitigations, mediation)."""
    from steerlens.results.mitigations import load_run_data_cells
    from steerlens.results.summary import load_run_data

    cells = dict(load_run_data(run).cells)
    for d in dirs:
        if (d / "cells").exists():
            cells.update(load_run_data_cells(d)[0])  # (cells, the harm judge's settings)
    return cells


def generated_stage(store: RunStore, model, cfg, ref, sub, vectors, scale: float,
                    harm_judge: bool) -> dict:
    """RUN/mediation_generated.json: the clamped cells of every CAA vector's +v under every
    attack (taken from RUN/mitigations when it has them), judged like the grid's, and the
    shares (module docstring)."""
    from steerlens.audit.deployed import is_deployed
    from steerlens.audit.grid import by_owner, plan_jobs, run_jobs
    from steerlens.audit.stages import harm_stage, readout
    from steerlens.datasets.loaders import load_jbb, stratified

    caa = [n for n in vectors.vectors if not is_deployed(cfg, n)]
    layers = clamp_layers((), ref.layer, model.cfg.n_layers)
    settings = clamp_settings(model, cfg, ref, sub, vectors.subset(caa), scale, layers) if caa else []
    med = RunStore(store.root / MEDIATION_DIR)
    goals = stratified(load_jbb("harmful"), cfg.n_goals)
    from steerlens.results.mitigations import mitigation_dirs

    for d in mitigation_dirs(store.root):  # RUN/mitigations and every RUN/mitigations-NAME
        share_cells(store.root / d, med, settings, cfg.attacks, [g.goal for g in goals])
    grid = [b for a in cfg.attacks for b in by_owner(a, goals, settings) if b.settings]
    jobs = plan_jobs(med, cfg, grid, readout(model, ref, sub))
    _log(f"generated mediation: {len(settings)} clamped settings per attack, {len(jobs)} jobs "
         "(each row decoded beside its unsteered twin: 2x rows per step)")
    if jobs:
        run_jobs(med, model, cfg, jobs)
    if harm_judge and settings:
        harm_stage(med, model)
    tags = [f"{n}@{d:g}" for d in cfg.doses for n in caa]
    rec = generated_mediation(run_cells(store.root, med.root), tags, cfg.attacks, layers, cfg.seed,
                              k=sub.evidence["k"])
    store.write_json(MEDIATION_GENERATED_FILE, rec)
    return store.read_json(MEDIATION_GENERATED_FILE)


def mitigation_generated(run: Path, mitigations: RunStore, cfg, vectors, fixes: tuple[str, ...],
                         layers: list[int], k: int | None = None) -> dict | None:
    """`audit.mitigate`'s copy (RUN/mitigations/mediation_generated.json) from its clamp cells,
    when it ran both clamps or either (None: no clamp among the fixes); with `k` = 1 the
    record says the subspace's share is the direction's (no clampk cell is decoded)."""
    if not set(CLAMPS) & set(fixes):
        return None
    tags = [f"{n}@{d:g}" for d in cfg.doses for n in vectors.vectors]
    rec = generated_mediation(run_cells(run, run / MEDIATION_DIR, mitigations.root), tags,
                              cfg.attacks, layers, cfg.seed, k=k)
    mitigations.write_json(MEDIATION_GENERATED_FILE, rec)
    return rec


def record_paths(run: Path) -> list[Path]:
    """RUN's generated-mediation records: the run's own and each mitigation run's."""
    from steerlens.results.mitigations import mitigation_dirs

    return [p for p in [run / MEDIATION_GENERATED_FILE,
                        *(run / d / MEDIATION_GENERATED_FILE for d in mitigation_dirs(run))]
            if p.exists()]


def recompute_record(run: Path, path: Path) -> dict:
    """The record at `path` computed again from the saved cells under the current rules (the
    same vectors, attacks, layers and seed; no model)."""
    rec = read_json(path)
    per = list(rec["attacks"].values())
    tags = [t.removesuffix("+v") for t in per[0]] if per else []
    dirs = [run / MEDIATION_DIR] + ([path.parent] if path.parent != run else [])
    seed = read_json(run / CONFIG_FILE)["config"]["seed"]
    return generated_mediation(run_cells(run, *dirs), tags, list(rec["attacks"]),
                               rec["clamp_layers"], seed, k=rec.get("subspace_k"))


def main(argv: list[str] | None = None) -> int:
    """`python -m steerlens.audit.generated RUN...`: rewrite each run's generated-mediation
    records from their cells under the current rules."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m steerlens.audit.generated", description=main.__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    for run in ap.parse_args(argv).runs:
        for p in record_paths(run):
            RunStore(p.parent).write_json(p.name, recompute_record(run, p))
            print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
