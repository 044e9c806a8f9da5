"""The dashboard as a person uses it: headless Chromium at 1366×768 and full page, no console
errors, every section present and non-empty; figures rebuild from the saved files."""

import html
import json
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


# Measured in the page once plotly has drawn: the page must not scroll sideways; a table wider
# than its container must sit in a scrolling box; a figure fits its container; a figure's title
# fits its width; its legend overlaps no axis tick label.
LAYOUT_JS = """
window.addEventListener('load', () => setTimeout(() => {
  const bad = [], vw = document.documentElement.clientWidth, sw = document.documentElement.scrollWidth;
  const box = e => e.getBoundingClientRect();
  const hit = (a, b) => a.left < b.right - 1 && b.left < a.right - 1
    && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  if (sw > vw + 1) bad.push('page scrolls sideways: ' + sw + ' > ' + vw);
  document.querySelectorAll('table').forEach((t, i) => {
    const par = t.parentElement, scrolls = par.classList.contains('scroll'), name = 'table ' + (t.id || i);
    if (box(t).width > box(par).width + 1 && !scrolls) bad.push(name + ' wider than its container');
    if (box(scrolls ? par : t).right > vw + 1) bad.push(name + ' past the viewport');
  });
  document.querySelectorAll('.fig').forEach(f => {
    const svg = f.querySelector('svg.main-svg'), name = f.id, fb = box(f);
    if (!svg) { bad.push(name + ' not drawn'); return; }
    if (box(svg).width > fb.width + 1 || box(svg).right > vw + 1) bad.push(name + ' too wide');
    f.querySelectorAll('.gtitle').forEach(g => {
      if (box(g).right > fb.right + 1 || box(g).left < fb.left - 1) bad.push(name + ' title cut off');
    });
    const leg = f.querySelector('g.legend');
    if (leg) f.querySelectorAll('g.xtick text, g.ytick text, g.g-xtitle, g.g-ytitle').forEach(x => {
      if (hit(box(leg), box(x))) bad.push(name + ' legend overlaps an axis label');
    });
    f.querySelectorAll('.gtitle').forEach(g => {
      if (leg && hit(box(leg), box(g))) bad.push(name + ' legend overlaps the title');
      f.querySelectorAll('g.g-xtitle, g.g-ytitle').forEach(x => {
        if (hit(box(g), box(x))) bad.push(name + ' axis title overlaps the title');
      });
    });
  });
  const pre = document.createElement('pre'); pre.id = 'layout-check';
  pre.textContent = JSON.stringify([...new Set(bad)]); document.body.appendChild(pre);
}, 1500));
"""


def layout_problems(page: Path, tmp_path: Path) -> list[str]:
    """What overflows or overlaps when `page` is shown at 1366 px (LAYOUT_JS in a copy)."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", f"<script>{LAYOUT_JS}</script></body>"))
    dom = _chromium(["--window-size=1366,768", "--dump-dom", probe.as_uri()], tmp_path)
    found = re.search(r"<pre id=\"layout-check\">(.*?)</pre>", dom.stdout, re.S)
    assert found, "the layout check did not run: " + dom.stderr[-1000:]
    return json.loads(html.unescape(found.group(1)))


def _chromium_shots(page: Path, tmp_path: Path) -> list[Path]:
    """Screenshots at 1366 px: the first screen and the whole page."""
    shots = []
    for name, size in (("laptop", "1366,768"), ("full", "1366,7000")):
        shot = tmp_path / f"{name}.png"
        res = _chromium([f"--window-size={size}", f"--screenshot={shot}", page.as_uri()], tmp_path)
        assert shot.exists(), res.stderr[-2000:]
        shots.append(shot)
    return shots


@needs_chromium
def test_nothing_overflows_or_overlaps_at_1366px(finished_run, tmp_path):
    """At a 1366 px laptop width no table or figure is wider than the viewport or its container
    (a wide table scrolls inside its box), no figure title is cut off, no legend sits on an axis
    label; the check itself catches a table forced wider than the page."""
    page = write_report(finished_run)
    assert layout_problems(page, tmp_path) == []
    wide = tmp_path / "wide.html"
    wide.write_text(page.read_text().replace("<div class=scroll><table id=verdicts>",
                                             "<div><table id=verdicts style='min-width:3000px'>"))
    found = layout_problems(wide, tmp_path)
    assert any("verdicts" in x for x in found), found


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


def test_every_outcome_is_named_and_benign_rows_read_as_false_refusals(finished_run):
    """The page never calls the non-refusal outcome 'jailbroken' or 'ASR' (ASR is harmful
    compliance, the harm judge's); the browser words each label for its outcome, and a benign
    (harmless-prompt) row's refusal is a false refusal, its harm n/a."""
    page = render(finished_run, read_json(finished_run / "summary.json"), load_run_data(finished_run))
    body = page.split("</head>", 1)[1]
    assert "jailbroken" not in body and "ΔASR" not in body
    assert all(body[i - 30:i].endswith(("harmful compliance (", "harmful-compliance rate ("))
               for i in (m.start() for m in re.finditer("ASR", body))), "ASR names only harmful compliance"
    for words in ("did not refuse", "refused (false refusal)", "n/a (benign)", "not harmful"):
        assert words in body
    assert "Δ non-refusal" in body and "non-refusal rate (%)" in body


def test_mitigation_markdown_becomes_html_tables():
    """The mitigation table is shown as an HTML table (header cells, one row per line), never as
    Markdown text."""
    from steerlens.results.report import markdown_html

    md = "# Mitigations\n\nRestores = ...\n\n## attack: none\n\n| a | b |\n|---|---|\n| 1 | x |\n| 2 | y |\n"
    out = markdown_html(md)
    assert out.count("<table class=mitigations>") == 1 and "|" not in out
    assert "<th>a</th><th>b</th>" in out and out.count("<tr>") == 3 and "<h3>attack: none</h3>" in out


def _share(share, lo, hi) -> dict:
    return {"effect": -0.5, "effect_ci": [-0.6, -0.4], "held_effect": -0.5 * (1 - share),
            "held_effect_ci": [-0.3, -0.1], "n": 4, "share": share, "share_ci": [lo, hi]}


def synthetic_mediation(vectors: list[str], attacks: list[str]) -> dict:
    """A mediation.json as `audit.mediation` writes it: per attack each vector's +v and one
    generated null, shares per basis (direction, subspace, polarity) and layer band."""
    bands = {"1": [1], "1-3": [1, 2, 3], "2": [2], "3": [3]}  # as saved: keys sorted

    def rec(kind: str, vector: str, base: float) -> dict:
        per = {b: {band: _share(base + 0.1 * i, base - 0.1, base + 0.2 + 0.1 * i)
                   for i, band in enumerate(bands)} for b in ("direction", "subspace", "polarity")}
        per["direction"]["3"] = {**per["direction"]["3"], "share": None, "share_ci": [None, None],
                                 "undefined": "effect's CI includes 0"}
        return {"kind": kind, "vector": vector, "dose": 2, "generated": True, "shares": per}

    return {"outcome": "first-token refusal score (log-odds of the refusal first tokens)",
            "steering_layer": 1, "bands": bands, "bases": {},
            "attacks": {a: {**{f"{v}@2+v": rec("+v", v, 0.6) for v in vectors},
                            "random@2+r0": rec("random", "random", 0.2)} for a in attacks}}


def test_why_figure_shows_the_mediated_shares_only_with_mediation():
    """Per attack one figure: a bar trace per vector and basis (a bar per band, its interval as
    error bars, the undefined share left out), the nulls' shares as marks; the outcome named on
    the axis and the legend; no figure without mediation.json."""
    from steerlens.results.why import mediation_figures

    assert mediation_figures({}) == {} and mediation_figures({"mediation": {}}) == {}
    figs = mediation_figures({"mediation": synthetic_mediation(["sycophancy", "refusal"], ["none", "aim"])})
    assert set(figs) == {"mediation-none", "mediation-aim"}
    fig = figs["mediation-none"]
    bars = [t for t in fig.data if t.type == "bar"]
    assert {t.name for t in bars} == {f"{v} @2: {b}" for v in ("sycophancy", "refusal") for b in (
        "refusal direction", "refusal subspace", "answer-polarity direction")}
    d = next(t for t in bars if t.name == "sycophancy @2: refusal direction")
    assert list(d.x) == ["1-3", "1", "2", "3"]
    assert list(fig.layout.xaxis.categoryarray) == ["1-3", "1", "2", "3"]  # the whole band first
    assert list(d.y[:3]) == pytest.approx([70, 60, 80]) and d.y[3] is None
    assert list(d.error_y.array) == pytest.approx([20, 20, 20, 0])
    assert list(d.error_y.arrayminus) == pytest.approx([20, 10, 30, 0])
    nulls = [t for t in fig.data if t.type == "scatter"]
    assert {t.name for t in nulls} == {f"generated nulls: {b}" for b in (
        "refusal direction", "refusal subspace", "answer-polarity direction")}
    assert "first-token refusal score" in fig.layout.yaxis.title.text
    assert "first-token refusal score" in fig.layout.legend.title.text


def synthetic_generated(tags: list[str], attacks: list[str]) -> dict:
    """A mediation_generated.json as `audit.generated` writes it: per attack and +v, per
    outcome, the direction's and the subspace's share; harm's subspace share undefined."""
    def rec(base: float) -> dict:
        out = {o: {b: _share(base + 0.1 * i, base - 0.1, base + 0.3)
                   for i, b in enumerate(("direction", "subspace"))} for o in ("nonrefusal", "harm")}
        out["harm"]["subspace"] = {**out["harm"]["subspace"], "share": None,
                                   "share_ci": [None, None], "undefined": "effect's CI includes 0"}
        return out

    return {"clamp_layers": [1, 2, 3], "attacks": {a: {t + "+v": rec(0.4) for t in tags}
                                                   for a in attacks}}


def test_generated_shares_figure_names_the_outcomes_and_leaves_undefined_out():
    """One figure per attack: per +v and basis a bar per generated outcome (named: non-refusal,
    harmful compliance), the interval as error bars, an undefined share drawn as no bar."""
    from steerlens.results.why import generated_figures

    assert generated_figures(None) == {} and generated_figures({}) == {}
    figs = generated_figures(synthetic_generated(["sycophancy@2"], ["none", "aim"]))
    assert set(figs) == {"mediation-generated-none", "mediation-generated-aim"}
    bars = {t.name: t for t in figs["mediation-generated-none"].data if t.type == "bar"}
    assert set(bars) == {"sycophancy@2+v: refusal direction clamped",
                         "sycophancy@2+v: refusal subspace clamped"}
    d, k = bars["sycophancy@2+v: refusal direction clamped"], bars["sycophancy@2+v: refusal subspace clamped"]
    assert list(d.x) == ["non-refusal (Δ generated)", "harmful compliance (Δ generated)"]
    assert list(d.y) == pytest.approx([40, 40])
    assert list(d.error_y.array) == pytest.approx([30, 30])
    assert list(d.error_y.arrayminus) == pytest.approx([10, 10])
    assert k.y[1] is None and list(k.error_y.array)[1] == 0
    assert "layers 1-3" in figs["mediation-generated-none"].layout.title.text


@needs_chromium
def test_why_section_with_mediation_lays_out_at_1366px(finished_run, tmp_path):
    """A run with mediation.json: the Why section leads with the mediated shares (labelled by
    intervention; the projection and cosine labelled as correlations) and still fits 1366 px."""
    from steerlens.results.report import WHY_MEDIATED

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    plain = write_report(run).read_text()
    assert "plot-mediation-" not in plain and "correlations" in plain
    (run / "mediation.json").write_text(json.dumps(synthetic_mediation(["sycophancy", "refusal"],
                                                                       ["none", "refusal_suppression"])))
    (run / "mediation_generated.json").write_text(json.dumps(synthetic_generated(
        ["sycophancy@2"], ["none", "refusal_suppression"])))
    page = write_report(run)
    text = page.read_text()
    assert "plot-mediation-generated-none" in text
    assert html.escape(WHY_MEDIATED) in text
    assert "plot-mediation-none" in text and "plot-mediation-refusal_suppression" in text
    assert text.index("plot-mediation-none") < text.index("plot-projection_layers")
    assert layout_problems(page, tmp_path) == []


def test_the_answer_reads_the_whole_band_whatever_the_saved_key_order():
    from steerlens.results.text import mediation_lines

    lines = mediation_lines({"mediation": synthetic_mediation(["sycophancy"], ["none"])})
    assert "layers 1-3" in lines[0] and "70% [" in lines[1]  # the 1-3 band's share, not layer 1's


def _legend_page(fig, tmp_path: Path, name: str) -> Path:
    """One figure alone in a dashboard-sized cell (620 px), plotly inlined."""
    page = tmp_path / f"{name}.html"
    page.write_text("<html><body><div class=fig id=fig-t style='width:620px'>"
                    + fig.to_html(full_html=False, include_plotlyjs=True) + "</div></body></html>")
    return page


@needs_chromium
def test_a_long_top_legend_gets_room_above_the_plot(tmp_path):
    """A two-line title and a legend of many long names on top: as laid out by default they
    overlap (the check sees it); `fit_top_legend` makes room for both."""
    def fig():
        f = figures._fig("Refusal projection per layer:<br>harmful, harmless and steered activations")
        for i in range(6):
            f.add_scatter(x=[0, 1], y=[i, i + 1], name=f"harmful +corrigible-neutral-HHH-{i} @0.15")
        return f

    before = layout_problems(_legend_page(fig(), tmp_path, "before"), tmp_path)
    assert "fig-t legend overlaps the title" in before
    assert layout_problems(_legend_page(figures.fit_top_legend(fig()), tmp_path, "after"), tmp_path) == []


def test_legend_rows_follow_plotlys_grid():
    """One row when every item fits; else columns as wide as the widest item."""
    assert figures.legend_rows([], 500) == 0
    assert figures.legend_rows(["a", "b"], 500) == 1
    assert figures.legend_rows(["x" * 60] * 3, 500) == 3
    assert figures.legend_rows(["x" * 20] * 6, 500) == 3  # 178 px items: 2 per row


def test_dashboard_reads_a_fix_only_where_the_raw_shift_is_a_verdict():
    """The ⊥ columns say "not read" where the raw +v shows no detectable shift or is not beyond
    its nulls (as the findings and mitigation tables do), and give the verdict otherwise."""
    from steerlens.results import verdicts as V
    from steerlens.results.report import _mitigation_cell

    t = {"delta_non_refusal": 0.01, "q_value": 0.46, "p_value": 0.4, "verdict": "inconclusive"}
    f = {"mitigation": {"perp1": {"nonrefusal": t}}, "verdicts": {"nonrefusal": V.NO_SHIFT}}
    assert "not read (raw +v: no detectable shift)" in _mitigation_cell(f, "perp1")
    f["verdicts"]["nonrefusal"] = V.NOT_BEYOND_NULL
    assert "not read (raw +v: not distinguishable" in _mitigation_cell(f, "perp1")
    f["verdicts"]["nonrefusal"] = V.LOWERS["nonrefusal"]
    assert "inconclusive" in _mitigation_cell(f, "perp1") and "not read" not in _mitigation_cell(f, "perp1")


def test_fix_figure_marks_each_attacks_own_baseline():
    """The raw/⊥ bars of each vector and attack stand beside that attack's unsteered baseline
    (attacks' baselines differ: one line at their mean matched neither)."""
    from steerlens.results.figures import mitigation

    def cell(x):
        return {"non_refusal": x, "ci_low": x - 0.1, "ci_high": x + 0.1}

    s = {"rows": [{"kind": "baseline", "attack": "none", "non_refusal": 0.49},
                  {"kind": "baseline", "attack": "refusal_suppression", "non_refusal": 0.70}],
         "vectors": [{"vector": "v", "dose": 0.15, "attack": a, "plus": cell(0.3), "perp1": cell(0.4)}
                     for a in ("none", "refusal_suppression")]}
    fig = mitigation(s)
    base = next(t for t in fig.data if t.name.startswith("unsteered baseline"))
    assert list(base.y) == [49.0, 70.0]
    assert list(base.x) == ["v @0.15 · none", "v @0.15 · refusal_suppression"]
    assert not fig.layout.shapes  # no single line across attacks
