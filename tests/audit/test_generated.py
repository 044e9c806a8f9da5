"""Generated-outcome mediation (audit.generated) and the clamp fixes' cells it shares with
`mitigate`: a planted model in which the vector acts only through a known direction (share 1)
or bypasses it (share 0), then `--mediation-generated` and `mitigate` on a finished tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

J = 5  # the planted direction: residual coordinate J (conftest.planted_model)


def _vec(seed: int, norm: float) -> torch.Tensor:
    from conftest import seeded_vector

    return seeded_vector(seed, norm)


def _tokens(cell) -> list[list[int]]:
    return [c.tokens for c in cell.completions]


def test_planted_generated_share_is_one_through_the_only_path_and_zero_when_bypassed(
        tiny_model_dir):
    """Planted model: block 1 writes nothing, no later block writes e_J. Clamping e_J from the
    steering layer on gives, for a ∥ e_J, the unsteered completions (share 1), and for w ⊥ e_J
    +w's own completions (share 0), on an outcome read off the completions (differs from the
    baseline's completion), through `vector_shares` as the audit computes it."""
    from conftest import planted_model

    from steerlens.audit.generated import vector_shares
    from steerlens.core.generation import generate_grid
    from steerlens.core.patching import TwinClamp, twinned_cell
    from steerlens.core.prompts import chat_prompts
    from steerlens.core.steering import Steering, addition
    from steerlens.datasets.loaders import load_jbb

    model = planted_model(tiny_model_dir, J)
    prompts = chat_prompts(model.tokenizer, [b.goal for b in load_jbb("harmful")[:10]])
    u = torch.zeros(64)
    u[J] = 1.0
    w = _vec(11, 12.0)
    w[J] = 0.0
    base = _tokens(generate_grid(model, prompts, {"b": Steering()}, 6, 5, desc=None)["b"])
    cells = {("none", "baseline"): {"jailbroken": [False] * len(base)}}
    got = {}
    for name, v in (("a", -12 * u), ("w", w)):
        st = addition(v, 1)
        plus = _tokens(generate_grid(model, prompts, {"p": st}, 6, 5, desc=None)["p"])
        held = _tokens(twinned_cell(model, prompts, TwinClamp(st, [1, 2, 3], u[None, None].repeat(3, 1, 1)),
                                    6, 5))
        got[name] = (plus, held)
        cells[("none", f"{name}@1+v")] = {"jailbroken": [p != b for p, b in zip(plus, base)]}
        cells[("none", f"{name}@1+v_clamp1")] = {"jailbroken": [h != b for h, b in zip(held, base)]}
    assert got["a"][1] == base and got["a"][0] != base
    assert got["w"][1] == got["w"][0] and got["w"][0] != base
    a = vector_shares(cells, "none", "a@1")["nonrefusal"]["direction"]
    assert a["share"] == pytest.approx(1.0) and a["share_ci"][0] == pytest.approx(1.0)
    w_ = vector_shares(cells, "none", "w@1")["nonrefusal"]["direction"]
    assert w_["share"] == pytest.approx(0.0, abs=1e-12)
    assert "subspace" not in vector_shares(cells, "none", "a@1")["nonrefusal"]


def test_generated_mediation_in_the_audit_and_its_cells_shared_with_mitigate(
        tiny_model_dir, finished_run, tmp_path, capsys):
    """`--resume --mediation-generated`: the clamp cells of every +v under every attack in
    RUN/mediation/cells (layers from the steering layer on), mediation_generated.json, the
    answer's line per outcome; then `mitigate --mitigations clamp1 clampk` takes those cells
    as they are (same bytes), adds the benign ones (clampk, on this k = 1 run clamp1's hold, is
    not decoded again), and tables the clamp with its decode cost and the generated shares."""
    from conftest import audit_args

    from steerlens.audit.mitigate import main as mitigate
    from steerlens.audit.run import main

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(audit_args(tiny_model_dir, run, "--resume", "--mediation-generated",
                           "--no-report")) == 0
    answer = capsys.readouterr().out
    assert ("sycophancy@2+v under none: mediated through the refusal direction (generated "
            "non-refusal): ") in answer and "(subspace: " in answer
    gen = json.loads((run / "mediation_generated.json").read_text())
    assert set(gen["attacks"]) == {"none", "refusal_suppression"}
    assert set(gen["attacks"]["none"]) == {"sycophancy@2+v", "refusal@2+v"}
    assert gen["subspace_k"] == 1  # the tiny run's subspace: clampk would repeat clamp1
    assert set(gen["attacks"]["none"]["sycophancy@2+v"]["nonrefusal"]) == {"direction"}
    assert "(subspace: the same, k = 1)" in answer
    cells = run / "mediation" / "cells"
    clamp = json.loads((cells / "none__sycophancy@2+v_clamp1.json").read_text())
    assert clamp["kind"] == "+v_clamp1" and clamp["clamp_layers"] == gen["clamp_layers"] == [1, 2, 3]
    assert not (run / "cells" / "none__sycophancy@2+v_clamp1.json").exists()  # the grid is untouched

    assert mitigate([str(run), "--n-capability", "3", "--mitigations", "clamp1", "clampk",
                     "--vectors", "sycophancy", "--attacks", "none", "--n-timing", "2"]) == 0
    m = run / "mitigations"
    name = "none__sycophancy@2+v_clamp1.json"
    assert (m / "cells" / name).read_bytes() == (cells / name).read_bytes()
    assert not (cells / "none__sycophancy@2+v_clampk.json").exists()
    # k = 1: clampk beside clamp1 is the same hold, decoded once and tested once as clamp1's
    assert (m / "cells" / name).exists() and (m / "cells" / "benign__sycophancy@2+v_clamp1.json").exists()
    assert not list((m / "cells").glob("*_clampk.json"))
    s = json.loads((m / "mitigations.json").read_text())
    fixes = {f["fix"]: f for f in s["vectors"][0]["fixes"]}
    assert set(fixes) == {"clamp1"} and s["same_as"] == {"clampk": "clamp1"}
    assert fixes["clamp1"]["false_refusal"] is not None and "behaviour_kept" in fixes["clamp1"]
    dec = s["decode_seconds"]["sycophancy"]
    assert dec["n_goals"] == 2 and dec["rows_per_step"] == {"+v": 1, "+v_clamp1": 2}
    assert dec["+v_clamp1"] > 0 and set(dec["ratio_to_plus"]) == {"+v_clamp1"}
    beh = json.loads((m / "costs.json").read_text())["behaviour"]["sycophancy"]
    assert "sycophancy@2+v_clamp1" in beh and "sycophancy@2+v_clampk" not in beh
    assert s["mediation_generated"]["subspace_k"] == 1
    mine = s["mediation_generated"]["attacks"]["none"]["sycophancy@2+v"]
    assert {o: mine[o]["direction"] for o in mine} == \
        {o: v["direction"] for o, v in gen["attacks"]["none"]["sycophancy@2+v"].items()}
    text = (m / "mitigations.md").read_text()
    assert "Decode cost of the clamps" in text and "2x rows per step" in text
    assert "mediated through the refusal direction (generated non-refusal)" in text


def test_clamp_layers_outside_the_mediating_layers_are_refused(finished_run, capsys):
    from steerlens.audit.mitigate import main as mitigate

    assert mitigate([str(finished_run), "--mitigations", "clamp1", "--clamp-layers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--clamp-layers [0]" in err and "steering layer 1" in err


def test_answer_lines_of_the_generated_shares():
    """One line per +v, attack and generated outcome, naming the outcome; undefined shares
    say why; no generated record, no lines."""
    from steerlens.results.text import generated_lines, mediation_lines

    ok = {"share": 0.42, "share_ci": [0.3, 0.55]}
    und = {"share": None, "share_ci": [None, None], "undefined": "undefined: ..."}
    gen = {"clamp_layers": [14, 15, 23], "attacks": {"none": {"v@0.15+v": {
        "nonrefusal": {"direction": ok, "subspace": und}, "harm": {"direction": und}}}}}
    lines = mediation_lines({"mediation": {"generated": gen}})
    assert lines[0].startswith("mediation of the generated outcomes") and "layers 14-23" in lines[0]
    assert lines[1] == ("  v@0.15+v under none: mediated through the refusal direction (generated "
                        "non-refusal): 42% [30, 55] (subspace: undefined (effect's interval "
                        "includes 0))")
    assert lines[2] == ("  v@0.15+v under none: mediated through the refusal direction (generated "
                        "harmful compliance): undefined (effect's interval includes 0)")
    assert generated_lines({}) == [] and mediation_lines({"mediation": {}}) == []
    from steerlens.results.text import share_text  # a stored NaN interval reads back as null

    assert share_text({"share": 1.0, "share_ci": [None, None]}).startswith("100% (no interval")


def test_a_one_row_subspace_decodes_no_second_clamp_and_says_so():
    """k = 1: clampk would hold the same single direction as clamp1, so only clamp1 is
    decoded; the record and the answer say the subspace's share is the direction's (and with
    k > 1 both clamps stay, the subspace's line its own)."""
    from steerlens.audit.fixes import CLAMPS, distinct_clamps
    from steerlens.audit.generated import generated_mediation
    from steerlens.results.text import generated_lines

    assert distinct_clamps(1) == ("clamp1",) and distinct_clamps(6) == CLAMPS
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 40).astype(float)
    plus = np.maximum(base, rng.integers(0, 2, 40))
    cells = {("none", "baseline"): {"jailbroken": base.tolist()},
             ("none", "v@1+v"): {"jailbroken": plus.tolist()},
             ("none", "v@1+v_clamp1"): {"jailbroken": base.tolist()}}
    rec = generated_mediation(cells, ["v@1"], ["none"], [1, 2], k=1)
    assert rec["subspace_k"] == 1 and "k = 1" in rec["bases"]["subspace"]
    assert set(rec["attacks"]["none"]["v@1+v"]["nonrefusal"]) == {"direction"}
    line = generated_lines(rec)[1]
    assert line.endswith("(subspace: the same, k = 1)") and "100% [100, 100]" in line
    six = generated_mediation(cells, ["v@1"], ["none"], [1, 2], k=6)
    assert not generated_lines(six)[1].endswith("k = 1)")


def test_committed_generated_records_are_what_their_cells_give_now():
    """Every committed run's mediation_generated.json (its own and each mitigation run's) equals
    the record recomputed from the saved cells under the current rules."""
    from steerlens.audit.generated import recompute_record, record_paths
    from steerlens.results.stored import _as_stored, differences
    from steerlens.rundir import read_json

    root = Path(__file__).resolve().parents[2] / "results"
    paths = [(run, p) for run in sorted(root.iterdir()) if run.is_dir() for p in record_paths(run)]
    assert len(paths) >= 2
    for run, p in paths:
        assert differences(read_json(p), _as_stored(recompute_record(run, p))) == [], p


def test_mitigate_decodes_a_k1_clampk_beside_clamp1_once():
    """`mitigate --mitigations clamp1 clampk` on a k = 1 run decodes clamp1 only (clampk would be
    the same cell twice; the summary reads it as clamp1's); alone, or with k > 1, clampk stays."""
    from steerlens.audit.fixes import fixes_to_decode

    both = ("perp1", "clamp1", "clampk")
    assert fixes_to_decode(both, 1) == ["perp1", "clamp1"]
    assert fixes_to_decode(both, 6) == list(both)
    assert fixes_to_decode(("clampk",), 1) == ["clampk"]
