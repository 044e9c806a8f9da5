"""experiments/polarity_decomposition.py on the tiny model: the three `--vector` files are +p, -p
and round 1's openness vector with p projected out, the audit reads them back as exactly those
directions at the steering layer, the seeded model-level cells are used as they are, and a second
run resumes without recomputing anything."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import audit_args

from steerlens.audit.artefacts import CAAVector, Refusal
from steerlens.core.vectors import SteeringVector

ROOT = Path(__file__).resolve().parents[2]
# the library preset shrunk to the session's finished tiny run (its model-level cells stand in
# for round 2's): no covariance or prompt-pair nulls, as that run has none
SMALL = ["--n-null-covariance", "0", "--n-null-pairs", "0", "--n-behaviour-test", "4", "--attacks",
         "none", "--n-benign", "0"]
CARRIER = ["--behaviour", "sycophancy"]


def _script():
    spec = importlib.util.spec_from_file_location(
        "polarity_decomposition", ROOT / "experiments" / "polarity_decomposition.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _extra(tiny_model_dir) -> list[str]:
    """audit_args' small sizes without the flags the script sets itself."""
    own = {"--model", "--out", "--behaviours"}
    args, out, skip = audit_args(tiny_model_dir, "x", *SMALL), [], False
    for a in args:
        if a.startswith("--"):
            skip = a in own
        if not skip:
            out.append(a)
    return out


@pytest.fixture(scope="module")
def study(finished_run, tiny_model_dir, tmp_path_factory):
    """Round 2: a copy of the session's finished tiny run as its caa run; round 1: an openness
    vector with a planted polarity component; then the decomposition."""
    root = tmp_path_factory.mktemp("decomp")
    r2, r1 = root / "r2", root / "r1"
    shutil.copytree(finished_run, r2 / "caa")
    layer = json.loads((r2 / "caa" / "refusal.json").read_text())["steering_layer"]
    p = SteeringVector.load(r2 / "caa" / "polarity_direction.safetensors").at(layer)
    d = p.shape[0]
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(2, d, generator=g)
    rows[0] += 3 * p / p.norm() * rows[0].norm()  # a polarity component at the steering layer
    (r1 / "caa" / "vectors").mkdir(parents=True)
    CAAVector(SteeringVector(rows, [layer, layer + 1], "resid_pre", {"kind": "caa"}),
              torch.randn(1, d, generator=g)).save(r1 / "caa" / "vectors" / "openness.safetensors")
    mod = _script()
    assert mod.main([str(r2), "--round1", str(r1), *CARRIER, "--", *_extra(tiny_model_dir)]) == 0
    return {"r2": r2, "r1": r1, "p": p.double(), "openness": rows[0].double(), "mod": mod,
            "layer": layer}


def test_the_files_are_plus_minus_p_and_openness_without_p(study):
    inputs = study["r2"] / "decomposition_inputs"
    got = {n: SteeringVector.load(inputs / f"{n}.safetensors") for n in study["mod"].NAMES}
    for sv in got.values():
        assert sv.site == "resid_pre" and sv.layers == [study["layer"]] and "site_assumed" not in sv.meta
    p, v = study["p"], study["openness"]
    assert torch.equal(got["polarity_plus"].at(study["layer"]), p.float())
    assert torch.equal(got["polarity_minus"].at(study["layer"]), -p.float())
    perp = got["openness_letter_perp"].at(study["layer"]).double()
    assert torch.allclose(perp, v - (v @ p) / (p @ p) * p, atol=1e-5)
    assert abs(float(perp @ p / perp.norm() / p.norm())) < 1e-6
    assert abs(float(v @ p / v.norm() / p.norm())) > 0.5  # the planted component was there


def test_the_audit_reads_back_exactly_these_directions(study):
    """overlap.json: +p and -p have cosine ±1 with the run's polarity direction and the
    refusal cosine computed here from the refusal file; the openness remainder has none of p."""
    run = study["r2"] / "decomposition"
    overlap = json.loads((run / "overlap.json").read_text())
    assert overlap["file:polarity_plus"]["polarity_cos"] == pytest.approx(1, abs=1e-6)
    assert overlap["file:polarity_minus"]["polarity_cos"] == pytest.approx(-1, abs=1e-6)
    assert abs(overlap["file:openness_letter_perp"]["polarity_cos"]) < 1e-5
    r = Refusal.load(run / "refusal_direction.safetensors").direction.at(study["layer"]).double()
    p = study["p"]
    want = float(p @ r / p.norm() / r.norm())
    assert overlap["file:polarity_plus"]["cosine"] == pytest.approx(want, abs=1e-5)
    assert overlap["file:polarity_minus"]["cosine"] == pytest.approx(-want, abs=1e-5)
    summary = json.loads((run / "summary.json").read_text())
    plus = {f["vector"] for f in summary["vectors"]}
    assert {"file:polarity_plus", "file:polarity_minus", "file:openness_letter_perp"} <= plus


def test_seeded_model_level_cells_are_used_as_they_are(study):
    """The seeded cells are exactly the settings of round 2 that no vector owns, byte-identical
    after the run; the audit generated only the vectors' own cells."""
    caa, run = study["r2"] / "caa", study["r2"] / "decomposition"
    settings = json.loads((caa / "settings.json").read_text())
    owned_by_model = {p.name for p in (caa / "cells").glob("*.json")
                      if settings[p.stem.split("__", 1)[1]]["vector"] is None}
    assert {"none__baseline.json", "benign__baseline.json", "none__refusal_ablated.json"} <= owned_by_model
    assert set(study["mod"].model_cells(caa)) == owned_by_model
    for name in owned_by_model:
        assert (run / "cells" / name).read_bytes() == (caa / "cells" / name).read_bytes(), name
    for f in ("refusal_direction.safetensors", "polarity_direction.safetensors"):
        assert (run / f).read_bytes() == (caa / f).read_bytes()
    cells = {p.name for p in (run / "cells").glob("*.json")}
    assert "none__file:polarity_plus@2+v.json" in cells
    own = json.loads((run / "settings.json").read_text())
    assert all(own[c[:-5].split("__", 1)[1]]["vector"] for c in cells - owned_by_model)
    assert not any("shuffled" in c for c in cells)


def test_a_second_run_resumes_and_prints_its_command(study, tiny_model_dir, capsys):
    run = study["r2"] / "decomposition"
    before = {p.name: p.stat().st_mtime_ns for p in (run / "cells").glob("*.json")}
    extra = _extra(tiny_model_dir)
    assert study["mod"].main([str(study["r2"]), "--round1", str(study["r1"]), *CARRIER, "--", *extra]) == 0
    out = capsys.readouterr().out
    assert "seeded 0 model-level files" in out
    assert "python -m steerlens.audit --preset library" in out and "--resume" in out
    assert "--n-shuffled 0" in out and "decomposition_inputs/polarity_plus.safetensors" in out
    assert {p.name: p.stat().st_mtime_ns for p in (run / "cells").glob("*.json")} == before
