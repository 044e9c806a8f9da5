"""`steerlens export`: a run's fixed vector, loaded and applied by the real libraries, gives the
logits the run's fixed setting gives through steerlens' own steering (1e-5 on the tiny model).

The reference is the setting exactly as the run built it (`build_settings`, and
`mitigate.mitigation_settings` for compensate and learned), at the positions the library uses:
the run steers from the end of the user's message on, every library's default adds at every
position, so the run's additions are compared with `positions="all"`. Libraries: repeng 0.4.0
(`ControlVector.import_gguf` + `ControlModel.set_control(v, 1.0)`), steering-vectors 0.12.2
(`SteeringVector(..., "decoder_block").apply`); IBM activation-steering is not on PyPI: its
`.svec` is read as its `SteeringVector.load` reads it (json) and added as its LeashLayer adds
(`hidden_states[0] += strength * direction` on the layer's input, strength 1, no
normalisation: `MalleableModel.steer`'s defaults).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from steerlens.core.steering import Steering
from steerlens.errors import SteerlensError

FIXES = {"raw": "+v", "perp1": "+v_perp1", "perpk": "+v_perpk", "compensate": "+v_comp",
         "learned": "+v_learned"}
TEXT = "Tell me about the weather today."


@pytest.fixture(scope="module")
def fixed_run(finished_run, tiny_model, tmp_path_factory):
    """The finished tiny run with the compensation and learned fixes of `sycophancy` computed
    by `audit.mitigate`'s own code (no grid), and every fixed setting of it as the run builds it."""
    from steerlens.audit.finished import open_audited
    from steerlens.audit.fixes import MitigateConfig, mitigation_settings
    from steerlens.rundir import RunStore
    from steerlens.schema import MITIGATIONS_DIR

    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(finished_run, run)
    mcfg = MitigateConfig(("perp1", "perpk", "compensate", "learned"), n_calibration=4,
                          learned_steps=2, learned_harmful=4, learned_val_harmful=4,
                          learned_items=2, learned_val_items=2)
    fr = open_audited(run, tiny_model)
    ref, vectors = fr.refusal, replace(fr.vectors, vectors={"sycophancy": fr.vectors.vectors["sycophancy"]})
    settings = {s.name: s.steering for s in mitigation_settings(
        RunStore(run / MITIGATIONS_DIR), tiny_model, fr.config, mcfg, ref, fr.subspace, vectors, fr.scale)}
    assert ref.layer >= 1  # a block's output exists before it (GGUF, steering-vectors)
    return run, settings


def _everywhere(s: Steering) -> Steering:
    """The run's additions at every position (where a library adds them)."""
    return Steering(tuple(replace(i, positions="all") for i in s.interventions))


def _hf(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": TEXT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    return hf, ids


def _close(a, b):
    assert a.shape == b.shape
    err = float((a - b).abs().max())
    assert err <= 1e-5 * max(1.0, float(b.abs().max())), err


def _reference(tiny_model, settings, fix, ids):
    with torch.no_grad(), _everywhere(settings[f"sycophancy@2{FIXES[fix]}"]).apply(tiny_model):
        return tiny_model(ids).float()


def _repeng_logits(hf, path, ids):
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_ (gone in NumPy 2)
        np.float_ = np.float64
    repeng = pytest.importorskip("repeng")
    vec = repeng.ControlVector.import_gguf(str(path))
    cm = repeng.ControlModel(hf, list(vec.directions))
    cm.set_control(vec, 1.0)
    with torch.no_grad():
        out = cm(ids).logits
    cm.unwrap()
    return out


def _steering_vectors_logits(hf, path, ids):
    sv_lib = pytest.importorskip("steering_vectors")
    from safetensors.torch import load_file

    vec = sv_lib.SteeringVector({int(k): v for k, v in load_file(str(path)).items()}, "decoder_block")
    with torch.no_grad(), vec.apply(hf, multiplier=1.0):
        return hf(ids).logits


def _svec_logits(hf, path, ids):
    data = json.loads(path.read_text())  # activation_steering.SteeringVector.load
    dirs = {int(k): torch.tensor(v, dtype=torch.float32) for k, v in data["directions"].items()}
    strength = 1.0

    def pre(module, args, kwargs, vec):  # LeashLayer: hidden_states[0] += vec, the layer's input
        x = (args[0] if args else kwargs["hidden_states"]).clone()
        x[0] = x[0] + vec
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    handles = [hf.model.layers[lay].register_forward_pre_hook(
        lambda m, a, k, v=strength * vec: pre(m, a, k, v), with_kwargs=True)
        for lay, vec in dirs.items()]
    with torch.no_grad():
        out = hf(ids).logits
    for h in handles:
        h.remove()
    return out


LIBRARIES = {"gguf": _repeng_logits, "steering-vectors": _steering_vectors_logits,
             "svec": _svec_logits}


@pytest.mark.parametrize("fmt", list(LIBRARIES))
def test_exported_fix_applied_by_its_library_equals_the_runs_setting(fixed_run, tiny_model,
                                                                      tiny_model_dir, tmp_path, fmt):
    from steerlens.audit.export import export

    run, settings = fixed_run
    hf, ids = _hf(tiny_model_dir)
    with torch.no_grad():
        plain = hf(ids).logits
    for fix in FIXES:
        out = tmp_path / f"{fix}.{fmt}"
        rec = export(run, "sycophancy", fix, fmt, out)
        got = LIBRARIES[fmt](hf, out, ids)
        assert float((got - plain).abs().max()) > 1e-3, fix  # the file does steer
        _close(_reference(tiny_model, settings, fix, ids), got)
        assert rec["setting"] == f"sycophancy@2{FIXES[fix]}"


def test_compensation_exports_every_layer_it_adds_at(fixed_run, tmp_path):
    from steerlens.audit.export import export
    from steerlens.core.vectors import SteeringVector

    run, settings = fixed_run
    adds = settings["sycophancy@2+v_comp"].interventions
    rec = export(run, "sycophancy", "compensate", "gguf", tmp_path / "c.gguf")
    assert rec["layers_resid_pre"] == sorted(a.layer for a in adds) and len(adds) > 1
    back = SteeringVector.load(tmp_path / "c.gguf").as_resid_pre()
    assert back.layers == rec["layers_resid_pre"]


def test_units_dose_times_scale_baked_in_and_provenance(fixed_run, tmp_path):
    """Coefficient 1 adds the run's vector: its norm is dose x the run's dose scale."""
    from steerlens.audit.export import export
    from steerlens.core.vector_files import read_provenance
    from steerlens.core.vectors import SteeringVector
    from steerlens.rundir import read_json

    run, _ = fixed_run
    scale = read_json(run / "dose.json")["scale"]
    for fmt, name in (("gguf", "v.gguf"), ("steering-vectors", "v.safetensors"), ("svec", "v.svec")):
        rec = export(run, "sycophancy", "raw", fmt, tmp_path / name)
        back = SteeringVector.load(tmp_path / name).as_resid_pre()
        assert back.layers == rec["layers_resid_pre"] and "site_assumed" not in back.meta
        assert float(back.vectors[0].norm()) == pytest.approx(2 * scale, rel=1e-5)
        prov = read_provenance(tmp_path / name)
        assert prov["config_hash"] == read_json(run / "config.json")["hash"]
        assert prov["fix"] == "raw" and prov["operation"] == "add" and prov["coefficient"] == 1.0
        assert prov["hooks"] == [f"blocks.{rec['layers_resid_pre'][0]}.hook_resid_pre"]
        assert prov["verdict"]["source"] == "summary.json"


def test_gate_and_unknown_fixes_are_refused_with_what_to_do(fixed_run, tmp_path, capsys):
    from steerlens.audit.export import export
    from steerlens.cli import main

    run, _ = fixed_run
    with pytest.raises(SteerlensError, match="not a vector") as e:
        export(run, "sycophancy", "gate", "gguf", tmp_path / "g.gguf")
    assert "activation-steering" in e.value.fix
    with pytest.raises(SteerlensError, match="unknown fix"):
        export(run, "sycophancy", "magic", "gguf", tmp_path / "g.gguf")
    with pytest.raises(SteerlensError, match="audited no vector"):
        export(run, "honesty", "raw", "gguf", tmp_path / "g.gguf")
    assert not (tmp_path / "g.gguf").exists()
    assert main(["export", str(run), "--vector", "sycophancy", "--fix", "gate", "--format",
                 "svec", "--out", str(tmp_path / "g.svec")]) == 2
    assert "cannot be exported" in capsys.readouterr().err
    assert main(["export", str(run), "--vector", "sycophancy", "--fix", "perp1", "--format",
                 "svec", "--out", str(tmp_path / "p.svec")]) == 0
    assert "sycophancy@2+v_perp1" in capsys.readouterr().out


def test_a_fix_comes_from_the_named_mitigation_run(fixed_run, tmp_path):
    """--mitigations DIR (a `mitigate --into` run): the learned direction and the verdict are
    that run's, not RUN/mitigations'; a missing or badly named one is refused with the fix."""
    from safetensors.torch import load_file, save_file

    from steerlens.audit.export import export
    from steerlens.core.vectors import SteeringVector

    run, _ = fixed_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    src = copy / "mitigations" / "learned" / "sycophancy@2.safetensors"
    other = copy / "mitigations-other" / "learned"
    other.mkdir(parents=True)
    t = load_file(src)
    u = torch.zeros_like(t["direction"])
    u[0] = 1.0  # another learned direction: e_0
    save_file({**t, "direction": u}, other / src.name)
    export(copy, "sycophancy", "learned", "gguf", tmp_path / "a.gguf")
    b = export(copy, "sycophancy", "learned", "gguf", tmp_path / "b.gguf", mitigations="mitigations-other")
    va = SteeringVector.load(tmp_path / "a.gguf").as_resid_pre().vectors[0]
    vb = SteeringVector.load(tmp_path / "b.gguf").as_resid_pre().vectors[0]
    assert abs(float(vb[0])) < 1e-6 and not torch.allclose(va, vb)
    assert b["verdict"] is None  # that mitigation run has no mitigations.json
    with pytest.raises(SteerlensError, match="--into"):
        export(copy, "sycophancy", "compensate", "gguf", tmp_path / "c.gguf", mitigations="mitigations-other")
    with pytest.raises(SteerlensError, match="mitigations-NAME"):
        export(copy, "sycophancy", "learned", "gguf", tmp_path / "d.gguf", mitigations="../x")
    with pytest.raises(SteerlensError, match="no such mitigation run"):
        export(copy, "sycophancy", "perp1", "gguf", tmp_path / "e.gguf", mitigations="mitigations-typo")
    assert b["mitigation_run"] == "mitigations-other"


@pytest.mark.parametrize(("fix", "instead"), [("clamp1", "perp1"), ("clampk", "perpk")])
def test_clamps_are_refused_as_not_static_before_reading_the_run(fix, instead, tmp_path, capsys):
    """A clamp needs the unsteered twin at run time: refused (before the run is read) with
    the static fix to deploy instead, or the clamp through steerlens."""
    from steerlens.audit.export import export
    from steerlens.cli import main

    with pytest.raises(SteerlensError, match="not a static vector") as e:
        export(tmp_path / "no-run", "sycophancy", fix, "gguf", tmp_path / "c.gguf")
    assert "unsteered twin" in str(e.value) and f"--fix {instead}" in e.value.fix
    assert "TwinClamp" in e.value.fix
    assert main(["export", str(tmp_path / "no-run"), "--vector", "sycophancy", "--fix", fix,
                 "--format", "svec", "--out", str(tmp_path / "c.svec")]) == 2
    assert "cannot be exported" in capsys.readouterr().err
    assert not (tmp_path / "c.gguf").exists() and not (tmp_path / "c.svec").exists()


def test_steering_vectors_min_token_index_gives_the_audits_positions(fixed_run, tiny_model,
                                                                     tiny_model_dir, tmp_path):
    """On one prompt's forward pass, `apply(min_token_index=len - n_tail)` adds the exported
    vector where the run did: from the end of the user's message on (cached decoding slices
    each call, so it would not steer the generated tokens)."""
    sv_lib = pytest.importorskip("steering_vectors")
    from safetensors.torch import load_file

    from steerlens.audit.export import export
    from steerlens.core.prompts import chat_prompts

    run, settings = fixed_run
    hf, _ = _hf(tiny_model_dir)
    prompts = chat_prompts(tiny_model.tokenizer, [TEXT])
    ids = torch.tensor([prompts.full(0)])
    export(run, "sycophancy", "perp1", "steering-vectors", tmp_path / "p.safetensors")
    vec = sv_lib.SteeringVector({int(k): v for k, v in load_file(str(tmp_path / "p.safetensors")).items()},
                                "decoder_block")
    with torch.no_grad(), vec.apply(hf, min_token_index=ids.shape[1] - prompts.n_tail):
        got = hf(ids).logits
    with torch.no_grad(), settings["sycophancy@2+v_perp1"].apply(tiny_model, tail=prompts.n_tail):
        ref = tiny_model(ids).float()
    _close(ref, got)
    assert float((ref - _reference(tiny_model, settings, "perp1", ids)).abs().max()) > 1e-4


def test_a_k1_perpk_export_carries_perp1s_measured_verdict():
    """On a k = 1 run ⊥k is ⊥1, tested once under ⊥1's name (`results.mitigations`): an exported
    ⊥k carries that verdict and says it was tested as ⊥1 (not "not measured")."""
    from steerlens.audit.export import load_geometry, measured_verdict

    g = load_geometry(Path(__file__).resolve().parents[2] / "results" / "findings-1.5b-resid-100")
    k, one = (measured_verdict(g, "corrigible-neutral-HHH", 0.15, f) for f in ("perpk", "perp1"))
    assert k is not None and k.pop("tested_as") == "perp1" and k == one
