"""The evaluation grid: JBB goals x attacks x settings, generated, judged and screened.

Settings are planned in blocks by owner: the model itself (baseline, random-direction nulls),
the refusal validation, and each audited vector (+v, -v, +v⊥1, +v⊥k, its label-shuffled
nulls). A decode batch never mixes owners, so a cell's bytes do not depend on which vectors a
run audits (stacked rows share matmuls, and the batch's shape moves float rounding): the
model's own blocks are the same in every run on the model, and are reused (`audit.reuse`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from steerlens.audit.backends import Job, run_local, run_ray
from steerlens.audit.config import AuditConfig
from steerlens.audit.log import log as _log
from steerlens.audit.reuse import Reuse, data_digests, file_digest
from steerlens.audit.settings import Kind
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_jbb, stratified
from steerlens.judges.registry import get_judge
from steerlens.rundir import RunStore
from steerlens.schema import JUDGE_FILE, REFUSAL_TENSORS, SUBSPACE_TENSORS, cell_name

# Generated settings per grid job: each job shares one prompt cache and decodes its
# after-instruction settings together (`generation.generate_grid`).
JOB_SETTINGS = 8
MODEL_OWNERS = ("model", "validation")  # blocks that no audited vector touches
# `balance` (what vectors are balanced for) is not among them: no model-level block holds an
# audited vector; the one way vectors reach these cells, the dose scale under `--dose-unit
# paper` (the mean vector norm), is in the key itself (`scale`).
_HARMFUL_FIELDS = ("n_goals", "judge", "max_new_tokens", "system", "batch_size", "seed",
                   "n_null_screen", "n_null_generate", "doses", "dose_unit", "n_null_covariance",
                   "n_null_pairs")
_BENIGN_FIELDS = ("n_benign", "judge", "max_new_tokens", "system", "batch_size")
_VALIDATION_FIELDS = ("n_goals", "judge", "max_new_tokens", "system", "batch_size")


@dataclass(frozen=True)
class Block:
    """The settings of one owner under one attack: the unit of job planning and of reuse."""

    attack: str  # an attack name, or "benign" (JBB benign goals, no template)
    goals: list  # list[JBBGoal]
    owner: str  # "model", "validation", or an audited vector's name
    settings: list  # list[settings.Setting]

    def files(self) -> list[str]:
        return [cell_name(self.attack, s.name) for s in self.settings]


def by_owner(attack: str, goals: list, settings: list) -> list[Block]:
    """A block of the model's own settings, then one per vector, in the settings' order."""
    owners = dict.fromkeys(s.vector for s in settings if s.vector is not None)
    return ([Block(attack, goals, "model", [s for s in settings if s.vector is None])]
            + [Block(attack, goals, v, [s for s in settings if s.vector == v]) for v in owners])


def blocks(cfg: AuditConfig, settings: dict) -> list[Block]:
    """Every block of the grid: per attack the model's, the validation's (first attack only)
    and each vector's; then benign false refusals (baseline, +v, -v)."""
    goals = stratified(load_jbb("harmful"), cfg.n_goals)
    out = []
    for i, attack in enumerate(cfg.attacks):
        own = by_owner(attack, goals, settings["grid"])
        val = [Block(attack, goals, "validation", settings["validation"])] if i == 0 else []
        out += own[:1] + val + own[1:]
    if cfg.n_benign:
        keep = [s for s in settings["grid"] if s.kind in (Kind.BASELINE, Kind.PLUS, Kind.MINUS)]
        out += by_owner("benign", stratified(load_jbb("benign"), cfg.n_benign), keep)
    return [b for b in out if b.settings]


def _block_jobs(block: Block, kw: dict) -> list:
    """Chunks of `JOB_SETTINGS` generated settings; screen-only ones ride with the first; a
    clamp (decoded beside its twin, never stacked) is a job of its own, so its cell is
    written as soon as it exists."""
    twin = [s for s in block.settings if getattr(s.steering, "twinned", False)]
    gen = [s for s in block.settings if s.generate and s not in twin]
    screen = [s for s in block.settings if not s.generate and s not in twin]
    chunks = [gen[j: j + JOB_SETTINGS] + (screen if j == 0 else [])
              for j in range(0, max(len(gen), 1), JOB_SETTINGS)] + [[s] for s in twin]
    return [Job(block.attack, block.goals, c, **kw) for c in chunks if c]


def plan_jobs(store: RunStore, cfg: AuditConfig, grid: list[Block], readout) -> list:
    """Jobs for the cells not on disk yet. Chunks are cut from whole blocks, then a chunk with
    every cell on disk is skipped: a resumed run decodes the same settings together as an
    uninterrupted one, so resumed cells are byte-identical."""
    kw = dict(judge=cfg.judge, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
              system=cfg.system, readout=readout)
    jobs = [j for b in grid for j in _block_jobs(b, kw)]
    return [j for j in jobs if not all(store.exists(cell_name(j.attack, s.name))
                                       for s in j.settings)]


def block_inputs(cfg: AuditConfig, store: RunStore, block: Block, scale: float,
                 backend: str = "local") -> dict:
    """Everything a model-level block's cells depend on beyond the environment: the config
    fields the grid reads, the settings, the attack's rendered template, the dose scale (random
    nulls only), the judge (judge.json), the refusal direction and subspace (their files'
    sha256: they fix the readout and the validation), the goals' data file, the backend."""
    from dataclasses import asdict

    benign = block.attack == "benign"
    fields = (_BENIGN_FIELDS if benign else
              _VALIDATION_FIELDS if block.owner == "validation" else _HARMFUL_FIELDS)
    goals = "jbb_behaviors/" + ("benign" if benign else "harmful") + "-behaviors.csv"
    return {"attack": asdict(get_attack("none" if benign else block.attack)),
            "block": [block.attack, block.owner],
            "config": {f: getattr(cfg, f) for f in fields},
            "settings": {s.name: s.meta() for s in block.settings},
            "scale": scale if block.owner == "model" and not benign else None,
            "judge": store.read_json(JUDGE_FILE) if store.exists(JUDGE_FILE) else cfg.judge,
            "data": data_digests(goals),
            "refusal": file_digest(store.path(REFUSAL_TENSORS)),
            "subspace": file_digest(store.path(SUBSPACE_TENSORS)),
            "job_settings": JOB_SETTINGS, "backend": backend}


def reusable_judge(judge_settings: dict) -> bool:
    """Cells are reused only under judges with no model of their own (string judges): an LLM
    judge's labels rest on weights its settings do not pin."""
    return not judge_settings.get("model")


class GridProgress:
    """The grid's progress bar: cells done of total, new tokens per second, ETA (stderr)."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.t0, self.tokens = time.time(), 0
        self.bar = tqdm(total=total, unit="cell", desc="grid", dynamic_ncols=True)

    def update(self, results: dict[str, dict]) -> None:
        self.tokens += sum(sum(r.get("n_new_tokens", [])) for r in results.values())
        rate = self.tokens / max(time.time() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{rate:.1f} new tok/s", refresh=False)
        self.bar.update(len(results))

    def close(self) -> None:
        self.bar.close()


def run_jobs(store: RunStore, model, cfg: AuditConfig, jobs: list, backend: str = "local",
             address: str | None = None, workers: int | None = None) -> None:
    """Run the jobs here or on Ray (`address`, `workers`); each cell is written as soon as its
    job returns."""
    _log(f"evaluation grid: {len(jobs)} jobs on the {backend} backend")
    runner = (run_ray(jobs, cfg.model, cfg.device, cfg.dtype, address, workers)
              if backend == "ray" else run_local(model, jobs))
    progress = GridProgress(sum(len(j.settings) for j in jobs))
    for job, results in runner:
        for name, rec in results.items():
            store.write_json(cell_name(job.attack, name),
                             {"attack": job.attack, "setting": name,
                              "goals": [g.goal for g in job.goals],
                              "categories": [g.category for g in job.goals], **rec})
        progress.update(results)
    progress.close()


def grid_stage(store: RunStore, model, cfg: AuditConfig, opts, settings: dict, readout,
               reuse: Reuse | None = None, scale: float = 0.0) -> None:
    """Every cell of the grid; the model-level blocks come from the reuse store when it holds
    them, and are published to it once computed."""
    judge = store.cached_json(JUDGE_FILE, lambda: get_judge(cfg.judge).settings())
    grid = blocks(cfg, settings)
    shared = []
    if reuse is not None and reusable_judge(judge):
        for b in (b for b in grid if b.owner in MODEL_OWNERS):
            inputs = block_inputs(cfg, store, b, scale, opts.backend)
            key = reuse.key("cells", inputs)
            reuse.provide(store, f"cells:{b.attack}:{b.owner}", key, b.files())
            shared.append((b, key, inputs))
    jobs = plan_jobs(store, cfg, grid, readout)
    if jobs:
        run_jobs(store, model, cfg, jobs, opts.backend, opts.address, opts.workers)
    for b, key, inputs in shared:
        reuse.publish(store, key, b.files(), inputs)
