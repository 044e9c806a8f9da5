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
  vectors share their behaviour's pair activations; nor, it turned out, are the CAA vectors
  independent directions: see the units below);
- the screened dose-response slope (first-token refusal score over the screened and audited
  doses, least squares through the unsteered point) against the same two predictors;
- real vectors against nulls of the same kind: a two-sample permutation test on |Δ| (real vs
  label-shuffled, covariance, prompt-pair, and isotropic random, each and pooled);
- by method: Kruskal–Wallis on Δ over every vector, Friedman over the behaviours that have every
  method (the behaviour as block);
- the layer scan: per layer, the mean and largest |shift| of the refusal score under isotropic
  random directions.

Added after the results were read (issues 40, 43; docs/library.md), beside the rules above:
- units that are units (`results.units`): the vectors' effective number of directions at the
  steering layer, duplicates (cos > 0.99) merged, clusters (axes, poles); claim 3 on each named
  unit set (each run, and all) pooled, within poles, cluster-robust (`results.clustered`), and
  with the generated nulls as units in the same regression; the polarity cosine as a predictor
  where recorded;
- an equivalence test (TOST, margin the design's minimum detectable shift) beside each
  real-vs-null test, and the sentences of "What the tests show" generated from the numbers.

The rules were fixed before the study ran (docs/library.md): α = 0.05, two-sided, 20,000
permutations with seed 0, no outlier removal, every real vector included whether it steers its
behaviour or not (the subset that steers is reported beside it).
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path

import numpy as np
from scipy import stats

from steerlens.results import decomposition
from steerlens.results.clustered import tost_welch, wild_cluster, within_cluster
from steerlens.results.summary import NULL_KINDS, read_summary
from steerlens.results.units import (
    CLUSTER_DISTANCE,
    DUPLICATE_COS,
    LINKAGE,
    fill_polarity,
    geometry,
    layer_vector,
    merge_records,
    polarity_direction,
    vector_file,
)
from steerlens.rundir import read_json
from steerlens.schema import (
    DELTA_KEYS,
    LAYER_SCAN_FILE,
    LIBRARY_FILE,
    LIBRARY_PAGE,
    LIBRARY_TEXT,
    OVERLAP_FILE,
    REFUSAL_FILE,
    SUMMARY_FILE,
)

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


def _first(shift: list[float]) -> float | None:
    """The refusal-projection shift at the steering layer itself (the first readout layer)."""
    return shift[0] if shift else None


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
                    "polarity_cos": f["overlap"].get("polarity_cos"),
                    "projection_shift": _later(plus.get("projection_shift", [])),
                    "steering_projection": _first(plus.get("projection_shift", [])),
                    "refusal_score_shift": plus.get("refusal_score_shift"),
                    "screen_slope": _slope(screens.get((f["attack"], name), [])),
                    "nonrefusal": _outcome(plus, "nonrefusal"), "harm": _outcome(plus, "harm"),
                    "steers": bool(steers) and all(steers.values())})
    return out


def null_units(summary: dict, run: str, screened: bool = False) -> list[dict]:
    """The generated null cells of a run (or, `screened`, every null with a first-token refusal
    score shift, generated or screened only): kind, outcomes, projection shift."""
    return [{"setting": r["setting"], "attack": r["attack"], "run": run, "kind": r["kind"],
             "vector": r["setting"], "dose": r.get("dose"),
             "projection_shift": _later(r.get("projection_shift", [])),
             "steering_projection": _first(r.get("projection_shift", [])),
             "refusal_score_shift": r.get("refusal_score_shift"),
             "nonrefusal": _outcome(r, "nonrefusal"), "harm": _outcome(r, "harm")}
            for r in summary["rows"] if r["kind"] in NULL_KINDS
            and (DELTA_KEYS["nonrefusal"] in r or (screened and r.get("refusal_score_shift") is not None))]


@functools.lru_cache(maxsize=16)
def _perms(n: int, seed: int) -> np.ndarray:
    """N_PERM permutations of range(n) from a fresh generator (the same for every test of n
    units; cached, read-only)."""
    rng = np.random.default_rng(seed)
    out = np.array([rng.permutation(n) for _ in range(N_PERM)])
    out.flags.writeable = False
    return out


def _perm_corr(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Pearson r with a two-sided Monte Carlo permutation p, (k + 1) / (N + 1), and the slope."""
    r = float(np.corrcoef(x, y)[0, 1])
    xs = (x - x.mean()) / x.std()
    perms = _perms(len(y), seed)
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
    rp = ry[_perms(len(ry), seed)] @ resid_maker.T
    rp = (rp - rp.mean(1, keepdims=True)) / rp.std(1, keepdims=True)
    rs = (rp * ((xr - xr.mean()) / xr.std())).mean(1)
    k = int((np.abs(rs) >= abs(r) - 1e-12).sum())
    return {"r": r, "r2": r * r, "p_value": (k + 1) / (N_PERM + 1), "n": len(m),
            "method": "Freedman-Lane"}


def predictors(units: list[dict], y_key: str) -> dict:
    """y against cosine and against projection shift, and each given the other."""
    y = [u[y_key] for u in units]
    cos, proj = [u["cosine"] for u in units], [u["projection_shift"] for u in units]
    out = {"cosine": _corr(cos, y), "projection_shift": _corr(proj, y),
           "cosine_given_projection": partial(cos, y, proj),
           "projection_given_cosine": partial(proj, y, cos)}
    pol = [u.get("polarity_cos") for u in units]
    if sum(p is not None for p in pol) >= 4:  # the polarity cosine, where the runs record it
        out.update({"polarity_cosine": _corr(pol, y), "cosine_given_polarity": partial(cos, y, pol),
                    "polarity_given_cosine": partial(pol, y, cos)})
    return out


def two_sample(real: list[float], null: list[float]) -> dict:
    """Two-sided permutation test of mean |Δ| real − mean |Δ| null."""
    a = np.abs([x for x in real if x is not None], dtype=float)
    b = np.abs([x for x in null if x is not None], dtype=float)
    if len(a) < 2 or len(b) < 2:
        return {"n_real": len(a), "n_null": len(b), "p_value": float("nan")}
    res = stats.permutation_test((a, b), lambda u, v, axis: np.mean(u, axis) - np.mean(v, axis),
                                 permutation_type="independent", n_resamples=N_PERM, vectorized=True,
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


UNIT_KEYS = ("cosine", "polarity_cos", "projection_shift", "steering_projection",
             "refusal_score_shift", "screen_slope", "nonrefusal", "harm")
PREDICTORS = ("cosine", "projection_shift")
SCREEN = "refusal_score_shift"


def implied_cosines(units: list[dict], nulls: list[dict]) -> dict:
    """Each null's cosine with the refusal direction at the steering layer, read off its
    projection shift there: with the dose a fixed share of the residual norm that shift is
    dose · norm · cosine for any direction (one scale per run, from its real vectors; applied
    only where their largest relative deviation from it is below 1e-3)."""
    checks = {}
    for run in dict.fromkeys(u["run"] for u in units):
        own = [u for u in units if u["run"] == run and u.get("steering_projection") is not None
               and u.get("cosine") is not None and abs(u["cosine"]) > 0.01]
        if not own:
            continue
        ratios = np.array([u["steering_projection"] / u["cosine"] for u in own])
        scale = float(np.median(ratios))
        dev = float(np.max(np.abs(ratios / scale - 1)))
        checks[run] = {"scale": scale, "max_relative_deviation": dev, "n": len(own), "dose": own[0]["dose"]}
        for n in nulls:
            if (dev < 1e-3 and n["run"] == run and n.get("dose") == own[0]["dose"]
                    and n.get("steering_projection") is not None):
                n["cosine"] = n["steering_projection"] / scale
    return checks


def _steering_vectors(runs: dict[str, Path], units: list[dict]) -> dict[tuple[str, str], np.ndarray]:
    """Each real vector's row at its run's steering layer, from the run's vectors/ files."""
    out = {}
    for name, run in runs.items():
        ref = Path(run) / REFUSAL_FILE
        layer = read_json(ref).get("steering_layer") if ref.exists() else None
        for u in (u for u in units if u["run"] == name and layer is not None):
            v = layer_vector(vector_file(run, u["vector"]), layer)
            if v is not None:
                out[(name, u["vector"])] = v
    return out


def _recorded_polarity(runs: dict[str, Path], units: list[dict]) -> None:
    """Fill `polarity_cos` from each run's overlap.json where the summary has none."""
    for name, run in runs.items():
        path = Path(run) / OVERLAP_FILE
        rec = read_json(path) if path.exists() else {}
        for u in units:
            if u["run"] == name and u.get("polarity_cos") is None:
                u["polarity_cos"] = (rec.get(u["vector"]) or {}).get("polarity_cos")


def _with_nulls(units: list[dict], nulls: list[dict], o: str) -> dict:
    """Real units and generated nulls in one regression, each null its own cluster (independent
    draws by construction); `real_given_predictor`: does being a real vector predict the shift
    beyond the predictor (Freedman–Lane partial r of a real/null indicator)."""
    both, top = units + nulls, max(u["axis"] for u in units) + 1
    y, axes = [u[o] for u in both], [u["axis"] for u in units] + [top + i for i in range(len(nulls))]
    real = [1.0] * len(units) + [0.0] * len(nulls)
    out = {}
    for x in PREDICTORS:
        xs = [u.get(x) for u in both]
        out[x] = {"pooled": _corr(xs, y), "cluster_robust": wild_cluster(xs, y, axes),
                  "nulls_only": _corr([n.get(x) for n in nulls], [n[o] for n in nulls]),
                  "real_given_predictor": partial(real, y, xs)}
    return out


def _claim3_units(units: list[dict], nulls: list[dict], o: str) -> dict:
    y = [u[o] for u in units]
    out = {"pooled": predictors(units, o),
           "within_cluster": {x: within_cluster([u[x] for u in units], y, [u["pole"] for u in units])
                              for x in PREDICTORS},
           "cluster_robust": {x: wild_cluster([u[x] for u in units], y, [u["axis"] for u in units])
                              for x in PREDICTORS}}
    if nulls:
        out["with_nulls"] = _with_nulls(units, nulls, o)
    return out


def unit_set(records: list[dict], vecs: dict, nulls: list[dict], screened: list[dict]) -> dict:
    """Claim 3 on one named set of real vectors, their duplicates merged: pooled, within
    clusters (poles: fixed effects), cluster-robust (axes as clusters), and beside the nulls."""
    keys = [(r["run"], r["vector"]) for r in records]
    geo, groups = None, np.arange(len(records))
    axes = poles = groups
    if len(records) >= 2 and all(k in vecs for k in keys):
        geo = geometry([r["vector"] for r in records], np.array([vecs[k] for k in keys]))
        groups, axes, poles = geo.pop("_groups"), geo.pop("_axes"), geo.pop("_poles")
    units = merge_records(records, groups, UNIT_KEYS)
    for u, a, p in zip(units, axes, poles):
        u["axis"], u["pole"] = int(a), int(p)
    out = {o: _claim3_units(units, nulls, o) for o in OUTCOMES}
    out[SCREEN] = _claim3_units(units, screened, SCREEN)  # first-token score: every screened null
    return {"geometry": geo, "units": units, "outcomes": out}


def outcome_margin(design: dict, outcome: str) -> float | None:
    """The equivalence margin on one outcome: that outcome's own minimum detectable shift (from
    its own null flips); None where the design does not record it (no test then)."""
    by = design.get("by_outcome", {}).get(outcome)
    if by is not None:
        return by["minimum_detectable_shift"]
    return design.get("minimum_detectable_delta_non_refusal") if outcome == "nonrefusal" else None


def equivalence(units: list[dict], nulls: list[dict], outcome: str, margin: float) -> dict:
    """TOST of mean |Δ| real − mean |Δ| null within ±margin, beside each two-sample test: a
    non-significant difference is not equality."""
    real = [abs(u[outcome]) for u in units if u[outcome] is not None]
    groups = {k: [n[outcome] for n in nulls if n["kind"] == k] for k in NULL_KINDS}
    groups["same_kind"] = [n[outcome] for n in nulls if n["kind"] in SAME_KIND]
    return {k: tost_welch(real, [abs(x) for x in v if x is not None], margin)
            for k, v in groups.items() if v}


def scan_summary(scan: dict) -> dict:
    per = {int(k): v for k, v in scan["shift"].items()}
    mean_abs = {k: float(np.mean(np.abs(v))) for k, v in per.items()}
    worst = max(mean_abs, key=mean_abs.get)
    return {"mean_abs_shift": mean_abs, "max_abs_shift": {k: float(np.max(np.abs(v)))
                                                          for k, v in per.items()},
            "mean_shift": {k: float(np.mean(v)) for k, v in per.items()},
            "most_fragile_layer": worst, "dose": scan["dose"], "n_directions": scan["n_directions"]}


def _named(runs) -> dict[str, Path]:
    """Unit sets by name: a {name: run directory} mapping, or a list named by directory."""
    return ({k: Path(v) for k, v in runs.items()} if isinstance(runs, dict)
            else {Path(r).name: Path(r) for r in runs})


def _load(runs: dict[str, Path]) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Real vectors; generated nulls; screened nulls; the design. Model-level nulls are the same
    cells in every run: each is kept once."""
    units, nulls, screened, design = [], {}, {}, {}
    for name, run in runs.items():
        s = read_summary(run / SUMMARY_FILE)  # old keys mapped to the names written now
        design = design or s.get("design", {})
        units += vector_units(s, name)
        for n in null_units(s, name, screened=True):
            key = (n["attack"], n["setting"])
            screened.setdefault(key, n)
            if n["nonrefusal"] is not None:
                nulls.setdefault(key, n)
    return units, list(nulls.values()), list(screened.values()), design


def _by_attack(sets: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """A unit is a vector under one attack: a set with several attacks splits into `set@attack`."""
    out = {}
    for name, recs in sets.items():
        attacks = list(dict.fromkeys(u["attack"] for u in recs))
        for a in attacks:
            out[name if len(attacks) == 1 else f"{name}@{a}"] = [u for u in recs if u["attack"] == a]
    return out


def round2(study: Path, round1: Path) -> dict | None:
    """Round 2's decomposition rules (`results.decomposition`) for a study of polarity-balanced
    vectors against round 1's study, when both caa runs have their summaries."""
    runs = {"caa": study / "caa", "methods": study / "methods",
            "decomposition": study / decomposition.RUN_DIR, "round1": Path(round1) / "caa"}
    have = {k: v for k, v in runs.items() if (v / SUMMARY_FILE).exists()}
    if not {"caa", "round1"} <= set(have):
        return None
    summaries = {k: read_summary(v / SUMMARY_FILE) for k, v in have.items()}
    units = {k: vector_units(s, k) for k, s in summaries.items()}
    return decomposition.analyse(study, Path(round1), units, summaries, _corr)


def analyse(runs, scan: Path | None = None, polarity: Path | None = None,
            round1: Path | None = None) -> dict:
    """The whole analysis over the study's run directories (their summary.json files, and the
    vectors/ files for the geometry); `runs` is a list (unit sets named by directory) or a
    {name: directory} mapping; `polarity` an optional polarity direction file; `round1` a
    round-1 study to compare a polarity-balanced study with (the caa run's parent). A unit is a
    vector under one attack (the study audits one, `none`)."""
    named = _named(runs)
    units, nulls, screened, design = _load(named)
    vecs = _steering_vectors(named, units)
    _recorded_polarity(named, units)
    for name, run in (named.items() if polarity is not None else ()):  # runs may share vector names
        d = polarity_direction(polarity, read_json(run / REFUSAL_FILE)["steering_layer"])
        fill_polarity([u for u in units if u["run"] == name],
                      {k[1]: v for k, v in vecs.items() if k[0] == name}, d)
    out = {"n_vectors": len(units), "n_steering": sum(u["steers"] for u in units),
           "vectors": units, "nulls": nulls, "outcomes": {},
           "null_cosine_check": implied_cosines(units, screened), "n_screened_nulls": len(screened),
           "equivalence_margin": design.get("minimum_detectable_delta_non_refusal")}
    steering = [u for u in units if u["steers"]]
    # the 20 CAA vectors: one per behaviour, no two sharing pair activations
    caa = [u for u in units if u["method"] == "mean_difference"]
    for o in OUTCOMES:
        out["outcomes"][o] = {"all": predictors(units, o), "steering_only": predictors(steering, o),
                              "caa_only": predictors(caa, o),
                              "real_vs_null": real_vs_null(units, nulls, o),
                              "by_method": by_method(units, o)}
    sets = {"all": units}
    if len(named) > 1:  # each run its own named unit set too
        sets.update({n: [u for u in units if u["run"] == n] for n in named})
    out["unit_sets"] = {k: unit_set(v, vecs, [n for n in nulls if n["attack"] == v[0]["attack"]],
                                    [n for n in screened if n["attack"] == v[0]["attack"]])
                        for k, v in _by_attack(sets).items() if len(v) >= 2}
    if out["equivalence_margin"] and "all" in out["unit_sets"]:  # on the merged units (one attack)
        for o in OUTCOMES:
            margin = outcome_margin(design, o)  # each outcome's own MDE, never another's
            if margin:
                out["outcomes"][o]["equivalence"] = equivalence(out["unit_sets"]["all"]["units"],
                                                                nulls, o, margin)
    out["screen_slope"] = predictors(units, "screen_slope")
    out["screen_shift"] = predictors(units, "refusal_score_shift")
    if scan is not None and Path(scan).exists():
        out["layer_scan"] = scan_summary(read_json(scan))
    if round1 is not None and "caa" in named:
        out["round2"] = round2(named["caa"].parent, Path(round1))
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


def _fmt_tost(t: dict | None) -> str:
    if not t or not np.isfinite(t.get("p_tost", float("nan"))):
        return ""
    return (f"; equivalence within ±{100 * t['margin']:.0f} pts: TOST p={t['p_tost']:.2g}, real − null "
            f"{100 * t['difference']:+.1f} [{100 * t['ci90_low']:+.1f}, {100 * t['ci90_high']:+.1f}] "
            "(90% CI)")


def _fmt_within(c: dict) -> str:
    if not np.isfinite(c.get("r", float("nan"))):
        return f"n={c.get('n', 0)}: —"
    return f"r={c['r']:+.2f} R²={c['r2']:.2f} p={c['p_value']:.3g} (n={c['n']} in {c['n_clusters']} poles)"


def _fmt_wild(c: dict) -> str:
    if not np.isfinite(c.get("p_value", float("nan"))):
        return f"n={c.get('n', 0)}: —"
    return (f"slope {c['slope']:+.3g}, CR1 se {c['se_cr1']:.2g}, p={c['p_value']:.3g} "
            f"({c['n_clusters']} clusters, n={c['n']})")


def _get(*path):
    def get(c: dict) -> dict:
        for k in path:
            c = c.get(k) or {}
        return c
    return get


_UNIT_ROWS = [(f"{kind}: {x.replace('_', ' ')}", fmt, _get(*keys, x, *tail))
              for x in PREDICTORS for kind, fmt, keys, tail in (
                  ("pooled", _fmt_corr, ("pooled",), ()),
                  ("within poles", _fmt_within, ("within_cluster",), ()),
                  ("cluster-robust (axes)", _fmt_wild, ("cluster_robust",), ()),
                  ("real + nulls", _fmt_corr, ("with_nulls",), ("pooled",)),
                  ("real + nulls, cluster-robust", _fmt_wild, ("with_nulls",), ("cluster_robust",)),
                  ("nulls only", _fmt_corr, ("with_nulls",), ("nulls_only",)),
                  ("real vs null, given it", _fmt_corr, ("with_nulls",), ("real_given_predictor",)))]
_UNIT_ROWS += [(k.replace("_", " "), _fmt_corr, _get("pooled", k)) for k in (
    "cosine_given_projection", "projection_given_cosine", "polarity_cosine", "cosine_given_polarity",
    "polarity_given_cosine")]


def _units_table(a: dict, o: str) -> list[str]:
    sets = {k: s for k, s in a.get("unit_sets", {}).items() if o in s["outcomes"]}
    if not sets:
        return []
    nulls = (f"{a.get('n_screened_nulls', 0)} screened" if o == SCREEN else f"{len(a['nulls'])} generated")
    lines = ["Claim 3 on units (duplicates merged; within poles: demeaned by pole, y "
             "permuted within poles; cluster-robust: OLS slope, wild cluster bootstrap-t with axes as "
             f"clusters; real + nulls: the {nulls} nulls as units beside the real "
             "ones, each its own cluster, their cosine read off their projection shift at the steering "
             "layer; real vs null: partial r of a real/null indicator given the predictor):", "",
             "| analysis | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for label, fmt, get in _UNIT_ROWS:
        cells = [get(s["outcomes"][o]) for s in sets.values()]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(fmt(c) if c else "—" for c in cells) + " |")
    return lines + [""]


def _geometry_lines(a: dict) -> list[str]:
    lines = ["## Units: the vectors' directions at the steering layer", "",
             "Effective number of directions: the participation ratio (Σλ)²/Σλ² of the Gram matrix of "
             f"the unit vectors. Duplicates: cos > {DUPLICATE_COS}, merged into one unit (records "
             f"averaged) before any unit regression. Clusters: {LINKAGE}-linkage on 1 − |cos| (axes) and "
             f"on 1 − cos (poles), cut at {CLUSTER_DISTANCE}.", "",
             "| unit set | vectors | effective directions | units | axes | poles | duplicates merged |",
             "|---|---|---|---|---|---|---|"]
    for name, s in a.get("unit_sets", {}).items():
        g = s["geometry"]
        if g is None:
            n = len(s["units"])
            lines.append(f"| {name} | {n} | — (vector files missing) | {n} | — | — | — |")
            continue
        dups = "; ".join(" = ".join(d) for d in g["duplicates"]) or "—"
        lines.append(f"| {name} | {g['n_vectors']} | {g['participation_ratio']:.2f} "
                     f"({g['participation_ratio_units']:.2f} over the units) | {g['n_units']} | "
                     f"{g['n_axes']} | {g['n_poles']} | {dups} |")
    return lines + [""]


ALPHA = 0.05
_SHORT = {"nonrefusal": "non-refusal", "harm": "harmful compliance", SCREEN: "first-token refusal score"}


def _pr(c: dict) -> str:
    return f"r {c.get('r', float('nan')):+.2f}, p {c.get('p_value', float('nan')):.2g}"


def _partial_sentence(label: str, c: dict) -> str:
    if not np.isfinite(c.get("p_value", float("nan"))):
        return f"on {label} too few points to test"
    if c["p_value"] < ALPHA:
        return f"on {label} it still predicts (partial {_pr(c)})"
    return f"on {label} it adds nothing detectable (partial {_pr(c)}; not a test of no effect)"


def _null_sentence(o: str, kind: str, t: dict, e: dict | None) -> str:
    d = (f"mean |Δ| {100 * t['mean_abs_real']:.1f} vs {100 * t['mean_abs_null']:.1f} points, "
         f"p {t['p_value']:.2g}")
    if t["p_value"] < ALPHA:
        more = "more" if t["difference"] > 0 else "less"
        head = f"real vectors move {_SHORT[o]} {more} than {kind} nulls ({d})"
    else:
        head = f"real vectors do not move {_SHORT[o]} detectably more or less than {kind} nulls ({d})"
    if not e or not np.isfinite(e.get("p_tost", float("nan"))):
        return head + "; no equivalence test"
    shown = "is" if e["equivalent"] else "is not"
    return (f"{head}; equivalence within ±{100 * e['margin']:.0f} points {shown} "
            f"shown (TOST p {e['p_tost']:.2g}; real − null {100 * e['ci90_low']:+.1f} to "
            f"{100 * e['ci90_high']:+.1f} points, 90% CI, merged units)")


def _unit_sentence(name: str, s: dict, o: str) -> str:
    c, g = s["outcomes"][o], s["geometry"] or {}
    parts = [f"{x.replace('_', ' ')}: pooled {_pr(c['pooled'][x])}, within poles "
             f"{_pr(c['within_cluster'][x])}, cluster-robust p "
             f"{c['cluster_robust'][x].get('p_value', float('nan')):.2g}" for x in PREDICTORS]
    geo = (f"{g['n_vectors']} vectors, {g['participation_ratio']:.1f} effective directions, "
           f"{g['n_units']} units, {g['n_axes']} axes; " if g else f"{len(s['units'])} units; ")
    return f"{name} ({geo}{_SHORT[o]}): " + "; ".join(parts)


def _nulls_sentence(a: dict, o: str) -> list[str]:
    w = a.get("unit_sets", {}).get("all", {}).get("outcomes", {}).get(o, {}).get("with_nulls")
    if not w:
        return []
    alone, real = w["projection_shift"]["nulls_only"], w["projection_shift"]["real_given_predictor"]
    n = a.get("n_screened_nulls", 0) if o == SCREEN else len(a["nulls"])
    kind = "screened" if o == SCREEN else "generated"
    verb = "follows" if alone.get("p_value", 1) < ALPHA else "does not detectably follow"
    adds = ("adds nothing detectable" if real.get("p_value", 0) >= ALPHA else "predicts")
    return [f"Among the {n} {kind} nulls alone the {_SHORT[o]} shift {verb} the refusal "
            f"overlap (projection shift {_pr(alone)}; cosine {_pr(w['cosine']['nulls_only'])}); with the "
            f"nulls beside the real units, being a real vector {adds} beyond the projection shift "
            f"(partial {_pr(real)})."]


def _margin_sentence(r: dict) -> list[str]:
    """Equivalence at a wide margin can sit beside a detected difference: say what it bounds."""
    both = [k for k, t in r["real_vs_null"].items()
            if t.get("p_value", 1) < ALPHA and r.get("equivalence", {}).get(k, {}).get("equivalent")]
    if not both:
        return []
    m = 100 * r["equivalence"][both[0]]["margin"]
    return [f"At the ±{m:.0f}-point margin a difference the permutation test detects ({', '.join(both)}) is "
            f"also 'equivalent': equivalence bounds the difference by {m:.0f} points (read the 90% CI), "
            "it does not make the shifts equal."]


def statements(a: dict) -> list[str]:
    """What the tests show, in words that claim no more than they do (generated from the numbers)."""
    out = []
    for o in OUTCOMES:
        r = a["outcomes"][o]
        sets = ((f"all {r['all']['cosine'].get('n', 0)} vectors", "all"),
                (f"the {r['caa_only']['cosine'].get('n', 0)} CAA vectors", "caa_only"),
                (f"the {r['steering_only']['cosine'].get('n', 0)} steering vectors", "steering_only"))
        out.append(f"Given the projection shift, does the cosine add to the {_SHORT[o]} prediction? "
                   + "; ".join(_partial_sentence(label, r[k]["cosine_given_projection"])
                               for label, k in sets) + ".")
        out += [f"{_null_sentence(o, k, t, r.get('equivalence', {}).get(k))}."
                for k, t in r["real_vs_null"].items() if np.isfinite(t.get("p_value", float("nan")))]
        out += _margin_sentence(r)
        out += [f"{_unit_sentence(n, s, o)}." for n, s in a.get("unit_sets", {}).items()]
        out += _nulls_sentence(a, o)
    return out + [f"{_unit_sentence(n, s, SCREEN)}." for n, s in a.get("unit_sets", {}).items()
                  if SCREEN in s["outcomes"]] + _nulls_sentence(a, SCREEN)


def _outcome_lines(a: dict, o: str, label: str) -> list[str]:
    r = a["outcomes"][o]
    lines = [f"## {label} at the audited dose", "",
             "| predictor | all vectors | steering vectors only | CAA vectors only |", "|---|---|---|---|"]
    for k in r["all"]:
        lines.append(f"| {k.replace('_', ' ')} | {_fmt_corr(r['all'][k])} | "
                     f"{_fmt_corr(r['steering_only'].get(k, {}))} | {_fmt_corr(r['caa_only'].get(k, {}))} |")
    lines += ["", "Real vectors against generated nulls (two-sample permutation on |Δ|; beside it the "
              "equivalence test on the merged units, margin the design's minimum detectable shift):", ""]
    lines += [f"- {k}: {_fmt_null(t)}{_fmt_tost(r.get('equivalence', {}).get(k))}"
              for k, t in r["real_vs_null"].items()]
    m = r["by_method"]
    means = ", ".join(f"{k} {100 * v:+.1f} (n={m['n'][k]})" for k, v in m["mean"].items())
    kw, fr = m.get("kruskal_p", float("nan")), m.get("friedman_p", float("nan"))
    lines += ["", f"By method, mean Δ in points: {means}; Kruskal–Wallis p={kw:.3g}; "
              f"Friedman p={fr:.3g} over {', '.join(m.get('friedman_behaviours', [])) or '—'}", ""]
    return lines + _units_table(a, o)


def format_analysis(a: dict) -> str:
    """The analysis as Markdown: the units, predictors per outcome, real vs null, methods, the
    unit regressions, what the tests show, the layer scan."""
    lines = [f"# Vector library: {a['n_vectors']} real vectors "
             f"({a['n_steering']} steer their own behaviour at the audited dose)", ""]
    lines += _geometry_lines(a)
    for o, label in OUTCOMES.items():
        lines += _outcome_lines(a, o, label)
    lines += ["## Screened dose-response (first-token refusal score)", "",
              f"- slope against cosine: {_fmt_corr(a['screen_slope']['cosine'])}",
              f"- slope against projection shift: {_fmt_corr(a['screen_slope']['projection_shift'])}",
              f"- shift at the audited dose against cosine: {_fmt_corr(a['screen_shift']['cosine'])}", "",
              *_units_table(a, SCREEN)]
    if "layer_scan" in a:
        s = a["layer_scan"]
        row = " ".join(f"{k}:{v:.2f}" for k, v in sorted(s["mean_abs_shift"].items()))
        lines += ["## Layer scan (isotropic random directions, mean |refusal-score shift|)", "",
                  f"dose {s['dose']} of each layer's residual norm, {s['n_directions']} directions: "
                  f"{row}; most fragile layer {s['most_fragile_layer']}", ""]
    if a.get("round2"):
        lines += decomposition.format_round2(a["round2"])
    lines += ["## What the tests show", "", *[f"- {x}" for x in statements(a)], ""]
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


def main(argv: list[str] | None = None) -> int:
    """Re-run the analysis of a finished study from its files (no model, no torch)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m steerlens.results.library", description=main.__doc__)
    p.add_argument("study", help="a study directory (python -m steerlens.audit.study)")
    p.add_argument("--runs", nargs="+", default=["caa", "methods"],
                   help="its run directories, each a named unit set (NAME or NAME=DIR)")
    p.add_argument("--polarity", default=None, help="a polarity direction file (safetensors)")
    p.add_argument("--round1", default=None, help="the round-1 study a polarity-balanced study is "
                   "compared with (its decomposition/ run, mediation.json, behaviour checks)")
    args = p.parse_args(argv)
    study = Path(args.study)
    runs = {r.partition("=")[0]: Path(r.partition("=")[2] or study / r) for r in args.runs}
    a = analyse({k: v for k, v in runs.items() if (v / SUMMARY_FILE).exists()},
                study / LAYER_SCAN_FILE, Path(args.polarity) if args.polarity else None,
                Path(args.round1) if args.round1 else None)
    write_analysis(study, a)
    print(format_analysis(a))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
