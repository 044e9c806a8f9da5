"""Findings: one function per claim, generated from runs, and the committed report cannot drift."""

import re
import shlex
import shutil
from pathlib import Path

from steerlens.results.findings import CLAIMS, main
from steerlens.results.summary import load_run_data, summarize


def test_findings_generated_from_run(finished_run, tmp_path):
    out = tmp_path / "findings.md"
    assert main([str(finished_run), "--out", str(out)]) == 0
    text = out.read_text()
    for n in range(1, 7):
        assert f"| {n}. " in text
    # Every claim row has as many cells as its table's header (no unescaped pipes).
    for line in text.splitlines():
        if re.match(r"\| [1-6]\. ", line):
            assert line.replace("\\|", "").count("|") in (4, 5), line
    assert "minimum detectable shift" in text


def test_each_claim_reads_the_summary(finished_run):
    s = summarize(load_run_data(finished_run))
    assert s["design"]["outcomes"]
    for o in s["design"]["outcomes"]:
        for claim in CLAIMS:
            c = claim(s, o)
            assert {"claim", "paper", "measured", "verdict"} <= set(c) and c["verdict"], claim.__name__


def test_fix_verdict_rule():
    from steerlens.results.verdicts import fix_verdict

    toward = (0.20, 0.02)  # raw +20 -> fixed +2: toward baseline, not across
    assert fix_verdict(0.01, True, 0.5, *toward) == "restores"
    assert fix_verdict(0.01, False, 0.5, *toward) == "partly restores"  # equivalence not shown
    assert fix_verdict(0.01, False, 0.01, *toward) == "partly restores"
    assert fix_verdict(0.5, False, 0.01, *toward) == "does not restore"
    assert fix_verdict(0.5, True, 0.5, *toward) == "inconclusive"  # equivalence alone is not a restore


def test_bad_run_is_an_error(tmp_path):
    assert main([str(tmp_path), "--out", str(tmp_path / "x.md")]) == 2


def test_committed_findings_match_committed_runs(tmp_path, monkeypatch):
    """docs/findings.md is exactly what its own command gives on the committed runs."""
    root = Path(__file__).resolve().parents[2]
    doc = root / "docs" / "findings.md"
    text = doc.read_text()
    m = re.search(r"`steerlens findings ([^`]+)`", text)
    assert m, "docs/findings.md does not name the command that generated it"
    args = shlex.split(m.group(1))
    for a in (a for a in args if not a.startswith("--")):
        src = root / a
        assert src.exists(), f"{a} is named in docs/findings.md but not committed"
        dst = tmp_path / a
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--out", "out.md"]) == 0
    assert (tmp_path / "out.md").read_text() == text


def test_rejudging_changes_labels_without_touching_the_run(finished_run, tmp_path):
    """summarize(judge=...) re-judges saved completions and writes nothing."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / "summary.json").read_bytes()

    class RefuseAll:
        name = "refuse_all"

        def judge(self, goals, responses):
            return [False] * len(responses)

    s = summarize(load_run_data(run), judge=RefuseAll())
    assert all(r["non_refusal"] == 0 for r in s["rows"] if "non_refusal" in r)
    assert all(b["false_refusal_rate"] == 1 for b in s["benign"])
    assert (run / "summary.json").read_bytes() == before


def test_findings_commands_reproduce_the_committed_configs():
    """Every audit command in docs/findings_commands.sh resolves to the config hash of the run it
    names: the committed findings can be remade with today's code and presets."""
    from steerlens.audit.config import build_parser, config_from_args
    from steerlens.rundir import read_json

    root = Path(__file__).resolve().parents[2]
    # the pre-registered round 2 has no committed runs yet (tests/test_findings_budget.py)
    script = (root / "docs" / "findings_commands.sh").read_text().split(
        "# Round 2 (pre-registered, not yet run)")[0].replace("\\\n", " ")
    commands = [words for words in (shlex.split(line.split("#")[0]) for line in script.splitlines()
                                    if not line.lstrip().startswith("#"))
                if "steerlens.audit" in words]
    assert commands, "no audit command in docs/findings_commands.sh"
    for words in commands:
        args = words[words.index("steerlens.audit") + 1:]
        cfg, opts = config_from_args(build_parser().parse_args(args))
        committed = read_json(root / opts.out / "config.json")
        assert cfg.hash == committed["hash"], f"{opts.out}: {' '.join(args)}"


def test_run_header_names_the_vectors_balance():
    """A polarity-balanced run is not described as letter-balanced (round 2's first run was)."""
    from steerlens.results.findings import balance_text
    assert "polarity-balanced" in balance_text({"balance": "polarity"})
    assert "letter-balanced" in balance_text({})  # runs made before the field: letter
    assert "letter" not in balance_text({"balance": "none"})


def test_claim_one_reads_each_outcomes_own_power():
    """Claim 1 on harmful compliance states (and decides 'not testable at this power' by) the
    harm MDE, not the non-refusal one: the two differ when harm flips differently."""
    from steerlens.results.findings import claim_shift

    s = {"vectors": [], "design": {"minimum_detectable_delta_non_refusal": 0.08, "by_outcome": {
        "nonrefusal": {"minimum_detectable_shift": 0.08}, "harm": {"minimum_detectable_shift": 0.25}}}}
    harm, nonrefusal = claim_shift(s, "harm"), claim_shift(s, "nonrefusal")
    assert "MDE +25 pts" in harm["measured"] and harm["verdict"] == "not testable at this power"
    assert "MDE +8 pts" in nonrefusal["measured"] and nonrefusal["verdict"] == "not supported"


def test_a_run_with_mediation_says_why_by_intervention():
    """A run's section carries its mediated shares (first-token and generated) as a list; a run
    without mediation has no such block."""
    from steerlens.results.findings import why_lines

    assert why_lines({}) == []
    gen = {"attacks": {"none": {"v@1+v": {"nonrefusal": {"direction": {
        "share": 0.26, "share_ci": [0.12, 0.41], "effect": -0.35, "effect_ci": [-0.45, -0.25]}}}}},
        "clamp_layers": [14, 23], "subspace_k": 1}
    lines = why_lines({"mediation": {"generated": gen}})
    assert lines[0].startswith("**Why, by intervention**")
    assert any(x.startswith("- v@1+v under none") and "26% [12, 41]" in x for x in lines)


def test_claims_4_5_skip_shifts_the_nulls_match():
    """A vector whose shift is significant but not beyond its generated nulls has no fix read
    under claims 4-5 (its shift is not the vector's); one beyond them does."""
    from steerlens.results import verdicts as V
    from steerlens.results.findings import claim_orthogonal

    fix = {"nonrefusal": {"delta_non_refusal": 0.1, "q_value": 0.5, "equivalence_margin": 0.09,
                          "p_tost": 0.6, "verdict": "does not restore"}}
    row = {"delta_non_refusal": 0.12, "delta_ci_low": 0.05, "delta_ci_high": 0.2, "q_value": 0.01,
           "setting": "v@1+v"}

    def s(verdict):
        return {"vectors": [{"vector": "v", "attack": "none", "verdicts": {"nonrefusal": verdict},
                             "plus": row, "mitigation": {"perp1": fix}}]}

    not_tested = "not tested (no significant shift)"
    assert claim_orthogonal(s(V.NOT_BEYOND_NULL), "nonrefusal")["verdict"] == not_tested
    assert claim_orthogonal(s(V.RAISES["nonrefusal"]), "nonrefusal")["verdict"] == "1 does not restore"
