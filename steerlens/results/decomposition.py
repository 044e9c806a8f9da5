"""Round 2 of the vector library: which component of a vector carries its refusal shift (issue 40;
docs/library.md, "Round 2: polarity-balanced vectors", analysis rules fixed before the run).

A round-1 vector v (letter-balanced) is its answer-polarity component plus the rest. The
component alone is +p or -p (the neutral polarity direction with the sign of v's polarity
cosine), generated in the study's `decomposition` run; v with the component removed is the
round-2 vector of each set balanced by projection (`polarity_method` "projection"). Per outcome
(Δ non-refusal, Δ harmful compliance, against the baseline on the same goals):
- rule 1: +p and -p against the decomposition run's generated nulls (its own null test: the
  permutation p of `results.summary`; the random-direction nulls alone beside it); per set round
  1 (v) against round 2 (v with p removed), paired, by pole (round 1's poles: signed clusters of
  its CAA vectors at the steering layer, `results.units`, each named Yes-heavy or No-heavy by
  its members' mean polarity cosine), with a paired t interval; a paired Wilcoxon on |Δ| round 1
  against round 2; a paired TOST of round 2 − round 1 within ± the design's minimum detectable
  shift, per pole. "The polarity component carries the shift" only if ±p moves the outcome beyond
  its null in the direction of its pole's round-1 mean and round 2's mean |Δ| is lower than
  round 1's (Wilcoxon p < 0.05); "the rest carries it" if every pole's round-2 shift is within
  the margin of round 1's (TOST); otherwise neither is claimed;
- rule 3: per unit (+v and every generated null of round 2) the first-token share of its
  refusal-score effect mediated by the refusal direction and by the polarity direction over
  every layer from the steering layer on (`mediation.json`, bootstrap intervals over goals), and
  the regression of Δ non-refusal on the share across units;
- rule 4: which round-2 vectors still steer their own behaviour (`dose.json` `steers`, the
  per-polarity rule), round 1's beside them.

Torch-free; the records of each run come from `results.library` (which calls `analyse`), the
vectors' geometry from their files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats

from steerlens.results.inference import null_exceedance
from steerlens.results.units import (
    _metadata,
    clusters,
    duplicate_groups,
    layer_vector,
    polarity_direction,
    unit_rows,
    vector_file,
)
from steerlens.rundir import read_json
from steerlens.schema import (
    DECOMPOSITION_DIR,
    DELTA_KEYS,
    DOSE_FILE,
    MEDIATION_FILE,
    POLARITY_TENSORS,
    REFUSAL_FILE,
)

ALPHA = 0.05
RUN_DIR = DECOMPOSITION_DIR
OUTCOMES = {"nonrefusal": "Δ non-refusal", "harm": "Δ harmful compliance"}
POLES = ("Yes-heavy", "No-heavy")
FILES = {"Yes-heavy": "file:polarity_plus", "No-heavy": "file:polarity_minus"}
OPENNESS = ("openness", "file:openness_letter_perp")
PROJECTION = "projection"
BASES = {"direction": "refusal direction", "polarity": "polarity direction"}


# -- the sets: round 1 against round 2, their poles ----------------------------------------------

def _by_name(units: list[dict]) -> dict[str, dict]:
    return {u["vector"]: u for u in units}


def round1_poles(round1: Path, names: list[str], p: np.ndarray, layer: int) -> dict[str, dict]:
    """Per round-1 CAA vector: its polarity cosine with `p` and its pole (signed average-linkage
    clusters of the merged duplicates, as `results.units` cuts them), the pole named by the sign
    of its members' mean polarity cosine."""
    rows = {n: layer_vector(vector_file(round1, n), layer) for n in names}
    rows = {n: v for n, v in rows.items() if v is not None}
    if len(rows) < 2:
        return {}
    keys = list(rows)
    u = unit_rows(np.array([rows[k] for k in keys]))
    pol = u @ (p / np.linalg.norm(p))
    dup = duplicate_groups(u)
    firsts = list(dict.fromkeys(dup.tolist()))
    poles = clusters(np.array([u[dup == g].mean(0) for g in firsts]), signed=True)
    pole = [int(poles[firsts.index(g)]) for g in dup.tolist()]
    mean = {k: float(np.mean([c for c, q in zip(pol, pole) if q == k])) for k in set(pole)}
    named = {k: POLES[0] if m > 0 else POLES[1] if m < 0 else None for k, m in mean.items()}
    return {n: {"polarity_cos": float(c), "pole": q, "pole_name": named[q]}
            for n, c, q in zip(keys, pol, pole)}


def polarity_methods(round2_caa: Path, names: list[str]) -> dict[str, str | None]:
    """How each round-2 vector was freed of polarity (its file's `polarity_method`)."""
    out = {}
    for n in names:
        path = vector_file(round2_caa, n)
        out[n] = _metadata(path).get("polarity_method") if path.exists() else None
    return out


def set_records(r1: list[dict], r2: list[dict], decomp: list[dict], poles: dict,
                methods: dict) -> list[dict]:
    """One record per behaviour with a CAA vector in both rounds: pole, polarity method and each
    outcome's Δ in round 1, round 2 and (openness) the decomposition run."""
    one, two, dec = _by_name(r1), _by_name(r2), _by_name(decomp)
    out = []
    for name in (n for n in one if n in two and one[n]["method"] == "mean_difference"):
        rec = {"behaviour": name, "polarity_method": methods.get(name), **poles.get(name, {})}
        for o in OUTCOMES:
            rec[o] = {"round1": one[name].get(o), "round2": two[name].get(o)}
            if name == OPENNESS[0] and OPENNESS[1] in dec:
                rec[o]["decomposition"] = dec[OPENNESS[1]].get(o)
        out.append(rec)
    return out


# -- rule 1 --------------------------------------------------------------------------------------

def _pairs(sets: list[dict], o: str) -> tuple[np.ndarray, np.ndarray]:
    xs = [(s[o]["round1"], s[o]["round2"]) for s in sets
          if s[o]["round1"] is not None and s[o]["round2"] is not None]
    m = np.array(xs, float).reshape(-1, 2)
    return m[:, 0], m[:, 1]


def paired_interval(d1: np.ndarray, d2: np.ndarray) -> dict:
    """Round 2 − round 1: mean, paired t 95% interval and p."""
    out = {"n": len(d1), "mean_round1": float(d1.mean()) if len(d1) else float("nan"),
           "mean_round2": float(d2.mean()) if len(d2) else float("nan")}
    if len(d1) < 2 or np.ptp(d2 - d1) == 0:
        return {**out, "difference": float(np.mean(d2 - d1)) if len(d1) else float("nan"),
                "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    res = stats.ttest_rel(d2, d1)
    ci = res.confidence_interval(0.95)
    return {**out, "difference": float((d2 - d1).mean()), "ci_low": float(ci.low),
            "ci_high": float(ci.high), "p_value": float(res.pvalue), "method": "paired t"}


def tost_paired(d1: np.ndarray, d2: np.ndarray, margin: float) -> dict:
    """Equivalence of round 2 and round 1 within ±margin: two one-sided one-sample t tests of
    the paired differences (Schuirmann 1987), with the matching 90% interval."""
    d = d2 - d1
    if len(d) < 2 or not np.isfinite(margin) or np.ptp(d) == 0:
        return {"margin": margin, "n": len(d), "p_tost": float("nan"), "equivalent": False}
    lo = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    hi = stats.ttest_1samp(d, margin, alternative="less").pvalue
    ci = stats.ttest_1samp(d, 0).confidence_interval(1 - 2 * ALPHA)
    p = float(max(lo, hi))
    return {"margin": margin, "n": len(d), "difference": float(d.mean()), "ci90_low": float(ci.low),
            "ci90_high": float(ci.high), "p_tost": p, "equivalent": bool(p < ALPHA),
            "method": "TOST, two one-sided paired t tests"}


def wilcoxon_abs(d1: np.ndarray, d2: np.ndarray) -> dict:
    """Paired Wilcoxon signed-rank test (two-sided) of |Δ| round 1 against |Δ| round 2."""
    a, b = np.abs(d1), np.abs(d2)
    out = {"n": len(a), "mean_abs_round1": float(a.mean()) if len(a) else float("nan"),
           "mean_abs_round2": float(b.mean()) if len(b) else float("nan")}
    if len(a) < 2 or not np.any(a - b):
        return {**out, "p_value": float("nan")}
    res = stats.wilcoxon(a, b)
    return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue),
            "method": "Wilcoxon signed-rank, paired, two-sided"}


def _random_only(summary: dict, plus: dict, o: str) -> dict:
    """The same null test against the generated random-direction nulls alone."""
    rows = [r for r in summary["rows"] if r["kind"] == "random" and r["attack"] == plus["attack"]
            and r.get("dose") == plus.get("dose")]
    g = [(r if o == "nonrefusal" else r.get("harm", {})) for r in rows]
    counts = [(x["delta_count"], x["n"]) for x in g if "delta_count" in x]
    p = plus if o == "nonrefusal" else plus.get("harm", {})
    if "delta_count" not in p or not counts:
        return {}
    ex = null_exceedance(p["delta_count"], p["n"], counts, "two")
    return {k: ex[k] for k in ("count", "n_null", "p_value")}


def polarity_alone(summary: dict, o: str) -> dict[str, dict]:
    """+p and -p on one outcome: Δ with its interval, the run's null test, the random nulls."""
    out = {}
    for pole, name in FILES.items():
        f = next((f for f in summary.get("vectors", []) if f["vector"] == name), None)
        if f is None:
            continue
        p = f["plus"] if o == "nonrefusal" else f["plus"].get("harm", {})
        out[pole] = {"vector": name, "delta": p.get(DELTA_KEYS[o]), "ci_low": p.get("delta_ci_low"),
                     "ci_high": p.get("delta_ci_high"),
                     "null": (f.get("evidence", {}).get(o) or {}).get("null", {}),
                     "random_only": _random_only(summary, f["plus"], o)}
    return out


def _beyond(alone: dict, pole_mean: float) -> bool:
    """Beyond its null (the run's test, p < α) and in the direction of its pole's round-1 mean."""
    p, d = alone.get("null", {}).get("p_value", float("nan")), alone.get("delta")
    return bool(p < ALPHA and d is not None and pole_mean != 0 and np.sign(d) == np.sign(pole_mean))


def verdict(o: str, alone: dict, by_pole: dict, wil: dict) -> dict:
    """The rule's words, and the conditions behind them."""
    tested = [k for k, v in by_pole.items() if v["paired"]["n"] >= 1]
    pm = {k: _beyond(alone.get(k, {}), by_pole[k]["paired"]["mean_round1"]) for k in tested}
    lower = bool(wil.get("p_value", 1) < ALPHA and wil["mean_abs_round2"] < wil["mean_abs_round1"])
    equiv = {k: by_pole[k]["equivalence"]["equivalent"] for k in tested if by_pole[k]["paired"]["n"] >= 2}
    polarity = bool(tested) and all(pm.values()) and lower
    rest = bool(equiv) and all(equiv.values())
    short = "non-refusal" if o == "nonrefusal" else "harmful compliance"
    words = [w for w, ok in ((f"the polarity component carries the shift in {short}", polarity),
                             ("the rest (the vector with its polarity component removed) carries "
                              f"the shift in {short}", rest)) if ok]
    out = {"polarity_carries": polarity, "rest_carries": rest, "plus_minus_beyond_null": pm,
           "round2_lower": lower, "equivalent_by_pole": equiv,
           "words": "; ".join(words) or f"neither component is claimed to carry the shift in {short}"}
    if polarity and rest:  # a detected drop that is also within the margin: say what that bounds
        out["both"] = ("both conditions hold: round 2's |Δ| is lower than round 1's and within the "
                       "equivalence margin of it; the margin bounds the difference (read the 90% "
                       "intervals), it does not make the shifts equal")
    return out


def rule1(sets: list[dict], decomp: dict | None, margins: dict[str, float]) -> dict:
    """Rule 1 on each outcome over the sets balanced by projection."""
    proj = [s for s in sets if s.get("polarity_method") == PROJECTION and s.get("pole_name")]
    out = {"sets": [s["behaviour"] for s in proj], "outcomes": {}}
    for o in OUTCOMES:
        by_pole = {}
        for pole in POLES:
            d1, d2 = _pairs([s for s in proj if s["pole_name"] == pole], o)
            by_pole[pole] = {"paired": paired_interval(d1, d2),
                             "equivalence": tost_paired(d1, d2, margins.get(o, float("nan")))}
        d1, d2 = _pairs(proj, o)
        wil = wilcoxon_abs(d1, d2)
        alone = polarity_alone(decomp, o) if decomp else {}
        out["outcomes"][o] = {"plus_minus": alone, "by_pole": by_pole, "wilcoxon": wil,
                              "margin": margins.get(o), "verdict": verdict(o, alone, by_pole, wil)}
    return out


# -- rule 3: mediation ---------------------------------------------------------------------------

def _full_band(med: dict) -> str | None:
    """The band of every layer from the steering layer on (the widest)."""
    bands = med.get("bands") or {}
    return max(bands, key=lambda b: len(bands[b])) if bands else None


def mediation_units(runs: dict[str, Path], deltas: dict[tuple[str, str], float | None]) -> list[dict]:
    """Per mediated setting of the runs (each null once): its shares through the refusal and
    the polarity direction over the full band, with intervals, and its Δ non-refusal."""
    out, seen = [], set()
    for name, run in runs.items():
        path = Path(run) / MEDIATION_FILE
        if not path.exists():
            continue
        med = read_json(path)
        band = _full_band(med)
        for attack, settings in med.get("attacks", {}).items():
            for setting, rec in settings.items():
                if (attack, setting) in seen:
                    continue
                seen.add((attack, setting))
                u = {"run": name, "attack": attack, "setting": setting, "kind": rec.get("kind"),
                     "vector": rec.get("vector"), "band": band,
                     "nonrefusal": deltas.get((attack, setting))}
                for b in BASES:
                    s = (rec.get("shares", {}).get(b) or {}).get(band) or {}
                    u[b] = {k: s.get(k) for k in ("share", "share_ci", "effect", "effect_ci", "undefined")}
                out.append(u)
    return out


def rule3(units: list[dict], corr: Callable[[list, list], dict]) -> dict:
    """The regression of Δ non-refusal on each share, over all units, real vectors, nulls."""
    groups = {"all": units, "real": [u for u in units if u["kind"] == "+v"],
              "nulls": [u for u in units if u["kind"] != "+v"]}
    reg = {b: {g: corr([u[b]["share"] for u in us], [u["nonrefusal"] for u in us])
               for g, us in groups.items()} for b in BASES}
    return {"units": units, "regression": reg, "band": next((u["band"] for u in units), None)}


# -- rule 4 --------------------------------------------------------------------------------------

def _steers(dose: dict) -> dict[str, dict]:
    return {n: {"steers": all((v.get("steers") or {"": False}).values()),
                "polarity_check": v.get("polarity_check") or {}}
            for n, v in dose.get("vectors", {}).items() if "steers" in v}


def rule4(round2: dict[str, Path], round1: dict[str, Path]) -> list[dict]:
    """Per round-2 vector with a behaviour: does it steer it at the audited dose (the
    per-polarity rule), with its polarity checks, and did its round-1 vector."""
    out = []
    for name, run in round2.items():
        path, old = Path(run) / DOSE_FILE, Path(round1.get(name, Path("-"))) / DOSE_FILE
        before = _steers(read_json(old)) if old.exists() else {}
        for vec, rec in (_steers(read_json(path)) if path.exists() else {}).items():
            out.append({"run": name, "vector": vec, **rec,
                        "round1_steers": before.get(vec, {}).get("steers")})
    return out


# -- the whole round-2 analysis ------------------------------------------------------------------

def margins_of(summary: dict) -> dict[str, float]:
    """Each outcome's minimum detectable shift in the round-2 caa run's design (the non-refusal
    one where a summary records no other)."""
    d = summary.get("design", {})
    by, nr = d.get("by_outcome", {}), d.get("minimum_detectable_delta_non_refusal")
    return {o: by.get(o, {}).get("minimum_detectable_shift", nr) for o in OUTCOMES}


def analyse(round2: Path, round1: Path, units: dict[str, list[dict]], summaries: dict[str, dict],
            corr: Callable[[list, list], dict]) -> dict:
    """Rules 1, 3 and 4. `units`: the vector records (`results.library.vector_units`) of the
    runs "caa", "methods", "decomposition" (round 2) and "round1" (round 1's caa run);
    `summaries`: their summaries (read as written now); `corr`: the library's correlation."""
    caa = Path(round2) / "caa"
    layer = read_json(caa / REFUSAL_FILE)["steering_layer"]
    p = polarity_direction(caa / POLARITY_TENSORS, layer)
    r1 = units.get("round1", [])
    names = [u["vector"] for u in r1 if u["method"] == "mean_difference"]
    poles = round1_poles(Path(round1) / "caa", names, p, layer)
    sets = set_records(r1, units.get("caa", []), units.get("decomposition", []), poles,
                       polarity_methods(caa, names))
    runs2 = {n: Path(round2) / n for n in ("caa", "methods") if (Path(round2) / n).exists()}
    deltas = {(r["attack"], r["setting"]): r.get(DELTA_KEYS["nonrefusal"])
              for n in runs2 for r in summaries.get(n, {}).get("rows", [])}
    return {"steering_layer": layer, "sets": sets,
            "rule1": rule1(sets, summaries.get("decomposition"), margins_of(summaries.get("caa", {}))),
            "rule3": rule3(mediation_units(runs2, deltas), corr),
            "rule4": rule4(runs2, {"caa": Path(round1) / "caa", "methods": Path(round1) / "methods"})}


# -- the words -----------------------------------------------------------------------------------

def _pts(x: float | None) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}"


def _interval(lo, hi) -> str:
    return "" if lo is None or hi is None or not np.isfinite(lo) else f" [{_pts(lo)}, {_pts(hi)}]"


def _corr_text(c: dict) -> str:
    if not np.isfinite(c.get("r", float("nan"))):
        return f"n={c.get('n', 0)}: —"
    return f"r={c['r']:+.2f} R²={c['r'] ** 2:.2f} p={c['p_value']:.3g} (n={c['n']})"


def _set_lines(sets: list[dict]) -> list[str]:
    lines = ["| set | round-2 polarity method | round-1 pole | polarity cos (round 1) | "
             "Δ non-refusal, round 1 → round 2 (pts) | Δ harmful compliance, round 1 → round 2 (pts) |",
             "|---|---|---|---|---|---|"]
    for s in sets:
        cells = []
        for o in OUTCOMES:
            d = s[o]
            extra = f" (v ⊥ p: {_pts(d['decomposition'])})" if "decomposition" in d else ""
            cells.append(f"{_pts(d['round1'])} → {_pts(d['round2'])}{extra}")
        pole = f"{s['pole_name']} ({s['pole']})" if "pole" in s else "—"
        pc = f"{s['polarity_cos']:+.2f}" if "polarity_cos" in s else "—"
        lines.append(f"| {s['behaviour']} | {s.get('polarity_method') or '—'} | {pole} | {pc} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def _alone_line(o: str, pole: str, a: dict) -> str:
    n, r = a.get("null", {}), a.get("random_only", {})
    sign = "+p" if pole == POLES[0] else "-p"
    rnd = (f"; random nulls alone {r['count']} of {r['n_null']} as extreme, p {r['p_value']:.3g}"
           if r else "")
    return (f"- {sign} ({pole} pole's component): {OUTCOMES[o]} {_pts(a['delta'])}"
            f"{_interval(a.get('ci_low'), a.get('ci_high'))} pts; the run's null test: "
            f"{n.get('count', '—')} of {n.get('n_null', '—')} generated nulls as extreme, "
            f"p {n.get('p_value', float('nan')):.3g}{rnd}")


def _pole_lines(o: str, r: dict) -> list[str]:
    m = r.get("margin")
    lines = [f"| pole | sets | round 1 mean {OUTCOMES[o]} | round 2 mean | round 2 − round 1 "
             f"[95% paired t CI], p | equivalence within ±{_pts(m).lstrip('+')} pts (TOST p; 90% CI) |",
             "|---|---|---|---|---|---|"]
    for pole, v in r["by_pole"].items():
        p, e = v["paired"], v["equivalence"]
        eq = ("—" if not np.isfinite(e.get("p_tost", float("nan"))) else
              f"p {e['p_tost']:.3g}{_interval(e['ci90_low'], e['ci90_high'])}"
              f" ({'shown' if e['equivalent'] else 'not shown'})")
        lines.append(f"| {pole} | {p['n']} | {_pts(p['mean_round1'])} | {_pts(p['mean_round2'])} | "
                     f"{_pts(p['difference'])}{_interval(p['ci_low'], p['ci_high'])}, "
                     f"p {p['p_value']:.3g} | {eq} |")
    return lines + [""]


def _rule1_lines(r1: dict) -> list[str]:
    lines = [f"Sets balanced by projection (round 2 = round 1 with p removed): {len(r1['sets'])}.", ""]
    for o, r in r1["outcomes"].items():
        w, v = r["wilcoxon"], r["verdict"]
        lines += [f"### Rule 1 on {OUTCOMES[o]}", ""]
        lines += [_alone_line(o, pole, a) for pole, a in r["plus_minus"].items()] or [
            "- +p / -p: not generated (no decomposition run)"]
        lines += ["", *_pole_lines(o, r),
                  f"Round 1 against round 2 over {w['n']} sets: mean |{OUTCOMES[o]}| "
                  f"{_pts(w['mean_abs_round1']).lstrip('+')} → {_pts(w['mean_abs_round2']).lstrip('+')} "
                  f"pts, paired Wilcoxon p {w.get('p_value', float('nan')):.3g}", "",
                  f"**{OUTCOMES[o]}: {v['words']}.** (±p beyond its null toward its pole's round-1 "
                  f"mean: {_yes_no(v['plus_minus_beyond_null'])}; round 2's |Δ| lower (Wilcoxon): "
                  f"{_yes_no(v['round2_lower'])}; round 2 within the margin of round 1 (TOST): "
                  f"{_yes_no(v['equivalent_by_pole'])}"
                  + (f". {v['both'][0].upper()}{v['both'][1:]}" if "both" in v else "") + ")", ""]
    return lines


def _yes_no(x) -> str:
    if isinstance(x, dict):
        return "; ".join(f"{k} {_yes_no(v)}" for k, v in x.items()) or "—"
    return "yes" if x else "no"


def _share(s: dict) -> str:
    if s.get("share") is None:
        return "undefined (effect's interval includes 0)" if s.get("undefined") else "—"
    lo, hi = s.get("share_ci") or [None, None]
    return f"{s['share']:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")


def _rule3_lines(r3: dict) -> list[str]:
    if not r3["units"]:
        return ["No mediation.json in the round-2 runs.", ""]
    lines = [f"First-token refusal-score effect mediated over layers {r3['band']} (95% bootstrap "
             "intervals over goals):", "",
             "| unit | kind | Δ non-refusal (pts) | share through the refusal direction | "
             "share through the polarity direction |", "|---|---|---|---|---|"]
    lines += [f"| {u['setting']} | {u['kind']} | {_pts(u['nonrefusal'])} | {_share(u['direction'])} | "
              f"{_share(u['polarity'])} |" for u in r3["units"]]
    lines += ["", "Δ non-refusal regressed on the share (Pearson r, permutation p, as the library's "
              "regressions):", ""]
    lines += [f"- {BASES[b]}: " + "; ".join(f"{g}: {_corr_text(c)}" for g, c in per.items())
              for b, per in r3["regression"].items()]
    return lines + [""]


def _check(c: dict) -> str:
    if not c:
        return "—"
    word = ("ok" if c.get("ok") else "fails") if c.get("checked") else "unchecked"
    return f"{word} (n={c['n_items']})"


def _rule4_lines(r4: list[dict]) -> list[str]:
    n = sum(r["steers"] for r in r4)
    was = sum(bool(r["round1_steers"]) for r in r4)
    lines = [f"{n} of {len(r4)} round-2 vectors steer their own behaviour at the audited dose (both "
             f"±dose shifts significant and, where the held-out items have both, in the matching "
             f"direction on Yes- and on No-matching items); their round-1 vectors: {was}.", "",
             "| run | vector | steers (round 2) | Yes-matching items | No-matching items | round 1 |",
             "|---|---|---|---|---|---|"]
    for r in r4:
        chk = next(iter(r["polarity_check"].values()), {})
        lines.append(f"| {r['run']} | {r['vector']} | {r['steers']} | {_check(chk.get('yes', {}))} | "
                     f"{_check(chk.get('no', {}))} | {r['round1_steers']} |")
    return lines + [""]


def format_round2(a: dict) -> list[str]:
    """Rules 1, 3 and 4 as Markdown."""
    return ["## Round 2: which component carries the refusal shift (rules fixed before the run)", "",
            f"p: the round-2 caa run's polarity direction at layer {a['steering_layer']}; "
            "poles: round 1's signed clusters of its CAA vectors, named by their mean polarity cosine.",
            "", *_set_lines(a["sets"]), *_rule1_lines(a["rule1"]),
            "### Rule 3: mediation", "", *_rule3_lines(a["rule3"]),
            "### Rule 4: which round-2 vectors steer their own behaviour", "", *_rule4_lines(a["rule4"])]
