"""The vector-library analysis (claim 3 with the vector as the unit), from saved summaries only.

Li et al. 2026's claim 3: a vector's ΔASR follows its overlap with the refusal direction (they
regress the slope of ASR over the multiplier on cosine, R² ≥ 0.85 above 3B). Here, over every
real vector of the study's runs (one point each):
- each outcome's shift at the audited dose (Δ non-refusal, Δ harmful compliance, +v against
  the baseline on the same goals) against the cosine with the refusal direction at the steering
  layer and against the refusal-projection shift at the later layers (Pearson r, R², two-sided
  Monte Carlo permutation p, (k + 1) / (N + 1)); which predicts better: partial correlations,
  each controlling for the other (Freedman–Lane permutation); over all vectors, the vectors
  that steer their behaviour, and the 20 CAA vectors alone (one per behaviour: the method
  vectors share their behaviour's pair activations, so they are not independent units);
- the screened dose-response slope (first-token refusal score over the screened and audited
  doses, least squares through the unsteered point) against the same two predictors;
- real vectors against nulls of the same kind: a two-sample permutation test on |Δ| (real vs
  label-shuffled, covariance, prompt-pair, and isotropic random, each and pooled);
- by method: Kruskal–Wallis on Δ over every vector, Friedman over the behaviours that have every
  method (the behaviour as block);
- the layer scan: per layer, the mean and largest |shift| of the refusal score under isotropic
  random directions.

The rules were fixed before the study ran (docs/library.md): α = 0.05, two-sided, 20,000
permutations with seed 0, no outlier removal, every real vector included whether it steers its
behaviour or not (the subset that steers is reported beside it).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from scipy import stats

from steerlens.results.summary import NULL_KINDS, read_summary
from steerlens.rundir import read_json
from steerlens.schema import DELTA_KEYS, LIBRARY_FILE, LIBRARY_PAGE, LIBRARY_TEXT, SUMMARY_FILE

OUTCOMES = {"nonrefusal": "Δ non-refusal", "harm": "Δ harmful compliance (ASR)"}
SAME_KIND = ("shuffled", "covariance", "pair_diff")
N_PERM = 20000


def _outcome(row: dict, outcome: str) -> float | None:
    g = row if outcome == "nonrefusal" else row.get("harm", {})
    return g.get(DELTA_KEYS[outcome])


def _later(shift: list[float]) -> float:
    """Mean refusal-projection shift over the readout layers after the steering layer (the
    first readout layer is the steering layer itself, where the push lands)."""
    xs = shift[1:] or shift
    return statistics.fmean(xs) if xs else float("nan")


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope through the origin (the unsteered point): Σ d·y / Σ d²."""
    den = sum(d * d for d, _ in points)
    return sum(d * y for d, y in points) / den if den else float("nan")


def _screens(rows: list[dict]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Per (attack, vector) the (dose, refusal-score shift) points of +v, screened or not."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r["kind"] in ("+v", "+v_screen") and r.get("refusal_score_shift") is not None:
            out.setdefault((r["attack"], r["vector"]), []).append((r["dose"], r["refusal_score_shift"]))
    return out


def _method(name: str) -> str:
    return name.split(":", 1)[1] if ":" in name else "mean_difference"


def vector_units(summary: dict, run: str) -> list[dict]:
    """One record per real vector of a run: its predictors and its outcomes."""
    screens = _screens(summary["rows"])
    out = []
    for f in summary["vectors"]:
        plus, name = f["plus"], f["vector"]
        beh = f.get("behaviour") or {}
        steers = beh.get("steers", {})
        out.append({"vector": name, "run": run, "behaviour": name.split(":", 1)[0],
                    "method": _method(name), "dose": f["dose"], "attack": f["attack"],
                    "cosine": f["overlap"].get("cosine"),
                    "projection_shift": _later(plus.get("projection_shift", [])),
                    "refusal_score_shift": plus.get("refusal_score_shift"),
                    "screen_slope": _slope(screens.get((f["attack"], name), [])),
                    "nonrefusal": _outcome(plus, "nonrefusal"), "harm": _outcome(plus, "harm"),
                    "steers": bool(steers) and all(steers.values())})
    return out


def null_units(summary: dict, run: str) -> list[dict]:
    """The generated null cells of a run: kind, outcomes, projection shift."""
    return [{"setting": r["setting"], "attack": r["attack"], "run": run, "kind": r["kind"],
             "projection_shift": _later(r.get("projection_shift", [])),
             "refusal_score_shift": r.get("refusal_score_shift"),
             "nonrefusal": _outcome(r, "nonrefusal"), "harm": _outcome(r, "harm")}
            for r in summary["rows"] if r["kind"] in NULL_KINDS and DELTA_KEYS["nonrefusal"] in r]


def _perm_corr(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Pearson r with a two-sided Monte Carlo permutation p, (k + 1) / (N + 1), and the slope."""
    r = float(np.corrcoef(x, y)[0, 1])
    rng = np.random.default_rng(seed)
    xs = (x - x.mean()) / x.std()
    perms = np.array([rng.permutation(len(y)) for _ in range(N_PERM)])
    ys = (y[perms] - y.mean()) / y.std()
    k = int((np.abs((ys * xs).mean(axis=1)) >= abs(r) - 1e-12).sum())
    return {"r": r, "r2": r * r, "p_value": (k + 1) / (N_PERM + 1), "n": len(x),
            "slope": float(np.polyfit(x, y, 1)[0])}


def _finite(*cols) -> np.ndarray:
    m = np.array([row for row in zip(*cols) if None not in row], float).reshape(-1, len(cols))
    return m[np.isfinite(m).all(1)]


def _corr(x: list, y: list) -> dict:
    m = _finite(x, y)
    if len(m) < 3 or np.ptp(m[:, 0]) == 0 or np.ptp(m[:, 1]) == 0:
        return {"r": float("nan"), "p_value": float("nan"), "n": len(m)}
    return _perm_corr(m[:, 0], m[:, 1])


def _residual(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """y less its least-squares fit on z (with intercept)."""
    a = np.column_stack([np.ones_like(z), z])
    return y - a @ np.linalg.lstsq(a, y, rcond=None)[0]


def partial(x: list, y: list, control: list, seed: int = 0) -> dict:
    """Partial correlation of y with x given `control` (the correlation of their residuals on
    it), with Freedman–Lane's permutation p: the residuals of y on the control are permuted and
    added back to its fitted values, and the partial r recomputed; (k + 1) / (N + 1)."""
    m = _finite(x, y, control)
    if len(m) < 4 or np.ptp(m[:, 0]) == 0 or np.ptp(m[:, 1]) == 0:
        return {"r": float("nan"), "p_value": float("nan"), "n": len(m)}
    xr, z = _residual(m[:, 0], m[:, 2]), m[:, 2]
    ry = _residual(m[:, 1], z)
    r = float(np.corrcoef(xr, ry)[0, 1])
    # residualising fitted + permuted residuals on z leaves R @ ry[perm] (R fitted = 0)
    a = np.column_stack([np.ones_like(z), z])
    resid_maker = np.eye(len(z)) - a @ np.linalg.pinv(a)
    rng = np.random.default_rng(seed)
    rp = ry[np.array([rng.permutation(len(ry)) for _ in range(N_PERM)])] @ resid_maker.T
    rp = (rp - rp.mean(1, keepdims=True)) / rp.std(1, keepdims=True)
    rs = (rp * ((xr - xr.mean()) / xr.std())).mean(1)
    k = int((np.abs(rs) >= abs(r) - 1e-12).sum())
    return {"r": r, "r2": r * r, "p_value": (k + 1) / (N_PERM + 1), "n": len(m),
            "method": "Freedman-Lane"}


def predictors(units: list[dict], y_key: str) -> dict:
    """y against cosine and against projection shift, and each given the other."""
    y = [u[y_key] for u in units]
    cos, proj = [u["cosine"] for u in units], [u["projection_shift"] for u in units]
    return {"cosine": _corr(cos, y), "projection_shift": _corr(proj, y),
            "cosine_given_projection": partial(cos, y, proj),
            "projection_given_cosine": partial(proj, y, cos)}


def two_sample(real: list[float], null: list[float]) -> dict:
    """Two-sided permutation test of mean |Δ| real − mean |Δ| null."""
    a = np.abs([x for x in real if x is not None], dtype=float)
    b = np.abs([x for x in null if x is not None], dtype=float)
    if len(a) < 2 or len(b) < 2:
        return {"n_real": len(a), "n_null": len(b), "p_value": float("nan")}
    res = stats.permutation_test((a, b), lambda u, v: np.mean(u) - np.mean(v),
                                 permutation_type="independent", n_resamples=N_PERM,
                                 alternative="two-sided", random_state=0)
    return {"n_real": len(a), "n_null": len(b), "mean_abs_real": float(a.mean()),
            "mean_abs_null": float(b.mean()), "difference": float(res.statistic),
            "p_value": float(res.pvalue)}


def real_vs_null(units: list[dict], nulls: list[dict], outcome: str) -> dict:
    real = [u[outcome] for u in units]
    groups = {k: [n[outcome] for n in nulls if n["kind"] == k] for k in NULL_KINDS}
    groups["same_kind"] = [n[outcome] for n in nulls if n["kind"] in SAME_KIND]
    return {k: two_sample(real, v) for k, v in groups.items() if v}


def by_method(units: list[dict], outcome: str) -> dict:
    """Per method the mean Δ; Kruskal–Wallis over all vectors; Friedman over the behaviours
    that have every method."""
    methods = sorted({u["method"] for u in units})
    vals = {m: [u[outcome] for u in units if u["method"] == m and u[outcome] is not None]
            for m in methods}
    out = {"mean": {m: float(np.mean(v)) for m, v in vals.items() if v},
           "n": {m: len(v) for m, v in vals.items()}}
    groups = [v for v in vals.values() if len(v) >= 2]
    if len(groups) >= 2 and len({x for g in groups for x in g}) > 1:
        out["kruskal_p"] = float(stats.kruskal(*groups).pvalue)
    full = [b for b in {u["behaviour"] for u in units}
            if {u["method"] for u in units if u["behaviour"] == b} == set(methods)]
    if len(methods) >= 3 and len(full) >= 2:
        table = {(u["behaviour"], u["method"]): u[outcome] for u in units}
        cols = [[table[(b, m)] for b in sorted(full)] for m in methods]
        if None not in {x for c in cols for x in c} and len({x for c in cols for x in c}) > 1:
            out["friedman_p"] = float(stats.friedmanchisquare(*cols).pvalue)
        out["friedman_behaviours"] = sorted(full)
    return out


def scan_summary(scan: dict) -> dict:
    per = {int(k): v for k, v in scan["shift"].items()}
    mean_abs = {k: float(np.mean(np.abs(v))) for k, v in per.items()}
    worst = max(mean_abs, key=mean_abs.get)
    return {"mean_abs_shift": mean_abs, "max_abs_shift": {k: float(np.max(np.abs(v)))
                                                          for k, v in per.items()},
            "mean_shift": {k: float(np.mean(v)) for k, v in per.items()},
            "most_fragile_layer": worst, "dose": scan["dose"], "n_directions": scan["n_directions"]}


def analyse(runs: list[Path], scan: Path | None = None) -> dict:
    """The whole analysis over the study's run directories (their summary.json files); a
    unit is a vector under one attack (the study audits one, `none`)."""
    units, nulls, seen = [], [], set()
    for run in runs:
        s = read_summary(Path(run) / SUMMARY_FILE)  # old keys mapped to the names written now
        units += vector_units(s, Path(run).name)
        for n in null_units(s, Path(run).name):
            if (n["attack"], n["setting"]) not in seen:  # model-level nulls: the same cells in every run
                seen.add((n["attack"], n["setting"]))
                nulls.append(n)
    out = {"n_vectors": len(units), "n_steering": sum(u["steers"] for u in units),
           "vectors": units, "nulls": nulls, "outcomes": {}}
    steering = [u for u in units if u["steers"]]
    # the 20 CAA vectors: one per behaviour, no two sharing pair activations
    caa = [u for u in units if u["method"] == "mean_difference"]
    for o in OUTCOMES:
        out["outcomes"][o] = {"all": predictors(units, o), "steering_only": predictors(steering, o),
                              "caa_only": predictors(caa, o),
                              "real_vs_null": real_vs_null(units, nulls, o),
                              "by_method": by_method(units, o)}
    out["screen_slope"] = predictors(units, "screen_slope")
    out["screen_shift"] = predictors(units, "refusal_score_shift")
    if scan is not None and Path(scan).exists():
        out["layer_scan"] = scan_summary(read_json(scan))
    return out


def _fmt_corr(c: dict) -> str:
    if not np.isfinite(c.get("r", float("nan"))):
        return f"n={c.get('n', 0)}: —"
    return f"r={c['r']:+.2f} R²={c['r']**2:.2f} p={c['p_value']:.3g} (n={c['n']})"


def _fmt_null(t: dict) -> str:
    if not np.isfinite(t.get("p_value", float("nan"))):
        return "—"
    return (f"mean |Δ| real {100 * t['mean_abs_real']:.1f} vs null {100 * t['mean_abs_null']:.1f} pts, "
            f"p={t['p_value']:.3g} ({t['n_real']} vs {t['n_null']})")


def format_analysis(a: dict) -> str:
    """The analysis as Markdown: predictors per outcome, real vs null, methods, layer scan."""
    lines = [f"# Vector library: {a['n_vectors']} real vectors "
             f"({a['n_steering']} steer their own behaviour at the audited dose)", ""]
    for o, label in OUTCOMES.items():
        r = a["outcomes"][o]
        lines += [f"## {label} at the audited dose", "",
                  "| predictor | all vectors | steering vectors only | CAA vectors only |",
                  "|---|---|---|---|"]
        for k in ("cosine", "projection_shift", "cosine_given_projection", "projection_given_cosine"):
            lines.append(f"| {k.replace('_', ' ')} | {_fmt_corr(r['all'][k])} | "
                         f"{_fmt_corr(r['steering_only'][k])} | {_fmt_corr(r['caa_only'][k])} |")
        lines += ["", "Real vectors against generated nulls (two-sample permutation on |Δ|):", ""]
        lines += [f"- {k}: {_fmt_null(t)}" for k, t in r["real_vs_null"].items()]
        m = r["by_method"]
        means = ", ".join(f"{k} {100 * v:+.1f} (n={m['n'][k]})" for k, v in m["mean"].items())
        kw, fr = m.get("kruskal_p", float("nan")), m.get("friedman_p", float("nan"))
        lines += ["", f"By method, mean Δ in points: {means}; Kruskal–Wallis p={kw:.3g}; "
                  f"Friedman p={fr:.3g} over {', '.join(m.get('friedman_behaviours', [])) or '—'}", ""]
    lines += ["## Screened dose-response (first-token refusal score)", "",
              f"- slope against cosine: {_fmt_corr(a['screen_slope']['cosine'])}",
              f"- slope against projection shift: {_fmt_corr(a['screen_slope']['projection_shift'])}",
              f"- shift at the audited dose against cosine: {_fmt_corr(a['screen_shift']['cosine'])}", ""]
    if "layer_scan" in a:
        s = a["layer_scan"]
        row = " ".join(f"{k}:{v:.2f}" for k, v in sorted(s["mean_abs_shift"].items()))
        lines += ["## Layer scan (isotropic random directions, mean |refusal-score shift|)", "",
                  f"dose {s['dose']} of each layer's residual norm, {s['n_directions']} directions: "
                  f"{row}; most fragile layer {s['most_fragile_layer']}", ""]
    return "\n".join(lines)


def library_page(a: dict) -> str:
    """An offline HTML page: the table and the scatter plots across vectors, the layer scan."""
    import html

    from plotly.offline import get_plotlyjs

    from steerlens.results import figures as F

    figs = [F.library_scatter(a, o, x) for o in OUTCOMES for x in ("cosine", "projection_shift")
            if a["outcomes"][o]["all"][x].get("n", 0)]
    if "layer_scan" in a:
        figs.append(F.layer_scan(a))
    body = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>steerlens vector library"
            f"</title><script>{get_plotlyjs()}</script></head><body style='max-width:1300px;"
            "margin:auto;font-family:system-ui'>"
            f"<pre style='white-space:pre-wrap'>{html.escape(format_analysis(a))}</pre>{body}"
            "</body></html>")


def write_analysis(out: Path, a: dict) -> None:
    """library.json, library.md and library.html (regenerable from the runs' files)."""
    from steerlens.rundir import atomic_write_text, write_json

    write_json(Path(out) / LIBRARY_FILE, a)
    atomic_write_text(Path(out) / LIBRARY_TEXT, format_analysis(a) + "\n")
    atomic_write_text(Path(out) / LIBRARY_PAGE, library_page(a))
