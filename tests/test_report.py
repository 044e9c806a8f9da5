"""The dashboard in a real headless Chromium: loads offline, no console errors, not blank."""

import shutil
import subprocess

import pytest

from steerlens.report import figures, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,2400"]


def test_figures_rebuild_from_saved_files(finished_run):
    figs = figures(finished_run)
    assert {"overlap", "delta_asr", "scatter", "mitigation", "projections", "selection"} <= set(figs)
    heat = figs["overlap"].data[0]
    assert sorted(heat.y) == ["refusal", "sycophancy"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    from PIL import Image

    path = write_report(finished_run)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                          "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
                          "--virtual-time-budget=5000", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists(), res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line and
               ("Error" in line or "Uncaught" in line)]
    assert not console, console
    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 50, "screenshot is blank"
    # Plotly drew something: many distinct grey levels, not a page of plain text.
    assert len(img.getcolors(maxcolors=256) or range(256)) > 20


def test_findings_generated_from_run(finished_run, tmp_path):
    from steerlens.findings import main

    out = tmp_path / "findings.md"
    assert main([str(finished_run), "--out", str(out), "--no-figures"]) == 0
    text = out.read_text()
    for n in range(1, 7):
        assert f"| {n}. " in text
    # Every claim row has as many cells as its table's header (no unescaped pipes): the
    # at-a-glance table (claim, paper, one model) and the per-run table (claim, paper,
    # measured, verdict).
    counts = sorted(line.replace("\\|", "").count("|") for line in text.splitlines()
                    if line.startswith(("| 1. ", "| 3. ", "| 4. ")))
    assert counts == [4, 4, 4, 5, 5, 5], counts
    assert "## At a glance" in text and "does the vector steer its behaviour" in text


def _content(text: str) -> list[str]:
    """Report lines that carry numbers (figure links and blank lines aside)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("![")]


def test_committed_findings_match_committed_runs(tmp_path, monkeypatch):
    """docs/findings.md is exactly what its own command gives on the committed runs: no drift."""
    import re
    import shlex
    from pathlib import Path

    from steerlens.findings import main

    root = Path(__file__).resolve().parents[1]
    doc = root / "docs" / "findings.md"
    if not doc.exists():
        pytest.skip("docs/findings.md is not generated yet")
    text = doc.read_text()
    args = shlex.split(re.search(r"`python -m steerlens\.findings ([^`]+)`", text).group(1))
    for a in (a for a in args if not a.startswith("--")):  # runs + discussion, copied:
        src = root / a  # summarize() rewrites summary.json, so never in the checkout
        assert src.exists(), f"{a} is named in docs/findings.md but not committed"
        dst = tmp_path / a
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--out", "out.md", "--no-figures"]) == 0
    assert _content((tmp_path / "out.md").read_text()) == _content(text)
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (doc.parent / link).is_file(), link


def test_rejudging_changes_labels_without_touching_the_run(finished_run, tmp_path):
    """summarize(judge=...) re-judges saved completions and leaves summary.json alone."""
    from pathlib import Path

    from steerlens.summary import summarize

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / "summary.json").read_bytes()

    class RefuseAll:
        name = "refuse_all"

        def judge(self, goals, responses):
            return [False] * len(responses)

    s = summarize(Path(run), judge=RefuseAll())
    assert all(r["asr"] == 0 for r in s["rows"])
    assert all(b["false_refusal_rate"] == 1 for b in s["benign"])
    assert (run / "summary.json").read_bytes() == before
