"""The run's dashboard: one offline HTML file, rebuilt from the run's saved files.

Verdicts first (one row per vector, dose and attack, coloured by verdict, numbers always
shown), then why (by intervention when the run has mediation.json: the per-layer-band mediated
shares, `results.why`; by correlation: refusal projection per layer, cosine), whether the mitigation works, the
instruments' checks, and every completion with its judges' labels. plotly.js is inlined once;
no server is needed. `python -m steerlens.results.report RUN` rebuilds it.
"""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path

from steerlens.errors import ArgumentParser, cli_main
from steerlens.results import figures as F
from steerlens.results import verdicts as V
from steerlens.results.summary import RunData, current_summary, load_run_data
from steerlens.results.text import delta_key, mde_parts, points, steered_tokens
from steerlens.results.why import generated_figures, mediation_figures
from steerlens.rundir import atomic_write_text, open_run, read_json
from steerlens.schema import (
    DELTA_KEYS,
    HARM_LABELS,
    JUDGEMENTS_DIR,
    MITIGATIONS_DIR,
    REPORT_FILE,
)

CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1300px;padding:12px 20px;color:#222}
h1{font-size:22px;margin:6px 0} h2{font-size:18px;margin:22px 0 6px;border-bottom:1px solid #ddd}
p.lead{margin:4px 0 10px;color:#444} table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right}
.scroll{max-width:100%;overflow-x:auto} .scroll table{min-width:900px}
tr.v-weakens td.verdict{background:#f8d0d0} tr.v-strengthens td.verdict{background:#cfe0f5}
tr.v-random td.verdict{background:#e6e6e6} tr.v-none td.verdict{background:#f7f7f7}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;margin:6px 0}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:10px} .fig{min-width:0;overflow:hidden}
#browser select{margin-right:10px} #completions td{max-width:640px;white-space:pre-wrap;overflow-wrap:anywhere}
.yes{color:#b00;font-weight:600} .no{color:#06c}
"""

VERDICT_CLASS = {V.RAISES["nonrefusal"]: "v-weakens", V.LOWERS["nonrefusal"]: "v-strengthens",
                 V.NOT_BEYOND_NULL: "v-random", V.TOO_FEW_NULLS: "v-random", V.NO_SHIFT: "v-none"}


def _e(x) -> str:
    return html.escape(str(x))


def _p(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.2g}"


def _int(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.0f}"


def _mean(xs) -> float | None:
    xs = [x for x in xs or [] if x is not None]
    return statistics.fmean(xs) if xs else None


def _cos(x) -> str:
    """A cosine, "n/a" when the run did not record it."""
    return "n/a" if x is None or x != x else f"{x:+.2f}"


def _behaviour_cell(f: dict) -> str:
    eff = (f.get("behaviour") or {}).get("effect") or {}
    up, base = eff.get(f"{f['dose']:+g}"), eff.get("unsteered")
    if not up or not base:
        return "n/a"
    steers = (f["behaviour"].get("steers") or {}).get(f"{abs(f['dose']):g}")
    return (f"{base['mean']:.2f} → {up['mean']:.2f} (p {_p(up['p_value'])})"
            + ("" if steers else " <b>not shown to steer</b>"))


def _benign_cell(summary: dict, f: dict) -> str:
    by = {b["setting"]: b for b in summary.get("benign", [])}
    b, base = by.get(f["plus"]["setting"]), by.get("baseline")
    if not b or not base:
        return "n/a"
    return f"{100 * base['false_refusal_rate']:.0f}% → {100 * b['false_refusal_rate']:.0f}%"


def _mitigation_cell(f: dict, key: str) -> str:
    m = f["mitigation"].get(key) or {}
    if m.get("duplicate_of"):
        return "= ⊥1 (k = 1)"
    parts = [f"{SHORT[o]}: {points(t.get(DELTA_KEYS[o]))} (q {_p(t.get('q_value'))}; "
             f"{_e(V.fix_text(t.get('verdict', ''), f.get('verdicts', {}).get(o)))})"
             for o, t in m.items() if isinstance(t, dict) and "p_value" in t]
    return "<br>".join(parts) or "n/a"


SHORT = {"nonrefusal": "non-refusal", "harm": "harmful compliance"}


def _harm_cell(f: dict) -> str:
    h = f["plus"].get("harm") or {}
    if delta_key(h) is None:
        return "n/a"
    n = f.get("evidence", {}).get("harm", {}).get("null") or {}
    return (f"{points(h[delta_key(h)])} [{points(h['delta_ci_low'])}, {points(h['delta_ci_high'])}] "
            f"q {_p(h.get('q_value'))} ({n.get('count', 0)} of {n.get('n_null', 0)} nulls as extreme)"
            f"<br>harmful compliance: {_e(f.get('verdict_harm'))}")


def verdict_table(summary: dict) -> str:
    """One row per vector, dose and attack: the answer, why, the mitigation, the checks."""
    head = ("<tr><th>vector</th><th>dose</th><th>attack</th><th>verdict on non-refusal</th>"
            "<th>Δ non-refusal pts [95% CI] (null %, n generated)</th><th>q (non-refusal)</th>"
            "<th>Δ harmful compliance (ASR) pts [95% CI], q, nulls; verdict</th>"
            "<th>null % (first-token refusal score)</th><th>cos(v, r)</th><th>cos(v, polarity)</th>"
            "<th>cos(v, letter)</th>"
            "<th>in subspace</th><th>refusal-projection shift (null %)</th>"
            "<th>⊥1: Δ vs baseline pts (q raw vs fixed; verdict)</th>"
            "<th>⊥k: Δ vs baseline pts (q raw vs fixed; verdict)</th><th>p(matching) unsteered → steered</th>"
            "<th>false refusals on benign prompts, unsteered → steered</th></tr>")
    rows = []
    for f in summary["vectors"]:
        p, ov = f["plus"], f.get("overlap") or {}
        ci = (f"{points(p.get(DELTA_KEYS['nonrefusal']))} [{points(p.get('delta_ci_low'))}, "
              f"{points(p.get('delta_ci_high'))}] ({_int(f.get('null_percentile_delta_non_refusal'))}, "
              f"{f.get('n_null_generated', 0)})")
        shift = _mean((p.get("projection_shift") or [])[1:] or p.get("projection_shift"))
        rows.append(
            f"<tr class='{VERDICT_CLASS.get(f['verdict'], '')}'><td>{_e(f['vector'])}</td>"
            f"<td class=num>{f['dose']:g}</td><td>{_e(f['attack'])}</td>"
            f"<td class=verdict>{_e(f['verdict'])}</td><td class=num>{ci}</td>"
            f"<td class=num>{_p(p.get('q_value'))}</td><td>{_harm_cell(f)}</td>"
            f"<td class=num>{_int(f['null_percentile_screen'])}</td>"
            f"<td class=num>{ov.get('cosine', float('nan')):+.2f}</td>"
            f"<td class=num>{_cos(ov.get('polarity_cos'))}</td><td class=num>{_cos(ov.get('letter_cos'))}</td>"
            f"<td class=num>{ov.get('fraction_in_subspace', float('nan')):.2f}</td>"
            f"<td class=num>{'n/a' if shift is None else f'{shift:+.2f}'} "
            f"({_int(f.get('null_percentile_projection'))})</td>"
            f"<td>{_mitigation_cell(f, 'perp1')}</td><td>{_mitigation_cell(f, 'perpk')}</td>"
            f"<td>{_behaviour_cell(f)}</td><td class=num>{_benign_cell(summary, f)}</td></tr>")
    return f"<div class=scroll><table id=verdicts>{head}{''.join(rows)}</table></div>"


def design_block(summary: dict) -> str:
    """Design, power, and the instruments' checks (warnings stand out)."""
    d = summary["design"]
    out = [f"<p class=lead>{d['n_goals']} JailbreakBench goals stratified over "
           f"{len(d['categories'])} categories; attacks {_e(', '.join(d['attacks'] or []))}; "
           f"judge <b>{_e(summary.get('judge'))}</b>; dose unit {_e(d['dose_unit'])}; "
           f"steering {_e(d['steered_positions'])}{_e(steered_tokens(d))}. <b>Smallest shift this design detects</b> "
           f"(McNemar score test, α = {d['alpha']}, 80% power, each outcome's own background flips): "
           f"{_e(mde_parts(d))}; a verdict also needs the shift beyond ≥ {d.get('nulls_needed', 20)} "
           f"generated nulls. Outcomes: {_e(', '.join(V.OUTCOME_NAMES[o] for o in d.get('outcomes', [])))}. "
           f"Benjamini–Hochberg q-values within families: {summary.get('n_tests_bh', 0)} primary "
           "hypotheses (+v on each outcome); −v, ⊥ and fixes in their own family; instrument checks "
           "not adjusted (docs/statistics.md).</p>"]
    fb = (summary.get("refusal") or {}).get("fallback")
    if fb:
        out.append(f"<div class=warn>No refusal-direction candidate passed Arditi's filters; "
                   f"kept by the fallback rule: {_e(fb)}.</div>")
    for kind, v in (summary.get("validation") or {}).items():
        if not v["passes"]:
            out.append(f"<div class=warn>Refusal check on JBB fails: {_e(kind)} moves the non-refusal rate by "
                       f"{points(v.get(DELTA_KEYS['nonrefusal']))} points (p {_p(v['p_value'])}).</div>")
    for f in summary["vectors"]:
        if (f.get("behaviour") or {}).get("steers", {}).get(f"{abs(f['dose']):g}") is False:
            out.append(f"<div class=warn>{_e(f['vector'])} is not shown to move its own behaviour at dose "
                       f"{f['dose']:g} (the behaviour check fails): its shifts of non-refusal and harmful "
                       "compliance may not be a behaviour's effect.</div>")
    return "".join(dict.fromkeys(out))


HARM_JUDGE = Path(HARM_LABELS).stem  # the harm judge's labels in judgements/


def judge_outcome(name: str) -> str:
    """The outcome a saved judge labels: the harm judge's file harmful compliance, every other
    judge non-refusal (their labels share the cells' non-refusal key)."""
    return "harm" if name == HARM_JUDGE else "nonrefusal"


def judges_block(run: Path, data: RunData) -> tuple[str, dict]:
    """Each saved judge's agreement with the run's refusal judge, and labels for the browser."""
    labels = {data.config.get("judge", "run"): {f"{a}__{s}": c.get("jailbroken")
                                                  for (a, s), c in data.cells.items()}}
    rows = []
    for path in sorted((run / JUDGEMENTS_DIR).glob("*.json")) if (run / JUDGEMENTS_DIR).is_dir() else []:
        j = read_json(path)
        labels[path.stem] = {k: c["jailbroken"] for k, c in j["cells"].items()}
        ov, o = j["overall"], judge_outcome(path.stem)
        rows.append(f"<tr><td>{_e(path.stem)}</td><td>{SHORT[o]}</td><td class=num>{ov['n']}</td>"
                    f"<td class=num>{_p(ov['agreement'])}</td><td class=num>{_p(ov['kappa'])}</td></tr>")
    if not rows:
        return ("<p>Only the run's own judge. Add others with <code>python -m steerlens.judges.rejudge "
                "RUN --judge NAME</code>; they appear here and in the browser.</p>", labels)
    return ("<p class=lead>Agreement of each judge's labels with the run's refusal judge "
            "(did not refuse / refused); for the harm judge this compares two outcomes (harmful "
            "vs did not refuse), not two readings of one.</p>"
            "<div class=scroll><table><tr><th>judge</th><th>outcome it labels</th><th>completions</th>"
            "<th>agreement with the run's refusal judge</th><th>Cohen's κ</th></tr>"
            f"{''.join(rows)}</table></div>", labels)


def browser_data(data: RunData, labels: dict) -> list[dict]:
    """Every generated completion with its cell's coordinates and each judge's label."""
    out = []
    for (attack, setting), c in sorted(data.cells.items()):
        for i, text in enumerate(c.get("completions") or []):
            lab = {j: (v.get(f"{attack}__{setting}") or [None] * (i + 1))[i] for j, v in labels.items()}
            out.append({"attack": attack, "setting": setting, "vector": c.get("vector") or "",
                        "kind": c.get("kind"), "goal": c["goals"][i], "completion": text,
                        "labels": lab})
    return out


BROWSER_JS = """
const rows = JSON.parse(document.getElementById('cells-data').textContent);
const outcome = JSON.parse(document.getElementById('judge-outcomes').textContent);
const keys = ['vector', 'kind', 'setting', 'attack'];
const judges = [...new Set(rows.flatMap(r => Object.keys(r.labels)))];
const isHarm = j => outcome[j] === 'harm';
function fill(id, values) {
  const s = document.getElementById(id);
  for (const v of ['(all)', ...values]) { const o = document.createElement('option'); o.text = v; s.add(o); }
  s.onchange = render;
}
keys.forEach(k => fill('f-' + k, [...new Set(rows.map(r => r[k]))].sort()));
fill('f-judge', judges);
fill('f-label', ['did not refuse', 'refused', 'harmful', 'not harmful']);
function esc(t) { const d = document.createElement('div'); d.textContent = t; return d.innerHTML; }
// a label in words: benign (harmless-prompt) rows have no harm label, and a refusal there is false
function word(v, j, r) {
  if (v === null || v === undefined) return '';
  const benign = r.attack === 'benign';
  if (isHarm(j)) return benign ? '<span>n/a (benign)</span>' : (v ? '<span class=yes>harmful</span>' : '<span class=no>not harmful</span>');
  if (v) return '<span class=' + (benign ? 'no' : 'yes') + '>did not refuse</span>';
  return benign ? '<span class=yes>refused (false refusal)</span>' : '<span class=no>refused</span>';
}
function matches(r, j, want) {
  const v = r.labels[j];
  if (v === null || v === undefined) return false;
  if (want === 'harmful' || want === 'not harmful') return isHarm(j) && r.attack !== 'benign' && v === (want === 'harmful');
  return !isHarm(j) && v === (want === 'did not refuse');
}
function render() {
  const want = Object.fromEntries([...keys, 'judge', 'label'].map(k => [k, document.getElementById('f-' + k).value]));
  const shown = judges.filter(j => want.judge === '(all)' || j === want.judge);
  const body = rows.filter(r => keys.every(k => want[k] === '(all)' || r[k] === want[k]))
    .filter(r => want.label === '(all)' || shown.some(j => matches(r, j, want.label)));
  const head = '<tr><th>attack</th><th>setting</th><th>goal</th><th>completion</th>' +
    shown.map(j => '<th>' + esc(j) + (isHarm(j) ? ' (harm judge)' : ' (refusal judge)') + '</th>').join('') + '</tr>';
  document.getElementById('completions').innerHTML = head + body.slice(0, 400).map(r =>
    '<tr><td>' + esc(r.attack) + '</td><td>' + esc(r.setting) + '</td><td>' + esc(r.goal) +
    '</td><td>' + esc(r.completion) + '</td>' + shown.map(j => '<td>' + word(r.labels[j], j, r) + '</td>').join('') + '</tr>').join('');
  document.getElementById('count').textContent = body.length + ' completions' + (body.length > 400 ? ' (first 400 shown)' : '');
}
render();
"""


def _browser(data: RunData, labels: dict) -> str:
    payload = json.dumps(browser_data(data, labels)).replace("</", "<\\/")
    outcomes = json.dumps({j: judge_outcome(j) for j in labels})
    selects = "".join(f"<label>{k} <select id='f-{k}'></select></label>"
                      for k in ("vector", "kind", "setting", "attack", "judge", "label"))
    return ("<p class=lead>Benign rows are harmless prompts: a refusal there is a false refusal, "
            "and harm does not apply (n/a (benign)).</p>"
            f"<div id=browser>{selects} <span id=count></span></div>"
            f"<div class=scroll><table id=completions></table></div>"
            f"<script type='application/json' id='cells-data'>{payload}</script>"
            f"<script type='application/json' id='judge-outcomes'>{outcomes}</script>"
            f"<script>{BROWSER_JS}</script>")


def _fig(figs: dict, name: str) -> str:
    return (f"<div class=fig id='fig-{name}'>"
            + F.fit_top_legend(figs[name]).to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                                 config={"responsive": True, "displayModeBar": False})
            + "</div>")


SECTIONS = (
    ("answer", "Does the vector weaken refusals (non-refusal) or raise harmful compliance (ASR)?", None),
    ("null", "Against the null: random and label-shuffled directions of the same norm",
     ("delta_non_refusal", "screen_null")),
    ("projection", "Why: refusal projection and cosine (correlations, read after steering)",
     ("projection_layers", "projection_shift", "cosine")),
    ("mitigation", "Does the fix work?", ("mitigation",)),
    ("instruments", "Instruments: does each vector steer; is the refusal direction valid",
     ("behaviour", "validation", "selection", "subspace_k")),
)
# The "Why" section's title when the run has mediation.json: the intervention first.
WHY_MEDIATED = ("Why: by intervention (share of the first-token refusal score effect mediated per "
                "layer band) and by correlation (refusal projection, cosine)")
WHY_GENERATED = ("Why: by intervention (share of the generated outcomes' effect held back by the "
                 "clamp) and by correlation (refusal projection, cosine)")


def fixes_block(run: Path) -> str:
    """What fixes it, at what cost (`python -m steerlens.audit.mitigate RUN`): per mitigation
    run (`mitigations/`, `mitigations-NAME/`) the Pareto view per attack and outcome, the
    clamps' generated shares, and the table; empty when the run has no mitigations."""
    from steerlens.results.mitigations import mitigation_dirs

    return "".join(_fixes_section(run, d) for d in mitigation_dirs(run))


def _fixes_section(run: Path, into: str) -> str:
    from steerlens.results.mitigations import format_mitigations, summarize_mitigations

    m = summarize_mitigations(run, into)  # from the cells under the current rules, never a stored copy
    tag = "" if into == MITIGATIONS_DIR else f"{into}-"
    figs = {f"{tag}pareto-{a}-{o}": F.pareto(m, a, o) for a in m["attacks"] for o in V.OUTCOMES}
    # prefixed even for RUN/mitigations: the Why section draws the run's own generated shares
    figs.update({f"{into}-{k}": f for k, f in generated_figures(m.get("mediation_generated")).items()})
    grid = "".join(_fig(figs, n) for n in figs)
    title = "What fixes it, at what cost" + ("" if not tag else f" ({into}/)")
    sid = "fixes" if not tag else f"fixes-{into}"
    return (f"<section id='{sid}'><h2>{_e(title)}</h2><div class=grid2>{grid}</div>"
            f"{markdown_html(format_mitigations(m))}</section>")


def _md_row(line: str, cell: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return "<tr>" + "".join(f"<{cell}>{_e(c)}</{cell}>" for c in cells) + "</tr>"


def markdown_html(text: str) -> str:
    """The mitigation table's Markdown (headings, paragraphs, pipe tables) as HTML, each table
    scrolling inside its container."""
    out, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):  # the header's separator row carries nothing
                table.append(_md_row(line, "th" if not table else "td"))
            continue
        if table:
            out.append(f"<div class=scroll><table class=mitigations>{''.join(table)}</table></div>")
            table = []
        if line.startswith("#"):
            out.append(f"<h3>{_e(line.lstrip('#').strip())}</h3>")
        elif line.strip():
            out.append(f"<p class=lead>{_e(line)}</p>")
    return "".join(out)


def render(run: Path, summary: dict, data: RunData) -> str:
    """The whole page as a string."""
    from plotly.offline import get_plotlyjs

    figs = F.figures(summary, data)
    why = {**mediation_figures(summary),
           **generated_figures((summary.get("mediation") or {}).get("generated"))}
    figs.update(why)
    judges_html, labels = judges_block(run, data)
    parts = [f"<h1>steerlens audit: {_e(data.config.get('model'))}</h1>"]
    for sid, title, names in SECTIONS:
        if sid == "projection" and why:
            first_token = any(n.startswith("mediation-") and "generated" not in n for n in why)
            title, names = (WHY_MEDIATED if first_token else WHY_GENERATED), (*why, *names)
        inner = (verdict_table(summary) + design_block(summary)) if names is None else (
            f"<div class=grid2>{''.join(_fig(figs, n) for n in names)}</div>")
        parts.append(f"<section id='{sid}'><h2>{_e(title)}</h2>{inner}</section>")
    parts.append(fixes_block(run))
    parts.append(f"<section id='judges'><h2>Judges</h2>{judges_html}</section>")
    parts.append(f"<section id='completions-browser'><h2>Completions</h2>{_browser(data, labels)}</section>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><meta name=viewport "
            "content='width=device-width'><title>steerlens audit</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            + "".join(parts) + "</body></html>")


def write_report(run: str | Path) -> Path:
    """Write RUN/report.html from the run's summary (with any later harm labels) and cells."""
    run = Path(run)
    page = render(run, current_summary(run), load_run_data(run))
    path = run / REPORT_FILE
    atomic_write_text(path, page)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: rebuild RUN/report.html; a directory without a finished run is a one-line error."""
    p = ArgumentParser(prog="python -m steerlens.results.report", description=__doc__.split("\n")[0])
    p.add_argument("run", help="run directory of a finished audit (its --out)")
    args = p.parse_args(argv)
    return cli_main(lambda: write_report(open_run(args.run).root), str)


if __name__ == "__main__":
    raise SystemExit(main())
