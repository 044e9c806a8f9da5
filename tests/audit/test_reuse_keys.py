"""Every config field a reused computation reads is in its reuse key.

The computation runs on the tiny model with a config that records each field read from it
(directly, through a property, or by `dataclasses.asdict`), so a field that a stage starts
reading is checked without anyone listing it. The refusal direction and the subspace read
only their own fields: each must change the key. The grid computes every block in one pass,
so for its model-level blocks each read field is changed in turn and the check is the one
reuse rests on: two blocks with the same key have the same jobs (goals, settings with their
steering tensors, judge, generation length, batch size, system prompt, readout).
Only the paths the tiny configuration takes are recorded (both subspace methods are run).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import fields, is_dataclass, replace
from enum import Enum
from pathlib import Path

import pytest
import torch

from steerlens.audit import grid, reuse, stages, vector_stages
from steerlens.audit.artefacts import Vectors
from steerlens.audit.config import AuditConfig, RunOptions
from steerlens.core.vectors import SteeringVector
from steerlens.rundir import RunStore

CFG = AuditConfig(model="tiny", behaviours=("refusal",), n_refusal_train=8, n_refusal_val=2,
                  refusal_layer_stride=2, filter_refusal_prompts=False, batch_size=4, n_goals=3,
                  n_benign=2, max_new_tokens=2, n_null_screen=3, n_null_generate=1, doses=(2.0,))
# Valid other values where "add one" or "negate" would not do; a field read without one fails.
OTHER = {"judge": "refusal_string_strict", "dose_unit": "paper", "refusal_positions": "all",
         "attacks": ("aim", "none"), "doses": (1.0,), "dose_sweep": (-1.0, 1.0),
         "screen_doses": (1.0,), "vector_settings": ("plus",), "system": "Be brief.",
         "methods": ("mean_difference", "pca_diff"), "behaviours": ("sycophancy",),
         "vectors": ("other.safetensors",), "model": "other", "device": "meta",
         "dtype": "bfloat16", "preset": "paper", "version": "0.0.0", "protocol": "deployed",
         "multipliers": (2.0,), "balance": "letter"}
UPSTREAM = ("refusal_direction.safetensors", "refusal_subspace.safetensors")


def recording(cfg: AuditConfig) -> tuple[AuditConfig, set[str]]:
    """A copy of `cfg` that adds the name of every field read from it to the returned set."""
    names, reads = {f.name for f in fields(cfg)}, set()

    class Recording(type(cfg)):
        def __getattribute__(self, name):
            if name in names:
                reads.add(name)
            return super().__getattribute__(name)

    rec = Recording(**{n: getattr(cfg, n) for n in names})
    reads.clear()
    return rec, reads


def other(cfg: AuditConfig, name: str):
    """Another valid value of a config field."""
    if name in OTHER:
        return OTHER[name]
    value, kind = getattr(cfg, name), {f.name: str(f.type) for f in fields(cfg)}[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None and "int" in kind:
        return 1
    raise AssertionError(f"the audit reads the config field {name!r}: give it a value in OTHER")


def _key(kind: str, inputs: dict) -> str:
    return reuse.Reuse(Path("/nonexistent"), {"e": 1}).key(kind, inputs)


def omitted(reads: set[str], key_of, cfg: AuditConfig = CFG) -> list[str]:
    """Fields read whose change leaves the key unchanged."""
    base = key_of(cfg)
    return sorted(f for f in reads if key_of(replace(cfg, **{f: other(cfg, f)})) == base)


def fingerprint(x) -> str:
    """sha256 of an object tree: dataclasses by field, tensors by dtype, shape and bytes."""
    def tree(x):
        if isinstance(x, torch.Tensor):
            b = x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            return [str(x.dtype), list(x.shape), hashlib.sha256(b).hexdigest()]
        if isinstance(x, Enum):
            return x.value
        if is_dataclass(x):
            return [type(x).__name__, {f.name: tree(getattr(x, f.name)) for f in fields(x)}]
        if isinstance(x, dict):
            return {str(k): tree(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [tree(v) for v in x]
        return x if isinstance(x, (str, int, float, bool, type(None))) else repr(x)

    return hashlib.sha256(json.dumps(tree(x), sort_keys=True).encode()).hexdigest()


# -- the refusal direction and the subspace --------------------------------------------------

@pytest.fixture(scope="module")
def upstream(tiny_model, tmp_path_factory):
    """The refusal and subspace stages run with recording configs (the subspace by both of its
    methods), and what the grid needs from them: a store with their files and one vector."""
    store = RunStore(tmp_path_factory.mktemp("keys"))
    rec, ref_reads = recording(CFG)
    ref = stages.refusal_stage(store, tiny_model, rec)
    sub_reads: set[str] = set()
    for n_category in (4, 0):  # the category method (StrongREJECT), then the cluster method
        for f in reuse.SUBSPACE_FILES:
            store.path(f).unlink(missing_ok=True)
        rec, reads = recording(replace(CFG, n_category=n_category))
        sub = stages.subspace_stage(store, tiny_model, rec, ref)
        sub_reads |= reads
    v = torch.randn(1, tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    vectors = Vectors({"v": SteeringVector(v, [ref.layer], meta={"kind": "caa"})},
                      {"v": v.clone()})
    return {"store": store, "ref": ref, "sub": sub, "vectors": vectors,
            "reads": {"refusal": ref_reads, "subspace": sub_reads}}


def _refusal_key(cfg):
    return _key("refusal", reuse.refusal_inputs(cfg))


def test_refusal_key_has_every_field_the_direction_reads(upstream):
    reads = upstream["reads"]["refusal"]
    assert {"n_refusal_train", "seed", "batch_size"} <= reads  # the recorder sees the stage
    assert omitted(reads, _refusal_key) == []


def test_subspace_key_has_every_field_the_subspace_reads(upstream):
    reads, store = upstream["reads"]["subspace"], upstream["store"]
    assert {"n_category", "k", "system"} <= reads
    assert omitted(reads, lambda c: _key("subspace", reuse.subspace_inputs(c, store))) == []


def test_a_refusal_key_without_a_field_it_reads_fails(upstream, monkeypatch):
    monkeypatch.setattr(reuse, "_REFUSAL_FIELDS",
                        tuple(f for f in reuse._REFUSAL_FIELDS if f != "seed"))
    assert omitted(upstream["reads"]["refusal"], _refusal_key) == ["seed"]


# -- the grid's model-level blocks -----------------------------------------------------------

def run_grid(cfg: AuditConfig, up: dict, model, root: Path, generate: bool) -> dict:
    """The grid stage as the audit runs it (dose scale, settings, grid), recording its blocks
    and jobs; `generate=False` plans the jobs without decoding them."""
    for f in UPSTREAM:
        shutil.copyfile(up["store"].path(f), root / f)
    store, got = RunStore(root), {"blocks": [], "jobs": []}
    run_jobs, blocks = grid.run_jobs, grid.blocks

    def record_jobs(store, model, cfg, jobs, *args):
        got["jobs"] += jobs
        if generate:
            run_jobs(store, model, cfg, jobs, *args)

    def record_blocks(cfg, settings):
        got["blocks"] += blocks(cfg, settings)
        return got["blocks"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grid, "run_jobs", record_jobs)
        mp.setattr(grid, "blocks", record_blocks)
        scale = vector_stages.dose_scale(cfg, up["ref"], up["vectors"])
        settings = stages.settings_stage(store, model, cfg, up["ref"], up["sub"], up["vectors"], scale)
        grid.grid_stage(store, model, cfg, RunOptions(), settings,
                        stages.readout(model, up["ref"], up["sub"]), None, scale)
    return {**got, "scale": scale, "store": store}


def block_keys(cfg: AuditConfig, run: dict) -> dict:
    """(attack, owner) -> (reuse key, fingerprint of its jobs) for each model-level block."""
    out = {}
    for b in (b for b in run["blocks"] if b.owner in grid.MODEL_OWNERS):
        names = {s.name for s in b.settings}
        jobs = [j for j in run["jobs"] if j.attack == b.attack and {s.name for s in j.settings} <= names]
        assert jobs, (b.attack, b.owner)
        out[(b.attack, b.owner)] = (_key("cells", grid.block_inputs(cfg, run["store"], b, run["scale"])),
                                    fingerprint(jobs))
    return out


@pytest.fixture(scope="module")
def grid_runs(upstream, tiny_model, tmp_path_factory):
    """The grid decoded once with a recording config, then planned once per field it read,
    with that field changed."""
    rec, reads = recording(CFG)
    runs = {None: run_grid(rec, upstream, tiny_model, tmp_path_factory.mktemp("grid"), True)}
    reads = set(reads)
    for f in sorted(reads):
        cfg = replace(CFG, **{f: other(CFG, f)})
        runs[f] = run_grid(cfg, upstream, tiny_model, tmp_path_factory.mktemp(f), False)
    return reads, runs


def key_collisions(runs: dict) -> list[tuple]:
    """Blocks whose key equals another block's while their jobs differ: (block, changed field)."""
    seen, bad = {}, []
    for field, run in runs.items():
        cfg = CFG if field is None else replace(CFG, **{field: other(CFG, field)})
        for block, (key, jobs) in block_keys(cfg, run).items():
            if seen.setdefault(key, jobs) != jobs:
                bad.append((block, field))
    return bad


def test_cell_keys_have_every_field_the_grid_reads(grid_runs):
    reads, runs = grid_runs
    assert {"n_goals", "n_benign", "judge", "max_new_tokens", "doses", "n_null_screen"} <= reads
    blocks = block_keys(CFG, runs[None])
    assert {("none", "model"), ("none", "validation"), ("benign", "model")} <= set(blocks)
    assert key_collisions(runs) == []


def test_a_cell_key_without_a_field_the_grid_reads_fails(grid_runs, monkeypatch):
    _, runs = grid_runs
    monkeypatch.setattr(grid, "_HARMFUL_FIELDS",
                        tuple(f for f in grid._HARMFUL_FIELDS if f != "max_new_tokens"))
    assert key_collisions(runs) == [(("none", "model"), "max_new_tokens")]
