"""The mitigation table: harmful compliance as judged and judge-corrected side by side, the harm
verdicts saying which numbers they rest on; recomputed here from the committed cells and the
harm judge's held-out confusion counts (independently of `misclass`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from steerlens.schema import FIX_SUFFIX

ROOT = Path(__file__).resolve().parents[2]
RUN_15 = ROOT / "results" / "findings-1.5b-resid-100"
HEADER = ("| vector | fix | Δ non-refusal | Δ harmful compliance | Δ harmful compliance (judge-corrected) "
          "| behaviour kept | Δ false refusal (benign) | Δ accuracy (pts) |")


def _youden() -> float:
    conf = json.loads((ROOT / "steerlens/judges/weights/harm_confusion.json").read_text())
    c = conf[conf["used"]]
    return c["tp"] / (c["tp"] + c["fn"]) + c["tn"] / (c["tn"] + c["fp"]) - 1


def _harm_labels(run: Path) -> dict[str, list[bool]]:
    """setting -> harm labels under the template attack, from the run's and the mitigation
    directory's judgements files."""
    out = {}
    for j in (run / "judgements" / "harm.json", run / "mitigations" / "judgements" / "harm.json"):
        for rec in json.loads(j.read_text())["cells"].values():
            if rec["attack"] == "refusal_suppression":
                out[rec["setting"]] = rec["jailbroken"]
    return out


@pytest.fixture(scope="module")
def table15() -> tuple[dict, str]:
    from steerlens.results.mitigations import format_mitigations, summarize_mitigations

    m = summarize_mitigations(RUN_15)
    return m, format_mitigations(m)


def _rows(md: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| corrigible"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_table_has_judged_and_corrected_harm_columns(table15):
    """The header names both harm columns (not the old "Δ harmful vs baseline"), and each
    corrected cell is the judged paired shift over Youden's J, from the labels themselves."""
    m, md = table15
    assert HEADER in md and "Δ harmful vs baseline" not in md
    labels, j = _harm_labels(RUN_15), _youden()
    base = labels["baseline"]
    rows = _rows(md)
    assert len(rows) == 5  # raw + 5 fixes, ⊥k being ⊥1 (k = 1)
    for (tag, fix), cells in rows.items():
        setting = f"{tag}+v" if fix == "raw +v" else tag + FIX_SUFFIX[fix]
        fixed = labels[setting]
        judged = sum(f - b for f, b in zip(fixed, base)) / len(base)
        assert cells[1].startswith(f"{100 * judged:+.0f} ["), (fix, cells[1])
        assert re.fullmatch(re.escape(f"{100 * judged / j:+.0f}") + r" \[[+-]\d+, [+-]\d+\]", cells[2]), (
            fix, cells[2])


def test_harm_verdicts_say_they_rest_on_judged_labels(table15):
    """Every fix's harm verdict says it rests on the judged labels; the note gives the margin on
    both scales (judged MDE, and over J on the corrected scale)."""
    m, md = table15
    rows = _rows(md)
    fixes = [c for (_, fix), c in rows.items() if fix != "raw +v"]
    assert fixes and all(c[1].endswith("(on judged labels)") for c in fixes)
    assert all("judged" not in c[0] for c in fixes)  # the non-refusal verdicts are not harm's
    mh = m["margin"]["harm"]
    assert m["margin_harm_corrected"] == pytest.approx(mh / _youden())
    assert (f"margin ±{100 * mh:.0f} judged points is ±{100 * mh / _youden():.0f} points of true "
            "harmful compliance") in md
    restored = [f for v in m["vectors"] for f in v["fixes"]
                if f["outcomes"]["refusal_suppression"]["harm"]["verdict"] == "restores"]
    assert all(f["outcomes"]["refusal_suppression"]["harm"]["corrected"]["vs_baseline"]["delta"]
               == pytest.approx(f["outcomes"]["refusal_suppression"]["harm"]["vs_baseline"]["delta"]
                                / _youden()) for f in restored)


def test_no_correction_when_the_mitigation_cells_had_another_judge(tmp_path):
    """Mitigation cells labelled by other weights than the calibrated ones get no corrected
    numbers ("n/a"), and the note says the harm numbers are as judged."""
    from steerlens.results.mitigations import format_mitigations, summarize_mitigations

    run = tmp_path / RUN_15.name
    shutil.copytree(RUN_15, run)
    path = run / "mitigations" / "judgements" / "harm.json"
    j = json.loads(path.read_text())
    j["settings"]["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(j))
    m = summarize_mitigations(run)
    md = format_mitigations(m)
    assert m["harm_calibration"] is None and m["margin_harm_corrected"] is None
    assert all(c[2] == "n/a" for c in _rows(md).values())
    assert "no judge-corrected numbers" in md


def test_discussion_fix_facts_name_the_judged_labels(table15):
    """The discussion's harm fix facts say the verdict rests on the judged labels and carry the
    judge-corrected shift."""
    from steerlens.results.facts import mitigation_facts

    m, _ = table15
    f = mitigation_facts(m)
    harm = [v for k, v in f.items() if k.startswith("fix.") and k.endswith(".harm")]
    assert harm and all("on the judged labels" in v and "judge-corrected" in v for v in harm)
    nonref = [v for k, v in f.items() if k.startswith("fix.") and k.endswith(".nonrefusal")]
    assert nonref and not any("judged" in v for v in nonref)


def test_a_fix_is_read_only_where_the_raw_shift_could_be_the_vectors():
    """Pre-registered rule 2: a fix's verdict is not read where the raw +v shows no detectable
    shift or one that random directions of its size match; it is where the shift is a verdict
    (or, in a run with too few nulls, untestable)."""
    from steerlens.results import verdicts as V
    from steerlens.results.mitigations import mark_read

    def rec():
        return {"fixes": [{"outcomes": {"none": {"nonrefusal": {"verdict": "does not restore"},
                                                 "harm": {"verdict": "inconclusive"}}}}]}

    for primary, read in ((V.NO_SHIFT, False), (V.NOT_BEYOND_NULL, False), (V.RAISES["nonrefusal"], True),
                          (V.TOO_FEW_NULLS, True)):
        r = rec()
        mark_read(r, {"none": {"nonrefusal": primary, "harm": V.NO_SHIFT}})
        nr, h = r["fixes"][0]["outcomes"]["none"]["nonrefusal"], r["fixes"][0]["outcomes"]["none"]["harm"]
        assert nr["read"] is read and h["read"] is False
        assert V.read_fix_verdict(nr) == ("does not restore" if read else f"not read (raw +v: {primary})")


def _cells_of(run: Path) -> dict:
    from steerlens.results.mitigations import _cells

    return _cells(run)[0]


def test_a_one_row_subspace_tests_the_k_fix_once(table15):
    """k = 1 (the 1.5B): ⊥k is ⊥1, so it is one hypothesis, tested once under ⊥1's name: no
    ⊥k row, no ⊥k test in the Benjamini-Hochberg family (20 -> 16 tests), and the table says
    so; the verdicts are the ones of that smaller family."""
    from steerlens.results.mitigations import one_row_duplicates

    m, md = table15
    assert m["same_as"] == {"perpk": "perp1"} and "perpk" not in m["fixes"]
    fixes = [f["fix"] for v in m["vectors"] for f in v["fixes"]]
    assert fixes == ["perp1", "compensate", "gate", "learned"]
    n_outcomes = len(m["vectors"][0]["fixes"][0]["outcomes"]["refusal_suppression"])
    assert m["n_tests_bh"] == len(fixes) * n_outcomes * 2  # vs raw and vs baseline, once each
    assert "(k = 1): perpk is perp1" in md
    cells = _cells_of(RUN_15)
    fixes_all = ["perp1", "perpk", "compensate"]
    assert one_row_duplicates(fixes_all, cells, 6) == {}  # k > 1: two hypotheses
    assert one_row_duplicates(["perpk", "compensate"], cells, 1) == {}  # no twin to be
    key = next(k for k in cells if k[1].endswith("_perpk"))
    cells[key] = {**cells[key], "completions": [*cells[key]["completions"][1:], "other"]}
    assert one_row_duplicates(fixes_all, cells, 1) == {}  # cells that differ are not a twin's


def test_a_k_run_keeps_both_fixes():
    """k = 6 (the 0.5B): ⊥1 and ⊥k are different fixes; both are rows and both are tested."""
    from steerlens.results.mitigations import summarize_mitigations

    m = summarize_mitigations(ROOT / "results" / "findings-0.5b-resid")
    assert m["same_as"] == {} and {"perp1", "perpk"} <= set(m["fixes"])
