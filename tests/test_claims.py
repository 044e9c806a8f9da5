"""The committed runs re-read by the current rules: one source of truth for the design's numbers
(mitigations read the summary computed from the cells now, never a stored copy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from steerlens.results.summary import load_run_data, summarize

ROOT = Path(__file__).resolve().parents[1]
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
    stored["design"]["minimum_detectable_delta_asr"] = 0.30
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
