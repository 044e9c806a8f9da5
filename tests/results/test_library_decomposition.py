"""Round 2 of the vector library (docs/library.md, rules fixed before the run) on synthetic study
directories with the real file layout: which component carries the refusal shift (rule 1, on both
outcomes, each named), the mediated shares and their regression (rule 3), the per-polarity
behaviour check (rule 4), and `python -m steerlens.results.library ROUND2 --round1 ROUND1`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy import stats

from steerlens.results.library import analyse, main

LAYER, D_MODEL, N_GOALS, DOSE = 2, 16, 50, 0.15
YES = ["y0", "y1", "y2", "y3", "y4", "y5"]
NO = ["n0", "n1", "n2", "n3"]
NONE_SETS = ["x0", "x1"]  # no Yes/No answers: round 2 = round 1
MDE = 0.17


def _e(i: int) -> np.ndarray:
    v = np.zeros(D_MODEL)
    v[i] = 1
    return v


def _save_vector(path: Path, v: np.ndarray, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"steerlens": json.dumps({"layers": [0, LAYER], **meta})}
    save_file({"vectors": np.stack([np.zeros(D_MODEL), v]).astype(np.float32)}, str(path), head)


def _cell(delta: float | None, harm: float | None, kind: str = "+v", name: str = "", vector=None,
          count: int | None = None) -> dict:
    """A summary row: the non-refusal and harmful-compliance shifts and their counts."""
    def stats_of(d):
        c = round(d * N_GOALS) if count is None else count
        return {"delta_non_refusal": d, "delta_count": c, "n": N_GOALS, "delta_ci_low": d - 0.1,
                "delta_ci_high": d + 0.1}
    row = {"attack": "none", "setting": name, "kind": kind, "vector": vector, "dose": DOSE,
           "generated": True, "refusal_score_shift": -(delta or 0), "projection_shift": [1.0, 0.5]}
    if delta is not None:
        row.update(stats_of(delta))
    if harm is not None:
        h = stats_of(harm)
        row["harm"] = {"delta_harmful": h.pop("delta_non_refusal"), **h}
    return row


def _run(path: Path, vectors: dict[str, tuple[np.ndarray, float, float]], nulls: dict[str, float],
         meta: dict | None = None, evidence: dict | None = None) -> None:
    """A run directory: summary.json (rows, vector records, design), refusal.json, vectors/."""
    rows = [_cell(d, h, name=f"{n}@{DOSE:g}+v", vector=n) for n, (_, d, h) in vectors.items()]
    rows += [_cell(d, d / 2, kind=n.rstrip("0123456789"), name=f"{n}@{DOSE:g}") for n, d in nulls.items()]
    recs = []
    for (n, (v, _, _)), row in zip(vectors.items(), rows):
        row["projection_shift"] = [10 * float(v[1] / np.linalg.norm(v)) + 1e-9, 0.5]
        recs.append({"vector": n, "dose": DOSE, "attack": "none", "plus": row,
                     "overlap": {"cosine": float(v[1] / np.linalg.norm(v))}, "behaviour": {},
                     "evidence": (evidence or {}).get(n, {})})
        if not n.startswith("file:"):
            _save_vector(path / "vectors" / f"{n}.safetensors", v, **(meta or {}).get(n, {}))
    design = {"minimum_detectable_delta_non_refusal": MDE,
              "by_outcome": {"nonrefusal": {"minimum_detectable_shift": MDE},
                             "harm": {"minimum_detectable_shift": 0.1}}}
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"rows": rows, "vectors": recs, "design": design}))
    (path / "refusal.json").write_text(json.dumps({"steering_layer": LAYER}))


def _round1_vectors(rng) -> dict[str, np.ndarray]:
    """Yes-heavy sets: mostly +p (= e0); No-heavy: mostly -p; two sets with no Yes/No answers."""
    out = {n: 3 * _e(0) + rng.normal(0, 0.3, D_MODEL) * (np.arange(D_MODEL) > 1) for n in YES}
    out.update({n: -3 * _e(0) + rng.normal(0, 0.3, D_MODEL) * (np.arange(D_MODEL) > 1) for n in NO})
    out.update({n: _e(5 + i) + 0.1 * _e(1) for i, n in enumerate(NONE_SETS)})
    out["openness"] = 2 * _e(0) + _e(9)
    return out


def _study(tmp: Path, scenario: str, seed: int = 0) -> tuple[Path, Path]:
    """Round 1 and round 2 with one of three planted truths: "polarity" (the shift is ±p's:
    round 2 loses it, ±p has it), "rest" (round 2 keeps round 1's shift, ±p moves nothing),
    "neither" (±p moves nothing and round 2's shifts scatter far from round 1's)."""
    rng = np.random.default_rng(seed)
    r1, r2 = tmp / "r1", tmp / "r2"
    v1 = _round1_vectors(rng)
    sign = {n: 1 if n in YES else -1 for n in YES + NO}
    d1 = {n: 0.2 * sign[n] + rng.normal(0, 0.03) for n in sign} | {n: 0.0 for n in NONE_SETS + ["openness"]}
    d2 = {"polarity": {n: rng.normal(0, 0.02) for n in d1},
          "rest": {n: d1[n] + rng.normal(0, 0.02) for n in d1},
          "neither": {n: d1[n] + rng.normal(0, 0.4) for n in d1}}[scenario]
    _run(r1 / "caa", {n: (v, d1[n], d1[n] / 4) for n, v in v1.items()}, {"random0": 0.02})
    v2 = {n: v - v[0] * _e(0) if n in sign else v for n, v in v1.items()}
    meta = {n: {"polarity_method": "projection" if n in sign else
                "weights+projection" if n == "openness" else "none"} for n in v1}
    nulls = {f"random{i}": rng.normal(0, 0.03) for i in range(8)}
    nulls |= {f"covariance{i}": rng.normal(0, 0.03) for i in range(8)}
    _run(r2 / "caa", {n: (v, d2[n], d2[n] / 4) for n, v in v2.items()}, nulls, meta)
    save_file({"vectors": np.stack([_e(0)] * 4).astype(np.float32)},
              str(r2 / "caa" / "polarity_direction.safetensors"),
              {"steerlens": json.dumps({"layers": [0, 1, 2, 3]})})
    alone = 0.2 if scenario == "polarity" else 0.0
    null = {"count": 0, "n_null": 24, "p_value": 1 / 25} if alone else {"count": 20, "n_null": 24,
                                                                         "p_value": 21 / 25}
    ev = {f: {o: {"null": null} for o in ("nonrefusal", "harm")}
          for f in ("file:polarity_plus", "file:polarity_minus")}
    _run(r2 / "decomposition", {"file:polarity_plus": (_e(0), alone, alone / 4),
                                "file:polarity_minus": (-_e(0), -alone, -alone / 4),
                                "file:openness_letter_perp": (_e(9), 0.01, 0.0)},
         {f"random{i}": rng.normal(0, 0.03) for i in range(8)}, evidence=ev)
    _mediation(r2 / "caa", list(v2), nulls, d2)
    _doses(r1 / "caa", {n: True for n in v1})
    _doses(r2 / "caa", {n: n in NO for n in v2})
    return r1, r2


def _mediation(run: Path, vectors: list[str], nulls: dict[str, float], d2: dict) -> None:
    """Shares planted so that Δ non-refusal = 0.5 × the refusal-direction share, exactly."""
    def rec(kind, vec, delta, share):
        s = {"share": share, "share_ci": [share - 0.1, share + 0.1], "effect": -1.0,
             "effect_ci": [-1.2, -0.8]}
        narrow = {**s, "share": 0.0, "share_ci": [-0.5, 0.5]}
        return {"kind": kind, "vector": vec, "dose": DOSE, "generated": True,
                "shares": {"direction": {"2-3": s, "2": narrow},
                           "polarity": {"2-3": {**s, "share": share / 3}}}}
    settings = {f"{n}@{DOSE:g}+v": rec("+v", n, d2[n], 2 * d2[n]) for n in vectors}
    settings |= {f"{n}@{DOSE:g}": rec(n.rstrip("0123456789"), None, d, 2 * d) for n, d in nulls.items()}
    (run / "mediation.json").write_text(json.dumps(
        {"bands": {"2": [2], "2-3": [2, 3], "3": [3]}, "steering_layer": LAYER,
         "attacks": {"none": settings}}))


def _doses(run: Path, steers: dict[str, bool]) -> None:
    check = {"yes": {"n_items": 8, "checked": True, "ok": False},
             "no": {"n_items": 6, "checked": True, "ok": True}}
    (run / "dose.json").write_text(json.dumps({"vectors": {
        n: {"steers": {f"{DOSE:g}": s}, "polarity_check": {f"{DOSE:g}": check}} for n, s in steers.items()}}))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Each planted study built and analysed once: scenario -> (round 1, round 2, round-2 analysis)."""
    cache = {}

    def get(scenario: str, seed: int = 0):
        if (scenario, seed) not in cache:
            r1, r2 = _study(tmp_path_factory.mktemp(f"{scenario}{seed}"), scenario, seed)
            cache[scenario, seed] = r1, r2, analyse({"caa": r2 / "caa"}, round1=r1)["round2"]
        return cache[scenario, seed]
    return get


@pytest.mark.parametrize("scenario, words", [
    ("polarity", "the polarity component carries the shift in non-refusal"),
    ("rest", "the rest (the vector with its polarity component removed) carries the shift in non-refusal"),
    ("neither", "neither component is claimed to carry the shift in non-refusal"),
])
def test_rule1_says_which_component_carries_the_shift(study, scenario, words):
    a = study(scenario)[2]
    v = a["rule1"]["outcomes"]["nonrefusal"]["verdict"]
    assert v["words"] == words
    other = {"polarity": "rest", "rest": "polarity", "neither": None}[scenario]
    assert other is None or not v[f"{other}_carries"]
    assert sorted(a["rule1"]["sets"]) == sorted(YES + NO)  # the projection sets only
    harm = a["rule1"]["outcomes"]["harm"]["verdict"]["words"]
    assert harm.endswith("in harmful compliance")


def test_poles_are_round_one_clusters_named_by_their_polarity(study):
    sets = {s["behaviour"]: s for s in study("polarity")[2]["sets"]}
    assert {sets[n]["pole_name"] for n in YES} == {"Yes-heavy"}
    assert {sets[n]["pole_name"] for n in NO} == {"No-heavy"}
    assert len({sets[n]["pole"] for n in YES}) == 1 and sets[YES[0]]["pole"] != sets[NO[0]]["pole"]
    assert all(sets[n]["polarity_cos"] > 0.9 for n in YES) and all(sets[n]["polarity_cos"] < -0.9 for n in NO)
    assert sets["openness"]["polarity_method"] == "weights+projection"
    assert sets["openness"]["nonrefusal"]["decomposition"] == pytest.approx(0.01)


def test_rule1_numbers_are_the_paired_tests_computed_independently(study):
    r1, r2, a = study("rest", 3)
    s1 = json.loads((r1 / "caa" / "summary.json").read_text())
    s2 = json.loads((r2 / "caa" / "summary.json").read_text())
    one = {f["vector"]: f["plus"]["delta_non_refusal"] for f in s1["vectors"]}
    two = {f["vector"]: f["plus"]["delta_non_refusal"] for f in s2["vectors"]}
    x, y = np.array([one[n] for n in YES]), np.array([two[n] for n in YES])
    got = a["rule1"]["outcomes"]["nonrefusal"]["by_pole"]["Yes-heavy"]
    d = y - x
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert got["paired"]["difference"] == pytest.approx(d.mean())
    assert got["paired"]["ci_low"] == pytest.approx(d.mean() - half)
    se = d.std(ddof=1) / np.sqrt(len(d))
    want = max(stats.t.sf((d.mean() + MDE) / se, len(d) - 1), stats.t.cdf((d.mean() - MDE) / se, len(d) - 1))
    assert got["equivalence"]["p_tost"] == pytest.approx(want) and got["equivalence"]["margin"] == MDE
    every = YES + NO
    w = stats.wilcoxon(np.abs([one[n] for n in every]), np.abs([two[n] for n in every]))
    assert a["rule1"]["outcomes"]["nonrefusal"]["wilcoxon"]["p_value"] == pytest.approx(w.pvalue)
    # harmful compliance has its own margin, its own numbers
    assert a["rule1"]["outcomes"]["harm"]["margin"] == 0.1


def test_plus_minus_p_read_the_runs_null_test_and_the_random_nulls_alone(study):
    _, r2, a = study("polarity")
    pm = a["rule1"]["outcomes"]["nonrefusal"]["plus_minus"]
    assert pm["Yes-heavy"]["delta"] == pytest.approx(0.2) and pm["No-heavy"]["delta"] == pytest.approx(-0.2)
    assert pm["Yes-heavy"]["null"]["p_value"] == pytest.approx(1 / 25)
    s = json.loads((r2 / "decomposition" / "summary.json").read_text())
    rand = [r["delta_count"] for r in s["rows"] if r["kind"] == "random"]
    k = sum(abs(c) >= 10 for c in rand)
    assert pm["Yes-heavy"]["random_only"] == {"count": k, "n_null": 8, "p_value": (k + 1) / 9}


def test_rule3_shares_and_their_regression(study):
    r3 = study("rest")[2]["rule3"]
    assert r3["band"] == "2-3"  # every layer from the steering layer on, not the first band
    assert len(r3["units"]) == len(YES + NO + NONE_SETS) + 1 + 16
    reg = r3["regression"]["direction"]
    assert reg["all"]["r"] == pytest.approx(1) and reg["all"]["n"] == len(r3["units"])
    assert reg["real"]["n"] == 13 and reg["nulls"]["n"] == 16
    assert r3["regression"]["polarity"]["all"]["r"] == pytest.approx(1)


def test_rule4_counts_the_vectors_that_steer_with_round_one_beside(study):
    r4 = study("rest")[2]["rule4"]
    assert {r["vector"] for r in r4 if r["steers"]} == set(NO)
    assert all(r["round1_steers"] for r in r4)


def test_library_page_prints_round_two_only_with_round_one(study, capsys):
    r1, r2, _ = study("polarity")
    assert main([str(r2), "--round1", str(r1)]) == 0
    md = (r2 / "library.md").read_text()
    assert "## Round 2: which component carries the refusal shift" in md
    assert "**Δ non-refusal: the polarity component carries the shift in non-refusal.**" in md
    assert "**Δ harmful compliance:" in md and "Rule 3: mediation" in md
    assert "share through the polarity direction" in md and "round-2 vectors steer" in md
    assert "Both conditions hold" in md  # harmful compliance: a drop within the ±10-point margin
    assert json.loads((r2 / "library.json").read_text())["round2"]["rule1"]["sets"]
    assert main([str(r2)]) == 0  # without --round1: no round-2 section
    assert "Round 2:" not in (r2 / "library.md").read_text()
