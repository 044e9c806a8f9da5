"""Round comparison: each claim's verdict on the previous run beside the new one's."""

import re

import pytest

from steerlens.results.findings import main
from steerlens.results.rounds import change_lines, claim_changes


def _claims(*verdicts):
    return [{"claim": f"{i + 1}. claim {i + 1}" + (" (k = 3) and more" if i == 0 else ""), "verdict": v}
            for i, v in enumerate(verdicts)]


def test_claim_changes_pairs_claims_in_order_and_marks_changes():
    old = {"nonrefusal": _claims("supported", "not supported"), "harm": _claims("a", "b")}
    new = {"nonrefusal": _claims("partly (one sign)", "not supported"), "harm": _claims("a", "b")}
    rows = claim_changes(old, new)
    assert [(r["outcome"], r["before"], r["after"], r["changed"]) for r in rows] == [
        ("nonrefusal", "supported", "partly (one sign)", True),
        ("nonrefusal", "not supported", "not supported", False),
        ("harm", "a", "a", False), ("harm", "b", "b", False)]
    assert rows[0]["claim"] == "1. claim 1 and more"  # a run's own k is not part of the name
    text = "\n".join(change_lines([("old", "new", rows)]))
    assert "1 of 4 claim verdicts changed" in text
    assert text.count("**changed**") == 2  # the legend and the one changed row


def test_a_tally_of_the_same_verdicts_over_other_rows_is_not_a_changed_verdict():
    """Claims 4-5 tally one verdict per fixed row read: "6 does not restore" -> "2 does not
    restore" (fewer rows read) is the same verdict over other rows, not a change; another
    verdict among the rows is; a tally against a plain verdict is."""
    from steerlens.results.rounds import compare, verdict_kinds

    assert verdict_kinds("3 partly restores, 3 does not restore") == {"partly restores", "does not restore"}
    assert verdict_kinds("not tested (no significant shift)") is None
    assert compare("6 does not restore", "2 does not restore") == "rows"
    assert compare("2 does not restore, 1 inconclusive", "1 inconclusive, 1 does not restore") == "rows"
    assert compare("3 partly restores, 3 does not restore", "2 does not restore") == "changed"
    assert compare("1 inconclusive", "not tested (no significant shift)") == "changed"
    assert compare("supported", "supported") == ""
    rows = claim_changes({"harm": _claims("6 does not restore", "a")},
                         {"harm": _claims("2 does not restore", "b")})
    assert [(r["changed"], r["rows_only"]) for r in rows] == [(False, True), (True, False)]
    text = "\n".join(change_lines([("old", "new", rows)]))
    assert "1 of 2 claim verdicts changed, 1 the same verdicts over other rows" in text
    assert "| 6 does not restore | 2 does not restore | *same verdicts, other rows* |" in text


def test_a_row_read_in_both_runs_with_another_verdict_is_a_change_the_tally_hides():
    """"2 does not restore, 1 inconclusive" -> "1 inconclusive, 1 does not restore" names the
    same verdicts, but the one row both runs read went from "does not restore" to
    "inconclusive" (on the 0.5B: the same labels, another BH family): a change, named."""
    before = {"claim": "4. claim", "verdict": "2 does not restore, 1 inconclusive",
              "rows": {"refusal/none": "does not restore", "refusal/t": "does not restore",
                       "s/none": "inconclusive"}}
    after = {"claim": "4. claim", "verdict": "1 inconclusive, 1 does not restore",
             "rows": {"refusal/none": "inconclusive", "refusal/t": "does not restore"}}
    row, = claim_changes({"harm": [before]}, {"harm": [after]})
    assert row["changed"] and not row["rows_only"]
    assert row["moved"] == ["refusal/none: does not restore → inconclusive"]
    assert "**changed** (a row read in both: refusal/none: does not restore → inconclusive)" in "\n".join(
        change_lines([("old", "new", [row])]))
    after["rows"]["refusal/none"] = "does not restore"  # the rows both read agree: only fewer rows
    after["verdict"] = "2 does not restore"
    before["verdict"], before["rows"] = "3 does not restore", {**before["rows"], "s/none": "does not restore"}
    row, = claim_changes({"harm": [before]}, {"harm": [after]})
    assert row["rows_only"] and not row["changed"]


def test_an_outcome_only_one_run_measures_keeps_its_rows_as_changes():
    rows = claim_changes({"nonrefusal": _claims("a")}, {"nonrefusal": _claims("a"),
                                                        "harm": _claims("supported")})
    assert [(r["outcome"], r["before"], r["after"], r["changed"]) for r in rows] == [
        ("nonrefusal", "a", "a", False), ("harm", "not measured", "supported", True)]
    rows = claim_changes({"nonrefusal": _claims("a"), "harm": _claims("b")},
                         {"nonrefusal": _claims("a")})
    assert rows[-1]["outcome"] == "harm" and rows[-1]["after"] == "not measured"


def test_claim_lists_of_different_lengths_are_an_error():
    with pytest.raises(ValueError):
        claim_changes({"harm": _claims("a", "b")}, {"harm": _claims("a")})


def test_findings_against_itself_changes_nothing(finished_run, tmp_path):
    out = tmp_path / "f.md"
    assert main([str(finished_run), "--against", str(finished_run), str(finished_run),
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "## What changed against the previous round" in text
    assert "| **changed** |" not in text
    assert f"--against {finished_run} {finished_run}" in text  # the command names both


def test_against_a_missing_run_is_an_error(finished_run, tmp_path):
    assert main([str(finished_run), "--against", str(tmp_path / "nope"), str(finished_run),
                 "--out", str(tmp_path / "f.md")]) == 2


def test_against_a_run_not_on_the_page_is_an_error(finished_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((finished_run / "config.json").read_text())
    assert main([str(finished_run), "--against", str(finished_run), str(other),
                 "--out", str(tmp_path / "f.md")]) == 2


def test_the_discussion_may_cite_the_previous_rounds_run(finished_run, tmp_path):
    """A number of the run a new one replaces is filled from that run, by its directory's name."""
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(finished_run, old)
    disc = tmp_path / "d.md"
    disc.write_text("Before: {{old-run:mde.nonrefusal}} points.")
    out = tmp_path / "f.md"
    assert main([str(finished_run), "--against", str(old), str(finished_run),
                 "--discussion", str(disc), "--out", str(out)]) == 0
    assert re.search(r"Before: \d+ points\.", out.read_text())
