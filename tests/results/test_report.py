"""The dashboard as a person uses it: headless Chromium at 1366×768 and full page, no console
errors, every section present and non-empty; figures rebuild from the saved files."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from steerlens.results import figures
from steerlens.results.report import SECTIONS, browser_data, render, write_report
from steerlens.results.summary import load_run_data
from steerlens.rundir import read_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="Debian chromium not installed (.ci/run installs it)")


def test_figures_rebuild_from_saved_files(finished_run):
    summary, data = read_json(finished_run / "summary.json"), load_run_data(finished_run)
    figs = figures.figures(summary, data)
    assert {n for _, _, names in SECTIONS if names for n in names} <= set(figs)
    for name, fig in figs.items():
        assert fig.data, f"figure {name} is empty"
    # Projection per layer: harmful, harmless (benign) and steered groups over readout layers.
    names = {t.name for t in figs["projection_layers"].data}
    assert {"harmful", "harmless (benign)"} <= names and len(names) >= 3
    assert set(figs["projection_layers"].data[0].x) == set(summary["refusal"]["readout_layers"])


def test_browser_holds_every_completion_with_its_label(finished_run):
    data = load_run_data(finished_run)
    rows = browser_data(data, {"refusal_string": {f"{a}__{s}": c.get("jailbroken")
                                                  for (a, s), c in data.cells.items()}})
    n = sum(len(c.get("completions") or []) for c in data.cells.values())
    assert len(rows) == n > 0
    assert all(isinstance(r["labels"]["refusal_string"], bool) for r in rows)


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line
            and ("Error" in line or "Uncaught" in line or "error" in line)]


@needs_chromium
def test_dashboard_in_headless_chromium(finished_run, tmp_path):
    from PIL import Image

    path = write_report(finished_run)
    html_text = path.read_text()
    assert html_text.count("plotly.js v") <= 2  # the library is inlined once (its banner)
    dom = _chromium(["--window-size=1366,768", "--dump-dom", path.as_uri()], tmp_path)
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    page = dom.stdout
    for sid, _, names in SECTIONS:
        section = re.search(rf"<section id=\"{sid}\">(.*?)</section>", page, re.S)
        assert section, f"section {sid} missing"
        body = section.group(1)
        if names:  # plotly drew each figure (an svg with data traces)
            assert body.count("class=\"main-svg\"") >= len(names), sid
        else:
            assert body.count("<tr class=") >= 1, "verdict table has no rows"
    completions = re.search(r"<table id=\"completions\">(.*?)</table>", page, re.S).group(1)
    assert completions.count("<tr>") > 1, "the completions browser is empty"
    for name, size in (("laptop", "1366,768"), ("full", "1366,7000")):
        shot = tmp_path / f"{name}.png"
        res = _chromium([f"--window-size={size}", f"--screenshot={shot}", path.as_uri()], tmp_path)
        assert shot.exists(), res.stderr[-2000:]
        img = Image.open(shot).convert("L")
        lo, hi = img.getextrema()
        assert hi - lo > 50, f"{name} screenshot is blank"
        assert len(img.getcolors(maxcolors=4096) or range(4096)) > 20
        shutil.copy(shot, finished_run / f"screenshot-{name}.png")  # for a human to look at


def test_render_needs_only_saved_files(finished_run, tmp_path):
    """The page is a function of the run directory: rebuilt twice, byte-identical."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    a = render(run, read_json(run / "summary.json"), load_run_data(run))
    b = render(run, read_json(run / "summary.json"), load_run_data(run))
    assert a == b and "<table id=verdicts>" in a


def test_cli_rebuilds_and_rejects_an_unfinished_run(finished_run, tmp_path, capsys):
    """`python -m steerlens.results.report RUN`: a finished run gets its page; anything else a one-line
    error with its fix and exit code 2, not a traceback."""
    from steerlens.results.report import main

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main([str(run)]) == 0 and (run / "report.html").is_file()
    (run / "summary.json").unlink()
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "no summary.json" in err and "fix:" in err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
