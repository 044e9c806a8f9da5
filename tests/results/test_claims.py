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
    """The hand-written discussion cites the null cells that shift non-refusal themselves as the
    project's own test counts them (it once said 6 and 3 of 12 where the runs give more)."""
    from steerlens.results.facts import fill
    from steerlens.results.findings import run_facts

    text = (ROOT / "docs" / "findings_discussion.md").read_text()
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
ROW_NUMBERS = ("k", "n", "ci_low", "ci_high", "delta_non_refusal", "delta_harmful", "delta_count",
               "delta_ci_low", "delta_ci_high", "mcnemar_only_base", "mcnemar_only_other",
               "mcnemar_p_value", "p_exact")


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
    return a == b


@pytest.mark.parametrize("run", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_stored_summary_numbers_recompute_from_the_cells(run):
    """Each committed run's stored summary.json against the summary computed from its raw cells
    now. Compared: every number both hold per cell (rates, counts, intervals, paired tests; per
    outcome), the design's size and the vectors' null counts. Not compared, because the rules
    changed after the file was written and the stored file is a record of its time (readers use
    `current_summary`, never the file): q-values (BH families, docs/statistics.md), the minimum
    detectable shift (per outcome), verdicts, and harm numbers absent from files written before
    the harm labels."""
    stored = read_summary(run / "summary.json")  # outcome keys as written now
    now = summarize(load_run_data(run))
    # Files written before the score test (no design "test") held the exact McNemar p under
    # "mcnemar_p_value" (now "p_exact") and an Agresti-Min interval (now Tango's score interval,
    # which agrees with the test): the p is compared under its new name, the old interval not.
    score_era = "test" in stored["design"]
    rename = {} if score_era else {"mcnemar_p_value": "p_exact"}
    skip = set() if score_era else {"delta_ci_low", "delta_ci_high"}
    assert stored["design"]["n_goals"] == now["design"]["n_goals"]
    cur = {(r["attack"], r["setting"]): r for r in now["rows"]}
    assert {(r["attack"], r["setting"]) for r in stored["rows"]} == set(cur)
    compared = 0
    for r in stored["rows"]:
        c = cur[(r["attack"], r["setting"])]
        for old, new, rate in ((r, c, "non_refusal"), (r.get("harm", {}), c.get("harm", {}), "harmful")):
            for k in (k for k in (rate, *ROW_NUMBERS) if k not in skip):
                k_new = rename.get(k, k)
                if k in old and k_new in new:
                    assert _close(old[k], new[k_new]), (run.name, r["setting"], k, old[k], new[k_new])
                    compared += 1
    assert compared > 0
    vecs = {(f["vector"], f["dose"], f["attack"]): f for f in now["vectors"]}
    for f in stored["vectors"]:
        g = vecs[(f["vector"], f["dose"], f["attack"])]
        for o, ev in f.get("evidence", {}).items():
            if o in g["evidence"]:
                assert ev["null"]["count"] == g["evidence"][o]["null"]["count"]


def test_stored_mitigations_recompute_from_the_cells(run15):
    """The committed mitigations.json against `summarize_mitigations` now: every shift, interval
    and unadjusted p both hold (margins, q-values and verdicts follow the current rules)."""
    from steerlens.results.mitigations import summarize_mitigations

    for run in (ROOT / "results" / "findings-0.5b-resid", run15):
        stored = json.loads((run / "mitigations" / "mitigations.json").read_text())
        now = summarize_mitigations(run)
        for v_old, v_new in zip(stored["vectors"], now["vectors"], strict=True):
            for f_old, f_new in zip(v_old["fixes"], v_new["fixes"], strict=True):
                for a, by in f_old["outcomes"].items():
                    for o, res in by.items():
                        for part in ("vs_baseline", "vs_raw", "raw"):
                            for k in ("delta", "ci_low", "ci_high", "p_value", "b", "c", "n"):
                                assert _close(res[part][k], f_new["outcomes"][a][o][part][k])
                kept_old, kept_new = f_old.get("behaviour_kept"), f_new.get("behaviour_kept")
                if kept_old:
                    assert _close(kept_old["share"], kept_new["share"])


def test_outcome_keys_are_named_for_the_outcome_and_old_files_read():
    """A summary written now names each rate for its outcome ("non_refusal", "harmful"), never
    "asr"; a stored summary written before is read with the same keys."""
    run = ROOT / "results" / "findings-1.5b-resid"
    now = summarize(load_run_data(run))
    plus = next(r for r in now["rows"] if r["kind"] == "+v")
    assert "asr" not in plus and "non_refusal" in plus and "harmful" in plus["harm"]
    assert '"asr"' not in json.dumps(now)
    old = read_summary(run / "summary.json")
    assert "asr" in json.loads((run / "summary.json").read_text())["rows"][0]
    assert all("non_refusal" in r and "asr" not in r for r in old["rows"] if "k" in r)


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
