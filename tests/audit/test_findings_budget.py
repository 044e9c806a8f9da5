"""The round-2 budget (benchmarks/findings_budget.py): its cell count is the audit's on every
committed run, its runs are the pre-registered commands, and each has >= 20 generated nulls
per attack and dose."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the budget plans the findings runs: CAA vectors of behaviours under the CAA protocol; runs
# with --vector files (the library's decomposition, the as-deployed demo) are not budgeted by it
RUNS = sorted(p.parent for p in (ROOT / "results").glob("**/config.json")
              if (p.parent / "cells").is_dir() and not p.parent.name.startswith("mitigations")
              and p.parent.name != "mediation"
              and json.loads(p.read_text())["config"].get("protocol", "caa") == "caa"
              and not json.loads(p.read_text())["config"].get("vectors"))


@pytest.fixture(scope="module")
def budget():
    path = ROOT / "benchmarks" / "findings_budget.py"
    spec = importlib.util.spec_from_file_location("findings_budget", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("run", RUNS, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_cell_count_is_the_audits(budget, run):
    """Generated cells by attack from the config alone = the run's cells with completions."""
    from steerlens.audit.config import AuditConfig

    cfg = AuditConfig.from_json(json.loads((run / "config.json").read_text())["config"])
    got = Counter(c["attack"] for c in (json.loads(p.read_text()) for p in (run / "cells").glob("*.json"))
                  if "completions" in c)
    assert budget.cells(cfg) == dict(got)


def _round2_commands() -> dict[str, str]:
    """The round-2 audit commands of docs/findings_commands.sh: output name -> arguments."""
    text = (ROOT / "docs" / "findings_commands.sh").read_text()
    section = text[text.index("# Round 2 (pre-registered"):]
    out = {}
    for m in re.finditer(r"^audit_r2 (\S+) (.+?)$", section.replace("\\\n", " "), re.M):
        out[m.group(1)] = " ".join(shlex.split(m.group(2)))
    return out


def test_round2_runs_are_the_preregistered_commands(budget):
    """The budget prices exactly the commands the pre-registered section runs, and each has at
    least 20 generated nulls per attack and dose, the polarity balance and --mediation."""
    cmds = _round2_commands()
    assert cmds == {k: " ".join(shlex.split(v)) for k, v in budget.ROUND2.items()}
    for args in cmds.values():
        cfg, mediation = budget.config(args)
        assert budget.nulls_per_attack_dose(cfg) >= 20 and cfg.balance == "polarity" and mediation
    # amendment 1: generated mediation on the two residual-dose runs, and priced there
    assert {k for k, a in cmds.items() if budget.generated_on(a)} == {"r2-0.5b-resid", "r2-1.5b-resid"}
    rows = {n: budget.budget(n, a) for n, a in budget.ROUND2.items()}
    assert rows["r2-0.5b-resid"]["clamped_cells"] == 12 and rows["r2-0.5b-paper"]["clamped_cells"] == 0
    assert rows["r2-0.5b-resid"]["generated_mediation_hours"] > 0


def test_tokens_are_cells_times_goals_times_length(budget):
    cfg, _ = budget.config("--preset standard")
    c = budget.cells(cfg)
    assert c == {"none": 36, "refusal_suppression": 33, "benign": 7}
    assert budget.tokens(cfg) == (36 + 33) * 100 * 64 + 7 * 30 * 64


def test_the_design_doc_shows_the_scripts_budget(budget):
    """docs/findings_round2.md's budget table is what the script prints now."""
    rows = [budget.budget(name, args) for name, args in budget.ROUND2.items()]
    table = budget.report(rows).split("\n\n")[0]
    doc = (ROOT / "docs" / "findings_round2.md").read_text()
    assert table in doc
    total = sum(budget.mitigate_hours().values()) + sum(r["hours_at_audit_rate"] for r in rows)
    assert f"{total:.1f} h" in doc


def test_clamped_cells_are_what_generated_mediation_decoded(budget):
    """The budget's clamped cells for --mediation-generated = the clamp cells a committed run's
    generated mediation holds (RUN/mediation/cells), where its record covers every vector and
    attack (a one-row subspace: clamp1 only)."""
    from steerlens.audit.config import AuditConfig

    checked = 0
    for run in RUNS:
        if not (run / "mediation_generated.json").exists():
            continue
        rec = json.loads((run / "mediation_generated.json").read_text())
        cfg = AuditConfig.from_json(json.loads((run / "config.json").read_text())["config"])
        if set(rec["attacks"]) != set(cfg.attacks) or any(
                len(v) != len(cfg.behaviours) * len(cfg.doses) for v in rec["attacks"].values()):
            continue  # a partial record (one vector's cells taken from a mitigation run)
        got = [p for p in (run / "mediation" / "cells").glob("*+v_clamp*.json")
               if p.name.split("__")[0] in cfg.attacks]
        assert len(got) == budget.clamped_cells(cfg) // (2 if rec.get("subspace_k") == 1 else 1), run
        checked += 1
    assert checked >= 1
