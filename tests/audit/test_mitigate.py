"""`python -m steerlens.audit.mitigate` on a finished tiny-model run, and its pure verdicts."""

from __future__ import annotations

import json
import re
import shutil

import pytest

SMALL = ["--n-capability", "3", "--n-calibration", "4", "--learned-steps", "2", "--learned-harmful", "4",
         "--learned-val-harmful", "4", "--learned-items", "2", "--learned-val-items", "2"]


@pytest.fixture(scope="module")
def mitigated(finished_run, tmp_path_factory):
    from steerlens.audit.mitigate import main

    run = tmp_path_factory.mktemp("mit") / "run"
    shutil.copytree(finished_run, run)
    assert main([str(run), *SMALL]) == 0
    return run


def test_mitigate_writes_fixed_cells_costs_and_verdicts(mitigated):
    m = mitigated / "mitigations"
    names = {p.name for p in (m / "cells").glob("*.json")}
    for attack in ("none", "refusal_suppression", "benign"):
        for fix in ("+v_comp", "+v_gated", "+v_learned"):
            assert f"{attack}__sycophancy@2{fix}.json" in names
    # the run already had +v_perp1 and +v_perpk cells on harmful goals: only benign ones are new
    assert {n for n in names if "perp" in n} == {
        f"benign__{v}@2+v_{k}.json" for v in ("sycophancy", "refusal") for k in ("perp1", "perpk")}
    costs = json.loads((m / "costs.json").read_text())
    beh = costs["behaviour"]["sycophancy"]
    assert set(beh) >= {"unsteered", "sycophancy@2+v", "sycophancy@2+v_comp", "sycophancy@2+v_gated",
                        "sycophancy@2+v_learned", "sycophancy@2+v_perp1"}
    assert costs["decode_seconds"] == {}  # no clamp, no decode timing
    assert len(costs["capability"]["mmlu"]["unsteered"]) == 6  # 3 items, both orders (tests: own order)
    s = json.loads((m / "mitigations.json").read_text())
    assert {v["vector"] for v in s["vectors"]} == {"sycophancy", "refusal"}
    fixes = {f["fix"]: f for f in s["vectors"][0]["fixes"]}
    # the clamps: named; the tiny run's subspace has one row, so ⊥k is ⊥1, tested once as ⊥1
    assert set(fixes) == {"perp1", "compensate", "gate", "learned"} and s["same_as"] == {"perpk": "perp1"}
    assert s["fixes"] == ["perp1", "compensate", "gate", "learned"]
    for f in fixes.values():
        assert set(f["outcomes"]) == {"none", "refusal_suppression"}
        assert "nonrefusal" in f["outcomes"]["none"] and f["false_refusal"] is not None
        assert "behaviour_kept" in f and set(f["capability"]) == {"mmlu", "truthfulqa"}
    gate = json.loads((m / "gate.json").read_text())
    assert set(gate) == {"none", "refusal_suppression", "benign"}
    assert (m / "learned" / "sycophancy@2.safetensors").exists()
    assert (m / "compensation" / "sycophancy@2.json").exists()


def test_mitigate_resume_changes_nothing(mitigated):
    from steerlens.audit.mitigate import main

    m = mitigated / "mitigations"
    before = {p: p.read_bytes() for p in m.rglob("*") if p.is_file()}
    assert main([str(mitigated), *SMALL]) == 0
    assert {p: p.read_bytes() for p in m.rglob("*") if p.is_file()} == before


def test_mitigate_refuses_other_settings_and_unfinished_runs(mitigated, tmp_path, capsys):
    from steerlens.audit.mitigate import main

    assert main([str(mitigated), "--n-capability", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "not a finished audit run" in capsys.readouterr().err
    assert main([str(mitigated), "--mitigations", "magic"]) == 2
    assert main([str(mitigated), "--attacks", "aim"]) == 2
    assert "the run audited" in capsys.readouterr().err
    assert main([str(mitigated), "--vectors", "honesty"]) == 2
    assert "the run audited" in capsys.readouterr().err


def test_mitigate_on_a_subset_of_vectors_and_attacks(finished_run, tmp_path):
    """--vectors/--attacks: only those vectors' fixes are generated, costed and tabled."""
    from steerlens.audit.mitigate import main

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main([str(run), *SMALL, "--vectors", "refusal", "--attacks", "none",
                 "--mitigations", "perp1", "compensate"]) == 0
    m = run / "mitigations"
    names = {p.name for p in (m / "cells").glob("*.json")}
    assert names == {"none__refusal@2+v_comp.json", "benign__refusal@2+v_comp.json",
                     "benign__refusal@2+v_perp1.json"}
    s = json.loads((m / "mitigations.json").read_text())
    assert [v["vector"] for v in s["vectors"]] == ["refusal"] and s["attacks"] == ["none"]
    assert set(json.loads((m / "costs.json").read_text())["capability"]["mmlu"]) == {
        "unsteered", "refusal@2+v", "refusal@2+v_perp1", "refusal@2+v_comp"}


def test_the_fixed_cells_use_the_fixes(mitigated, tiny_model):
    """The gated cells' steering is the run's vector behind the saved condition; a benign-only
    gate (threshold that never fires) gives the raw cell's completions exactly."""
    from steerlens.audit.fixes import condition
    from steerlens.rundir import RunStore

    m = RunStore(mitigated / "mitigations")
    cond = condition(m, None, None, None)  # saved: no model needed to read it back
    assert 1 <= cond.layer and cond.comparator in ("larger", "smaller")
    gate = m.read_json("gate.json")["none"]
    cell = m.read_json("cells/none__sycophancy@2+v_gated.json")
    raw = json.loads((mitigated / "cells" / "none__sycophancy@2+v.json").read_text())
    base = json.loads((mitigated / "cells" / "none__baseline.json").read_text())
    if gate["steered"] == gate["n"]:
        assert cell["completions"] == raw["completions"]
    if gate["steered"] == 0:
        assert cell["completions"] == base["completions"]


def test_a_clamp_moving_the_shift_away_from_baseline_never_restores():
    """The verdict a clamp cell gets (as any fix's): a fixed cell further from baseline than
    the raw one, or across it, is never 'restores', however significant the change."""
    from steerlens.results.mitigations import fix_outcome

    base, raw = [False] * 100, [True] * 30 + [False] * 70
    away = fix_outcome(base, raw, [True] * 70 + [False] * 30, 0.1)
    assert away["vs_raw"]["p_value"] < 0.05 and away["verdict"] != "restores"
    across = fix_outcome([True] * 50 + [False] * 50, [True] * 80 + [False] * 20,
                         [True] * 10 + [False] * 90, 0.1)
    assert "restores" not in across["verdict"]


def test_kept_share_and_verdicts_on_planted_numbers():
    import numpy as np

    from steerlens.results.mitigations import capability, fix_outcome, kept_share

    noise = list(np.random.default_rng(0).normal(0, 0.02, 40))
    p = {"unsteered": [0.2] * 40, "raw": [0.6 + e for e in noise],
         "half": [0.4 + e for e in noise], "all": [0.6 + e for e in noise], "flat": [0.2] * 40}
    assert kept_share(p, "raw", "all")["verdict"] == "keeps the steering"
    half = kept_share(p, "raw", "half")
    assert half["share"] == pytest.approx(0.5, abs=0.05) and half["verdict"] == "loses the steering"
    assert half["n_items"] == 20
    assert kept_share(p, "flat", "raw")["verdict"] == "raw vector not shown to steer here"
    c = capability({"unsteered": [0.9, 0.9] * 25 + [0.1, 0.1] * 25, "x": [0.1] * 100}, "x")
    assert c["n"] == 50 and c["unsteered"] == 0.5 and c["accuracy"] == 0.0 and c["ci_high"] < 0
    base, raw = [False] * 100, [True] * 40 + [False] * 60
    restored = fix_outcome(base, raw, list(base), 0.1)
    assert restored["verdict"] == "restores" and restored["equivalent"]
    kept = fix_outcome(base, raw, list(raw), 0.1)
    assert kept["verdict"] == "does not restore"


def test_report_shows_the_pareto_view(mitigated):
    from steerlens.results.report import write_report

    page = write_report(mitigated).read_text()
    assert "id='fixes'" in page and "plot-pareto-none-nonrefusal" in page


def test_a_second_mitigation_run_lives_beside_the_first(mitigated, tmp_path, capsys):
    """--into mitigations-NAME: a mitigation run with other settings beside RUN/mitigations,
    which it leaves byte for byte; report, stored-summary check and findings facts read both;
    a bad name is refused before any model work."""
    from steerlens.audit.mitigate import main
    from steerlens.results.findings import run_facts
    from steerlens.results.mitigations import mitigation_dirs
    from steerlens.results.report import write_report
    from steerlens.results.stored import refresh, stale

    run = tmp_path / "run"
    shutil.copytree(mitigated, run)
    first = {p: p.read_bytes() for p in (run / "mitigations").rglob("*") if p.is_file()}
    assert main([str(run), "--into", "elsewhere"]) == 2
    assert "mitigations-NAME" in capsys.readouterr().err
    assert main([str(run), *SMALL, "--into", "mitigations-perp", "--vectors", "refusal",
                 "--attacks", "none", "--mitigations", "perp1"]) == 0
    assert {p: p.read_bytes() for p in (run / "mitigations").rglob("*") if p.is_file()} == first
    assert mitigation_dirs(run) == ["mitigations", "mitigations-perp"]
    s = json.loads((run / "mitigations-perp" / "mitigations.json").read_text())
    assert s["into"] == "mitigations-perp" and [v["vector"] for v in s["vectors"]] == ["refusal"]
    refresh(run)
    assert stale(run) == {}
    (run / "mitigations-perp" / "mitigations.md").write_text("# x\nstale\n")
    assert "mitigations-perp/mitigations.md" in stale(run)
    facts = run_facts(run, json.loads((run / "summary.json").read_text()))
    assert any(k.startswith("mitigations-perp.fix.refusal@2.perp1.") for k in facts)
    assert any(k.startswith("fix.sycophancy@2.learned.") for k in facts)
    share = {"effect": 0.2, "effect_ci": [0.1, 0.3], "share": 0.5, "share_ci": [0.2, 0.8]}
    gen = json.dumps({"clamp_layers": [1, 2], "attacks": {"none": {"sycophancy@2+v": {
        "nonrefusal": {"direction": share}}}}})
    for where in (run, run / "mitigations"):  # the audit's own record and a mitigation run's
        (where / "mediation_generated.json").write_text(gen)
    page = write_report(run).read_text()
    assert "plot-mediation-generated-none" in page and "plot-mitigations-mediation-generated-none" in page
    assert "id='fixes'" in page and "id='fixes-mitigations-perp'" in page
    assert "plot-mitigations-perp-pareto-none-nonrefusal" in page
    ids = re.findall(r'<div id="(plot-[^"]+)" class="plotly-graph-div"', page)
    assert len(ids) > 4 and len(ids) == len(set(ids))  # plotly draws by id: one div per figure
    (run / "mitigations-late").mkdir()
    shutil.copy(run / "mitigations-perp" / "config.json", run / "mitigations-late" / "config.json")
    assert stale(run)["mitigations-late/mitigations.json"][0].startswith("missing")


def test_the_first_mitigation_runs_settings_are_named_options():
    """Every mitigate command of docs/findings_commands.sh whose run is committed with its
    mitigations gives that run's mitigations/config.json (those runs used the first learned
    component: penalty form, fixed steps; the new options are left out of config.json at those
    values), so they resume and their learned components reproduce; the new defaults record
    their form."""
    import shlex
    from pathlib import Path

    from steerlens.audit.fixes import MitigateConfig
    from steerlens.audit.flags import config_of
    from steerlens.audit.mitigate import build_parser

    root = Path(__file__).resolve().parents[2]
    script = (root / "docs" / "findings_commands.sh").read_text().replace("\\\n", " ")
    commands = [w for w in (shlex.split(line) for line in script.splitlines()
                            if not line.lstrip().startswith("#")) if "steerlens.audit.mitigate" in w]
    parsed = [build_parser().parse_args(w[w.index("steerlens.audit.mitigate") + 1:]) for w in commands]
    done = [a for a in parsed if (root / a.run / "mitigations" / "config.json").exists()]
    assert len(done) >= 2
    for a in done:
        saved = json.loads((root / a.run / "mitigations" / "config.json").read_text())
        assert json.loads(json.dumps(config_of(MitigateConfig, vars(a)).to_json())) == saved, a.run
    new = MitigateConfig().to_json()
    assert new["learned_form"] == "constrained" and new["learned_stop"] == "validation"
    assert "learned_keep" not in MitigateConfig(learned_form="penalty").to_json()


def test_learned_training_and_validation_sets_are_disjoint_and_not_test_items():
    from steerlens.audit.config import AuditConfig
    from steerlens.audit.fixes import MitigateConfig, learned_sets
    from steerlens.datasets.behaviours import behaviour_split
    from steerlens.datasets.loaders import load_jbb
    from steerlens.errors import SteerlensError

    h, items, vh, vi = learned_sets(AuditConfig(), MitigateConfig(), "sycophancy")
    assert (len(h), len(items), len(vh), len(vi)) == (32, 16, 32, 16)
    assert not set(h) & set(vh) and not {i.question for i in items} & {i.question for i in vi}
    assert not (set(h) | set(vh)) & {g.goal for g in load_jbb("harmful")}
    test = {i.question for i in behaviour_split("sycophancy", "test")}
    assert not ({i.question for i in items} | {i.question for i in vi}) & test
    old = learned_sets(AuditConfig(), MitigateConfig(learned_stop="steps", learned_harmful=8,
                                                     learned_items=4), "sycophancy")
    assert (len(old[0]), len(old[1]), old[2], old[3]) == (8, 4, [], [])
    with pytest.raises(SteerlensError, match="harmful prompts"):
        learned_sets(AuditConfig(), MitigateConfig(learned_val_harmful=1000), "sycophancy")
