"""`--protocol deployed`: a repeng GGUF control vector audited as repeng applies it (every layer
of the file, every position, the user's coefficients), against nulls matched to it; its cells
equal repeng's own `ControlModel.set_control` on the tiny model (logits to 1e-5)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

PAIRS = [("The answer is yes, gladly.", "The answer is no, never."),
         ("I will help you with that.", "I refuse to help with that."),
         ("Sure, here is how.", "Sorry, I cannot do that.")]


def _repeng():
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_ (gone in NumPy 2)
        np.float_ = np.float64
    return pytest.importorskip("repeng")


@pytest.fixture(scope="module")
def control_vector(tiny_model_dir, tmp_path_factory):
    """A repeng vector on blocks 1 and 3 (3 is the last: its output is resid_post, no block
    reads it as input), trained and exported by repeng."""
    repeng = _repeng()
    from repeng.extract import DatasetEntry
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    vec = repeng.ControlVector.train(hf, tok, [DatasetEntry(p, n) for p, n in PAIRS],
                                     hidden_layers=[1, 3], batch_size=2)
    path = tmp_path_factory.mktemp("cv") / "cv.gguf"
    vec.export_gguf(str(path))
    return vec, path, hf, tok


def _repeng_logits(hf, vec, coeff, ids):
    repeng = _repeng()
    cm = repeng.ControlModel(hf, list(vec.directions))
    cm.set_control(vec, coeff)
    with torch.no_grad():
        out = cm(ids).logits
    cm.unwrap()
    return out


def _settings(tiny_model, path, multipliers):
    from steerlens.audit.settings import deployed_settings
    from steerlens.core.vectors import SteeringVector

    sv = SteeringVector.load(path).as_resid_pre()
    cfg = SimpleNamespace(multipliers=multipliers, n_null_screen=2, n_null_generate=1, seed=0)
    return sv, {s.name: s for s in deployed_settings(cfg, tiny_model, "file:cv", sv)}


def test_deployed_cells_equal_repengs_control_model(tiny_model, control_vector):
    vec, path, hf, tok = control_vector
    ids = tok("Tell me about the weather today.", return_tensors="pt").input_ids
    sv, settings = _settings(tiny_model, path, (-1.5, 0.5, 2.0))
    assert sv.layers == [2, 4]  # resid_pre numbering; 4 = the last block's output
    for c in (-1.5, 0.5, 2.0):
        s = settings[f"file:cv@{c:g}+v"]
        assert s.meta()["protocol"] == "deployed" and s.dose == c and s.steering.touches_prompt
        ref = _repeng_logits(hf, vec, c, ids)
        with torch.no_grad(), s.steering.apply(tiny_model):
            got = tiny_model(ids).float()
        err = float((got - ref).abs().max())
        assert err <= 1e-5 * max(1.0, float(ref.abs().max())), err
    with torch.no_grad():
        assert float((hf(ids).logits - ref).abs().max()) > 1e-3  # the vector does steer


def test_matched_nulls_share_layers_sites_positions_and_norms(tiny_model, control_vector):
    from steerlens.audit.settings import Kind

    _, path, _, _ = control_vector
    sv, settings = _settings(tiny_model, path, (1.0,))
    plus = settings["file:cv@1+v"].steering.interventions
    nulls = [s for s in settings.values() if s.kind == Kind.RANDOM_MATCHED]
    assert len(nulls) == 3 and [s.generate for s in nulls] == [True, False, False]
    for s in nulls:
        adds = s.steering.interventions
        assert [(a.layer, a.site, a.positions, a.multiplier) for a in adds] == \
               [(a.layer, a.site, a.positions, a.multiplier) for a in plus]
        for a, b in zip(adds, plus):
            assert float(a.vector.norm()) == pytest.approx(float(b.vector.norm()), rel=1e-5)
            assert abs(float(torch.nn.functional.cosine_similarity(a.vector, b.vector, 0))) < 0.9


def test_deployed_audit_runs_every_layer_and_says_so(tiny_model_dir, control_vector, tmp_path):
    """An end-to-end run: the +v cell's first-step refusal score is repeng's, the vector is
    tested against its own matched nulls only, and the answer names the protocol."""
    from conftest import audit_args

    from steerlens.audit.run import main
    from steerlens.core.generation import refusal_log_odds
    from steerlens.core.prompts import chat_prompts
    from steerlens.datasets.loaders import load_jbb, stratified
    from steerlens.methods.refusal import refusal_token_ids

    vec, path, hf, tok = control_vector
    out = tmp_path / "run"
    args = audit_args(tiny_model_dir, out, "--vector", str(path), "--layer", "2", "--behaviours",
                      "refusal", "--attacks", "none", "--protocol", "deployed",
                      "--multipliers", "0.5", "2", "--no-report")
    assert main(args) == 0
    cell = json.loads((out / "cells" / "none__file:cv@2+v.json").read_text())
    assert cell["protocol"] == "deployed" and cell["dose"] == 2
    goals = stratified(load_jbb("harmful"), 4)
    prompts = chat_prompts(tok, [goals[0].goal])
    ids = torch.tensor([prompts.full(0)])
    want = refusal_log_odds(_repeng_logits(hf, vec, 2.0, ids)[:, -1], refusal_token_ids(tok))
    assert cell["refusal_score"][0] == pytest.approx(float(want[0]), abs=2e-5)
    s = json.loads((out / "summary.json").read_text())
    mine = [f for f in s["vectors"] if f["vector"] == "file:cv"]
    assert sorted(f["dose"] for f in mine) == [0.5, 2] and all(f["protocol"] == "deployed" for f in mine)
    assert all(f["n_null_screened"] == 6 for f in mine)  # its own 2 + 4 matched nulls only
    assert "AS DEPLOYED" in s["design"]["steered_positions"]
    caa = [f for f in s["vectors"] if f["vector"] == "refusal"]
    assert caa and all("protocol" not in f for f in caa)
    _fixes_of_deployed_vectors_are_refused(out)


def _fixes_of_deployed_vectors_are_refused(run):
    """mitigate and export act at one layer after the instruction: not for a deployed vector."""
    from steerlens.audit.export import export
    from steerlens.audit.fixes import MitigateConfig
    from steerlens.audit.mitigate import check
    from steerlens.errors import SteerlensError

    with pytest.raises(SteerlensError, match="audited as deployed"):
        check(run, MitigateConfig())
    check(run, MitigateConfig(vectors=("refusal",)))  # the run's CAA vector may be mitigated
    with pytest.raises(SteerlensError, match="audited as deployed"):
        export(run, "file:cv", "raw", "gguf", run / "x.gguf")


def test_deployed_config_flags_and_checks(tmp_path):
    """Old runs keep their hash; deployed drops the preset's behaviours unless named."""
    from steerlens.audit.config import AuditConfig, build_parser, config_from_args
    from steerlens.audit.validation import validate
    from steerlens.errors import SteerlensError

    f = tmp_path / "cv.gguf"
    f.write_bytes(b"")
    parse = lambda *a: config_from_args(build_parser().parse_args(list(a)))[0]  # noqa: E731
    assert "protocol" not in AuditConfig().to_json() and "multipliers" not in AuditConfig().to_json()
    cfg = parse("--vector", str(f), "--protocol", "deployed", "--multipliers", "0.5", "1")
    assert cfg.behaviours == () and cfg.multipliers == (0.5, 1.0) and cfg.to_json()["protocol"] == "deployed"
    named = parse("--vector", str(f), "--protocol", "deployed", "--behaviours", "refusal")
    assert named.behaviours == ("refusal",)
    assert parse("--vector", str(f)).behaviours  # the CAA protocol keeps the preset's
    with pytest.raises(SteerlensError, match="--vector files"):
        validate(parse("--protocol", "deployed", "--behaviours", "refusal"))
    with pytest.raises(SteerlensError, match="non-zero"):
        validate(parse("--vector", str(f), "--protocol", "deployed", "--multipliers", "0"))
