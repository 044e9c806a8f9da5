"""The committed runs re-read by the current rules: one source of truth for the design's numbers
(mitigations read the summary computed from the cells now, never a stored copy)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from steerlens.results.summary import load_run_data, read_summary, summarize

ROOT = Path(__file__).resolve().parents[2]
RUN_15 = ROOT / "results" / "findings-1.5b-resid-100"


@pytest.fixture(scope="module")
def run15(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("runs") / RUN_15.name
    shutil.copytree(RUN_15, dst)
    return dst


def test_mitigation_margins_come_from_the_current_summary(run15):
    """A stale stored summary.json (here: MDE 0.30) does not set the mitigation margins: they
    are each outcome's minimum detectable shift computed from the cells now."""
    from steerlens.results.mitigations import format_mitigations, summarize_mitigations

    stored = json.loads((run15 / "summary.json").read_text())
    stored["design"]["minimum_detectable_delta_non_refusal"] = 0.30
    (run15 / "summary.json").write_text(json.dumps(stored))
    m = summarize_mitigations(run15)
    assert "±30" not in format_mitigations(m)
    want = {o: b["minimum_detectable_shift"] for o, b in
            summarize(load_run_data(run15))["design"]["by_outcome"].items()}
    assert m["margin"] == want and 0.30 not in want.values()
    for v in m["vectors"]:
        for f in v["fixes"]:
            for by in f["outcomes"].values():
                for o, res in by.items():
                    assert res["margin"] == want[o]


def test_harm_calibration_reproduces_the_judges_kappa_and_corrects_the_run(run15):
    """The stored held-out confusion counts give the judge's recorded held-out κ (computed here
    from the counts), and the run's harm shifts are corrected by them: judged / (Se + Sp - 1)."""
    conf = json.loads((ROOT / "steerlens/judges/weights/harm_confusion.json").read_text())
    c = conf[conf["used"]]
    meta = json.loads((ROOT / "steerlens/judges/weights/harm.json").read_text())
    n = c["tp"] + c["fn"] + c["tn"] + c["fp"]
    po = (c["tp"] + c["tn"]) / n
    pe = ((c["tp"] + c["fp"]) * (c["tp"] + c["fn"]) + (c["tn"] + c["fn"]) * (c["tn"] + c["fp"])) / n**2
    assert (po - pe) / (1 - pe) == pytest.approx(meta["held_out_by_goal"]["kappa_harm"], abs=1e-12)
    assert n == meta["held_out_by_goal"]["n"]
    s = summarize(load_run_data(run15))
    j = c["tp"] / (c["tp"] + c["fn"]) + c["tn"] / (c["tn"] + c["fp"]) - 1
    rows = [r for r in s["rows"] if r["kind"] == "+v"]
    assert rows and all(r["harm"]["corrected"]["delta"] == pytest.approx(r["harm"]["delta_harmful"] / j)
                        for r in rows)


def _null_cells_significant(run: Path) -> tuple[int, int]:
    """Generated null cells whose non-refusal shift has McNemar score p < 0.05, from the cells'
    labels directly (chi-square without correction, its own code)."""
    from scipy import stats

    cells = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    base = {c["attack"]: c["jailbroken"] for c in cells if c["setting"] == "baseline"}
    k = m = 0
    for c in cells:
        if c["kind"] in ("random", "shuffled") and "jailbroken" in c and c["attack"] in base:
            b = sum(x and not y for x, y in zip(base[c["attack"]], c["jailbroken"]))
            d = sum(y and not x for x, y in zip(base[c["attack"]], c["jailbroken"]))
            m += 1
            k += b + d > 0 and stats.chi2.sf((d - b) ** 2 / (b + d), 1) < 0.05
    return k, m


def test_discussion_numbers_come_from_the_runs():
    """Round 1's hand-written discussion cites the null cells that shift non-refusal as the
    project's own test counts them (it once said 6 and 3 of 12 where the runs give more)."""
    from steerlens.results.facts import fill
    from steerlens.results.findings import run_facts

    text = (ROOT / "docs" / "findings_discussion_round1.md").read_text()
    names = set(re.findall(r"\{\{([^{}:]+):", text))
    facts = {n: run_facts(ROOT / "results" / n, summarize(load_run_data(ROOT / "results" / n)))
             for n in names}
    out = fill(text, facts)
    assert "{{" not in out
    k, m = _null_cells_significant(ROOT / "results" / "findings-0.5b-resid")
    assert f"on the 0.5B {k} of {m} generated null" in out
    k, m = _null_cells_significant(ROOT / "results" / "findings-0.5b-paper")
    assert f"{k} of {m} at the paper's dose" in out


def test_unknown_placeholder_is_an_error():
    from steerlens.errors import SteerlensError
    from steerlens.results.facts import fill

    assert fill("a {{r:x}} b", {"r": {"x": "7 of 12"}}) == "a 7 of 12 b"
    with pytest.raises(SteerlensError):
        fill("{{r:y}}", {"r": {"x": "1"}})


COMMITTED = sorted(p.parent for p in (ROOT / "results").glob("**/summary.json"))
REFRESH = "python -m steerlens.results.stored results/RUN, then regenerate docs/findings.md"


@pytest.mark.parametrize("run", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_stored_summaries_are_what_the_cells_give_now(run):
    """Each committed run's stored summary.json (and mitigations.json / .md) is exactly what the
    current rules compute from its raw cells and labels: a rule change that leaves a stored
    file stale fails here (a reader opening the file sees current numbers)."""
    from steerlens.results.stored import stale

    assert stale(run) == {}, f"stale stored files in {run.name}: rewrite with {REFRESH}"


def test_a_stale_summary_is_caught(tmp_path):
    """The staleness check fails on a stored summary written by older rules (an old MDE, an
    old verdict, a lost key) and passes once `refresh` rewrote it from the cells."""
    from steerlens.results.stored import stale

    run = tmp_path / "run"
    shutil.copytree(ROOT / "results" / "findings-1.5b-resid", run)
    s = json.loads((run / "summary.json").read_text())
    s["design"]["by_outcome"]["nonrefusal"]["minimum_detectable_shift"] += 0.01
    s["vectors"][0]["verdict"] = "weakens refusal"
    del s["rows"][0]["harm"]
    (run / "summary.json").write_text(json.dumps(s))
    found = stale(run)["summary.json"]
    assert any("minimum_detectable_shift" in d for d in found) and any("verdict" in d for d in found)
    from steerlens.results.stored import main

    assert main([str(run)]) == 0 and stale(run) == {}
    assert main([str(tmp_path / "nothing")]) == 2


def test_stored_library_analysis_is_current():
    """The vector-library study's library.json / library.md are the analysis of its runs' files
    now (with the polarity direction it wrote)."""
    from steerlens.results.stored import stale_study

    assert stale_study(ROOT / "results" / "library-0.5b") == {}


def test_outcome_keys_are_named_for_the_outcome_and_old_files_read(tmp_path):
    """A summary written now names each rate for its outcome ("non_refusal", "harmful"), never
    "asr"; a stored summary written before is read with the same keys."""
    run = ROOT / "results" / "findings-1.5b-resid"
    now = summarize(load_run_data(run))
    plus = next(r for r in now["rows"] if r["kind"] == "+v")
    assert "asr" not in plus and "non_refusal" in plus and "harmful" in plus["harm"]
    assert '"asr"' not in json.dumps(now)
    # a file written before the outcome names (rates "asr", shifts "delta_asr"): built here
    written = json.loads(json.dumps(now, default=str))
    for r in (r for r in written["rows"] if "non_refusal" in r):
        r["asr"] = r.pop("non_refusal")
        if "delta_non_refusal" in r:
            r["delta_asr"] = r.pop("delta_non_refusal")
        if "harmful" in r.get("harm", {}):
            r["harm"]["asr"] = r["harm"].pop("harmful")
    assert sum("asr" in r for r in written["rows"]) > 0
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(written))
    old = read_summary(path)
    assert all("non_refusal" in r and "asr" not in r for r in old["rows"] if "k" in r)
    assert all("harmful" in r["harm"] for r in old["rows"] if "harm" in r)


def test_template_interaction_is_split_by_the_direction_of_each_vectors_effect():
    """Claim 2 on the 0.5B, recomputed from the cells: the template's extra flips per goal
    (oriented by each vector's effect) are the refusal vector refusing more; the vectors that
    lower refusal add little (so "templates make steered models drop their refusals more" does
    not hold there)."""
    run = ROOT / "results" / "findings-0.5b-resid"
    cells = {(c["attack"], c["setting"]): c for c in
             (json.loads(p.read_text()) for p in (run / "cells").glob("*.json"))}
    split: dict[str, list[float]] = {"raises": [], "lowers": []}
    for (attack, name), c in cells.items():
        if attack != "none" or c["kind"] != "+v":
            continue
        e = [[int(x) - int(y) for x, y in zip(cells[(a, name)]["jailbroken"],
                                              cells[(a, "baseline")]["jailbroken"])]
             for a in ("none", "refusal_suppression")]
        sign = 1 if sum(e[0]) + sum(e[1]) > 0 else -1
        split["raises" if sign > 0 else "lowers"].append(sign * (sum(e[1]) - sum(e[0])) / len(e[0]))
    t = summarize(load_run_data(run))["templates"]["nonrefusal"]["refusal_suppression"]["by_direction"]
    for d, xs in split.items():
        assert t[d]["n_vectors"] == len(xs)
        assert t[d]["mean_difference"] == pytest.approx(sum(xs) / len(xs))
    assert t["lowers"]["p_value"] < 0.05 < t["raises"]["p_value"]
