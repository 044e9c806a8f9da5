"""Model-level reuse: a run that reuses is byte-identical to one that computes everything,
and every input that determines an artefact is in its key."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import audit_args

from steerlens.audit import grid, reuse
from steerlens.audit.config import AuditConfig
from steerlens.audit.run import main
from steerlens.rundir import RunStore

SMALL = ("--attacks", "none", "--n-goals", "3", "--n-benign", "2", "--no-report")
UNSTABLE = {"reuse.json", "timings.json"}  # what a run reused, and how long it took


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name not in UNSTABLE}


@pytest.fixture(scope="module")
def three_runs(tiny_model_dir, tmp_path_factory):
    """fresh: vector A with --no-reuse; other: vector B, filling an empty store; warm:
    vector A again, from the store."""
    root = tmp_path_factory.mktemp("reuse")
    mp = pytest.MonkeyPatch()
    mp.setenv("STEERLENS_REUSE_DIR", str(root / "store"))
    runs = {}
    for name, vec, extra in (("fresh", "sycophancy", ["--no-reuse"]), ("other", "refusal", []),
                             ("warm", "sycophancy", [])):
        runs[name] = root / name
        args = audit_args(tiny_model_dir, runs[name], *SMALL, "--behaviours", vec, *extra)
        assert main(args) == 0
    mp.undo()
    return runs


def test_reusing_run_is_byte_identical_to_fresh(three_runs):
    fresh, warm = _files(three_runs["fresh"]), _files(three_runs["warm"])
    assert fresh.keys() == warm.keys()
    assert [k for k in fresh if fresh[k] != warm[k]] == []


def test_reuse_record_says_what_was_reused(three_runs):
    warm = json.loads((three_runs["warm"] / "reuse.json").read_text())["artefacts"]
    other = json.loads((three_runs["other"] / "reuse.json").read_text())["artefacts"]
    fresh = json.loads((three_runs["fresh"] / "reuse.json").read_text())
    assert fresh["store"] is None
    shared = {"refusal", "subspace", "polarity", "cells:none:model", "cells:none:validation",
              "cells:benign:model"}
    assert shared <= set(warm) and all(warm[k]["reused"] for k in shared)
    assert not any(other[k]["reused"] for k in shared)  # the first run computed them
    assert all(warm[k]["key"] == other[k]["key"] for k in shared)


def test_model_cells_do_not_depend_on_the_audited_vector(three_runs):
    """The baseline and null cells of a run on vector B equal those of a run on vector A."""
    for name in ("none__baseline.json", "none__random0@2.json", "none__refusal_ablated.json"):
        a = (three_runs["fresh"] / "cells" / name).read_bytes()
        assert a == (three_runs["other"] / "cells" / name).read_bytes(), name


def test_no_reuse_writes_nothing_to_the_store(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLENS_REUSE_DIR", str(tmp_path / "store"))
    args = audit_args(tiny_model_dir, tmp_path / "run", *SMALL, "--behaviours", "refusal",
                      "--no-reuse", "--n-null-generate", "0")
    assert main(args) == 0
    assert not (tmp_path / "store").exists()


# -- every determining input is in the key ---------------------------------------------------

def _key(kind: str, inputs: dict, env: dict | None = None) -> str:
    return reuse.Reuse(Path("/nonexistent"), env or {"e": 1}).key(kind, inputs)


@pytest.mark.parametrize("field, other", [("system", "Be brief."), ("batch_size", 3)])
def test_polarity_key_has_each_config_field_and_its_data(field, other, monkeypatch):
    from steerlens.audit import polarity

    cfg = AuditConfig(behaviours=("refusal",))
    base = _key("polarity", polarity.polarity_inputs(cfg))
    assert base != _key("polarity", polarity.polarity_inputs(replace(cfg, **{field: other})))
    assert base == _key("polarity", polarity.polarity_inputs(replace(cfg, balance="letter")))
    monkeypatch.setattr(polarity, "POLARITY_DATA", "polarity/test.json")
    assert base != _key("polarity", polarity.polarity_inputs(cfg))


def _block_key(cfg, store, block, scale=1.0):
    return _key("cells", grid.block_inputs(cfg, store, block, scale))


@pytest.fixture
def block_setup(tmp_path):
    from steerlens.audit.settings import Kind, Setting

    for f in ("refusal_direction.safetensors", "refusal_subspace.safetensors"):
        (tmp_path / f).write_bytes(b"x")
    return RunStore(tmp_path), grid.Block("none", [], "model", [Setting("baseline", Kind.BASELINE)])


def test_cell_key_has_attack_scale_settings_and_upstream_files(block_setup):
    from steerlens.audit.settings import Kind, Setting

    store, block = block_setup
    cfg = AuditConfig(behaviours=("refusal",))
    base = _block_key(cfg, store, block)
    assert base != _block_key(cfg, store, replace(block, attack="refusal_suppression"))
    assert base != _block_key(cfg, store, block, scale=1.5)
    extra = [*block.settings, Setting("random0@0.15", Kind.RANDOM, dose=0.15)]
    assert base != _block_key(cfg, store, replace(block, settings=extra))
    for f in ("refusal_direction.safetensors", "refusal_subspace.safetensors"):
        (store.root / f).write_bytes(b"changed " + f.encode())
        assert _block_key(cfg, store, block) != base, f
        base = _block_key(cfg, store, block)


def test_data_files_are_in_the_keys(monkeypatch, tmp_path, block_setup):
    """Editing any data file an artefact reads changes its key."""
    import shutil

    from steerlens.datasets import loaders

    src, data = loaders.data_dir(), tmp_path / "data"
    for rel in ("refusal_direction/splits", "refusal_direction/raw", "jbb_behaviors"):
        shutil.copytree(src / rel, data / rel)
    monkeypatch.setattr(loaders, "data_dir", lambda: data)
    store, block = block_setup
    cfg = AuditConfig(behaviours=("refusal",), n_category=2)
    refusal = lambda: _key("refusal", reuse.refusal_inputs(cfg))  # noqa: E731
    keys = {
        "refusal_direction/splits/harmful_train.json": refusal,
        "refusal_direction/splits/harmless_val.json": refusal,
        "refusal_direction/raw/strongreject.csv":
            lambda: _key("subspace", reuse.subspace_inputs(cfg, store)),
        "jbb_behaviors/harmful-behaviors.csv": lambda: _block_key(cfg, store, block),
        "jbb_behaviors/benign-behaviors.csv":
            lambda: _block_key(cfg, store, replace(block, attack="benign")),
    }
    for rel, key in keys.items():
        before = key()
        with open(data / rel, "a") as f:
            f.write("\n")
        assert key() != before, rel


def test_environment_has_weights_tokenizer_versions_device_dtype(tiny_model_dir, monkeypatch):
    import torch

    from steerlens.core.models import load_model

    model = load_model(tiny_model_dir, device="cpu")
    env = reuse.environment(model, "cpu", "float32")
    assert {"steerlens", "source", "torch", "transformers", "transformer-lens", "device", "dtype",
            "weights", "tokenizer"} <= set(env)
    assert reuse.environment(model, "cpu", "bfloat16") != env
    assert reuse.environment(model, "cuda", "float32") != env
    model.steerlens_weights_sha256 = None
    with torch.no_grad():
        next(model.original_model.parameters()).view(-1)[0] += 1e-3
    assert reuse.weights_digest(model) != env["weights"]
    template = model.tokenizer.chat_template
    monkeypatch.setattr(model.tokenizer, "chat_template", template + " ")
    assert reuse.tokenizer_digest(model.tokenizer) != env["tokenizer"]
    monkeypatch.setattr(reuse, "source_digest", lambda: "other code")
    monkeypatch.setattr(reuse, "_versions", lambda: {"torch": "0.0"})
    env2 = reuse.environment(model, "cpu", "float32")
    assert env2["source"] != env["source"] and env2["torch"] != env["torch"]
    assert _key("refusal", {}, env) != _key("refusal", {}, {**env, "torch": "0.0"})


def test_harm_labels_are_reused_by_cell_content(finished_run, tmp_path, monkeypatch):
    """A second judging of the same cells reads every label from the store: same file, no
    judge call; a changed completion is judged again."""
    import shutil

    from steerlens.judges.rejudge import rejudge

    class Counting:
        name, calls = "counting", 0

        def judge(self, goals, comps):
            Counting.calls += 1
            return [len(c) % 2 == 0 for c in comps]

        def settings(self):
            return {"judge": "counting"}

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    store = reuse.Reuse(tmp_path / "store", {"e": 1})
    memo = reuse.HarmMemo(store, Counting().settings())
    first = rejudge(run, Counting(), "c", memo).read_bytes()
    n = Counting.calls
    cells = len(json.loads(first)["cells"])
    # identical cells (same goals and completions) are judged once even within one run
    assert n > 0 and memo.misses == n and memo.hits + memo.misses == cells
    memo2 = reuse.HarmMemo(store, Counting().settings())
    assert rejudge(run, Counting(), "c", memo2).read_bytes() == first
    assert Counting.calls == n and memo2.hits == cells
    cell = run / "cells" / "none__baseline.json"
    rec = json.loads(cell.read_text())
    rec["completions"][0] += " more"
    cell.write_text(json.dumps(rec))
    memo3 = reuse.HarmMemo(store, Counting().settings())
    rejudge(run, Counting(), "c", memo3)
    assert memo3.misses == 1 and Counting.calls == n + 1


def test_cell_key_has_backend_and_llm_judges_are_not_reused(block_setup):
    store, block = block_setup
    cfg = AuditConfig(behaviours=("refusal",))
    assert _key("cells", grid.block_inputs(cfg, store, block, 1.0, "local")) != _key(
        "cells", grid.block_inputs(cfg, store, block, 1.0, "ray"))
    assert grid.reusable_judge({"judge": "refusal_string"})
    assert not grid.reusable_judge({"judge": "jbb", "model": "meta-llama/Llama-3-70b"})


def test_only_files_this_session_computed_are_published(tmp_path):
    """A resumed run's files on disk (maybe from other code) are neither mixed with an entry
    nor published as one."""
    store, r = RunStore(tmp_path / "run"), reuse.Reuse(tmp_path / "store", {"e": 1})
    store.write_json("a.json", {"old": True})
    assert not r.provide(store, "a", "k" * 64, ["a.json", "b.json"])
    store.write_json("b.json", {"new": True})
    r.publish(store, "k" * 64, ["a.json", "b.json"], {})
    assert not (tmp_path / "store").exists()
    fresh, r2 = RunStore(tmp_path / "run2"), reuse.Reuse(tmp_path / "store", {"e": 1})
    r2.provide(fresh, "a", "k" * 64, ["a.json"])
    fresh.write_json("a.json", {"computed": True})
    r2.publish(fresh, "k" * 64, ["a.json"], {})
    third = RunStore(tmp_path / "run3")
    assert reuse.Reuse(tmp_path / "store", {"e": 1}).provide(third, "a", "k" * 64, ["a.json"])
    assert third.read_json("a.json") == {"computed": True}
    assert json.loads((third.root / "reuse.json").read_text())["artefacts"]["a"]["reused"]


def test_environment_names_the_model(tiny_model):
    env = reuse.environment(tiny_model, "cpu", "float32")
    assert env["model"] == tiny_model.steerlens_name and env["threads"] >= 1
    assert {"tokenizers", "safetensors", "scikit-learn", "numpy", "python", "model_config"} <= set(env)
