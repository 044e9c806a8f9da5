"""Vectors made in the libraries users train them in load into steerlens and steer the model
exactly as each library's own apply does: logits equal to 1e-5 on the tiny model.

The libraries are optional test extras (installed without their pins, which predate
transformers 5; `.ci/run` installs them): steering-vectors, repeng, dialz. IBM's
activation-steering is not on PyPI; its `.svec` file is written as its `SteeringVector.save`
writes it (JSON), and steered as its LeashLayer steers (added to the layer's input).
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from steerlens.core.vectors import SteeringVector

PAIRS = [("The answer is yes, gladly.", "The answer is no, never."),
         ("I will help you with that.", "I refuse to help with that."),
         ("Sure, here is how.", "Sorry, I cannot do that.")]
TEXT = "Tell me about the weather today."


def _hf(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return hf, AutoTokenizer.from_pretrained(tiny_model_dir)


def _ids(tok):
    return tok(TEXT, return_tensors="pt").input_ids


def _ours(model, sv: SteeringVector, ids, multiplier: float = 1.0):
    with torch.no_grad(), sv.apply(model, None, multiplier):
        return model(ids).float()


def _close(a, b):
    assert a.shape == b.shape
    err = float((a - b).abs().max())
    assert err <= 1e-5 * max(1.0, float(b.abs().max())), err


def test_bridge_equals_plain_hf(tiny_model, tiny_model_dir):
    hf, tok = _hf(tiny_model_dir)
    with torch.no_grad():
        _close(tiny_model(_ids(tok)).float(), hf(_ids(tok)).logits)


def test_steering_vectors_round_trip(tiny_model, tiny_model_dir, tmp_path):
    """`train_steering_vector` -> per-layer safetensors (the library's `layer_activations`)
    -> steerlens: read at decoder-layer outputs, steered there; logits equal its `apply`."""
    sv_lib = pytest.importorskip("steering_vectors")
    hf, tok = _hf(tiny_model_dir)
    vec = sv_lib.train_steering_vector(hf, tok, PAIRS, layers=[1, 2], show_progress=False)
    path = tmp_path / "sv.safetensors"
    save_file({str(k): v.float().contiguous() for k, v in vec.layer_activations.items()}, str(path))
    ours = SteeringVector.load(path)
    assert ours.site == "resid_post" and ours.layers == [1, 2] and "site_assumed" in ours.meta
    ids = _ids(tok)
    with torch.no_grad(), vec.apply(hf, multiplier=3.0):
        ref = hf(ids).logits
    with torch.no_grad():
        assert float((hf(ids).logits - ref).abs().max()) > 1e-3  # the vector does steer
    _close(_ours(tiny_model, ours, ids, 3.0), ref)
    _close(_ours(tiny_model, ours.as_resid_pre(), ids, 3.0), ref)  # the audit's numbering


def _repeng():
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_ (gone in NumPy 2)
        np.float_ = np.float64
    return pytest.importorskip("repeng")


def test_repeng_gguf_round_trip(tiny_model, tiny_model_dir, tmp_path):
    """`ControlVector.train` -> `export_gguf` -> steerlens; logits equal repeng's
    `ControlModel.set_control` (added to the output of block N)."""
    repeng = _repeng()
    from repeng.extract import DatasetEntry

    hf, tok = _hf(tiny_model_dir)
    data = [DatasetEntry(p, n) for p, n in PAIRS]
    vec = repeng.ControlVector.train(hf, tok, data, hidden_layers=[1, 2], batch_size=2)
    path = tmp_path / "cv.gguf"
    vec.export_gguf(str(path))
    ours = SteeringVector.load(path)
    assert ours.site == "resid_post" and ours.layers == [1, 2]
    assert ours.meta["format"] == "repeng/llama.cpp control vector"
    ids = _ids(tok)
    cm = repeng.ControlModel(hf, [1, 2])
    cm.set_control(vec, 2.0)
    with torch.no_grad():
        ref = cm(ids).logits
    cm.reset()
    with torch.no_grad():
        assert float((cm(ids).logits - ref).abs().max()) > 1e-3
    cm.unwrap()
    _close(_ours(tiny_model, ours, ids, 2.0), ref)


def test_dialz_gguf_round_trip(tiny_model, tiny_model_dir, tmp_path, monkeypatch):
    """dialz's `export_gguf` (architecture `steeringvector`) -> steerlens; logits equal
    dialz's `SteeringModel.set_control` (added to the output of block N). dialz loads its
    model in float16; here it loads float32, to compare at 1e-5."""
    dialz = pytest.importorskip("dialz")
    from transformers import AutoModelForCausalLM

    load = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(dialz.vector.AutoModelForCausalLM, "from_pretrained",
                        lambda name, **kw: load(name, **{**kw, "torch_dtype": torch.float32}))
    g = torch.Generator().manual_seed(0)
    d = tiny_model.cfg.d_model
    dirs = {lay: torch.randn(d, generator=g).numpy() for lay in (0, 2)}
    vec = dialz.SteeringVector(model_type="qwen2", directions=dirs)
    path = tmp_path / "dialz.gguf"
    vec.export_gguf(str(path))
    ours = SteeringVector.load(path)
    assert ours.meta["format"] == "dialz steering vector" and ours.meta["model_hint"] == "qwen2"
    sm = dialz.SteeringModel(tiny_model_dir, [0, 2])
    sm.model.eval()
    sm.set_control(vec, 1.5)
    _, tok = _hf(tiny_model_dir)
    ids = _ids(tok)
    with torch.no_grad():
        ref = sm.model(ids).logits
    _close(_ours(tiny_model, ours, ids, 1.5), ref)


def _leash_apply(hf, directions: dict[int, torch.Tensor], strength: float):
    """activation-steering's LeashLayer without a condition and without its norm-preserving
    rescale: `hidden_states[0] += strength * direction` on the layer's *input*."""
    def pre(module, args, kwargs, vec):
        x = args[0] if args else kwargs["hidden_states"]
        x = x.clone()
        x[0] = x[0] + vec
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    layers = hf.model.layers
    return [layers[lay].register_forward_pre_hook(
        lambda m, a, k, v=strength * vec: pre(m, a, k, v), with_kwargs=True)
        for lay, vec in directions.items()]


def test_ibm_svec_round_trip(tiny_model, tiny_model_dir, tmp_path):
    """A `.svec` as activation-steering saves it -> steerlens at resid_pre of N; logits equal
    the LeashLayer's addition to the input of layer N (one prompt, batch row 0)."""
    g = torch.Generator().manual_seed(1)
    d = tiny_model.cfg.d_model
    dirs = {1: torch.randn(d, generator=g), 3: torch.randn(d, generator=g)}
    path = tmp_path / "v.svec"
    path.write_text(json.dumps({"model_type": "qwen2",
                                "directions": {k: v.tolist() for k, v in dirs.items()},
                                "explained_variances": {k: 0.5 for k in dirs}}))
    ours = SteeringVector.load(path)
    assert ours.site == "resid_pre" and ours.layers == [1, 3]
    hf, tok = _hf(tiny_model_dir)
    ids = _ids(tok)
    handles = _leash_apply(hf, dirs, 2.0)
    with torch.no_grad():
        ref = hf(ids).logits
    for h in handles:
        h.remove()
    _close(_ours(tiny_model, ours, ids, 2.0), ref)


def test_written_files_record_site_hooks_and_operation(tmp_path):
    sv = SteeringVector(torch.ones(2, 4), [3, 5], "resid_post", {"kind": "caa"})
    sv.save(tmp_path / "v.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["steerlens"])
    assert meta["site"] == "resid_post" and meta["operation"] == "add"
    assert meta["hooks"] == ["blocks.3.hook_resid_post", "blocks.5.hook_resid_post"]
    back = SteeringVector.load(tmp_path / "v.safetensors")
    assert "site_assumed" not in back.meta and back.site == "resid_post"
    assert back.as_resid_pre().layers == [4, 6]


def test_ambiguous_files_say_so(tmp_path):
    save_file({"vectors": torch.ones(1, 4)}, str(tmp_path / "bare.safetensors"))
    assert "site_assumed" in SteeringVector.load(tmp_path / "bare.safetensors").meta
    assert "site_assumed" not in SteeringVector.load(tmp_path / "bare.safetensors",
                                                     site="resid_pre").meta


def test_audit_records_an_ambiguous_vector_file(tiny_model_dir, tmp_path, capsys):
    """A bare per-layer file (no site in it) is audited at steering-vectors' site, and the run
    says so: a warning on stderr and vectors/files.json."""
    from conftest import audit_args

    from steerlens.audit.run import main

    d = 64  # the tiny model's d_model
    save_file({"1": torch.randn(d), "2": torch.randn(d)}, str(tmp_path / "bare.safetensors"))
    args = audit_args(tiny_model_dir, tmp_path / "run", "--vector", str(tmp_path / "bare.safetensors"),
                      "--layer", "2", "--behaviours", "refusal", "--attacks", "none",
                      "--n-goals", "2", "--n-null-generate", "0", "--no-report")
    assert main(args) == 0
    assert "does not record where it is added" in capsys.readouterr().err
    rec = json.loads((tmp_path / "run" / "vectors" / "files.json").read_text())["file:bare"]
    assert rec["site_assumed"].startswith("resid_post") and rec["read_from"] == "resid_post"
    assert rec["site"] == "resid_pre" and rec["layers"] == [2, 3]
