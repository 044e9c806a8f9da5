"""The vector library's units (issue 40) and the words about it (issue 43): effective number of
directions, duplicates, clusters, claim 3 within clusters / cluster-robust / with the nulls as
units, the polarity cosine as a predictor, and an equivalence test where the old text read a
non-significant difference as equality. Torch-free; the committed study is read from its files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from steerlens.results import clustered, units
from steerlens.results.library import (
    analyse,
    format_analysis,
    implied_cosines,
    null_units,
    statements,
    vector_units,
)

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "results" / "library-0.5b"


@pytest.fixture(scope="module")
def committed():
    return analyse([STUDY / "caa", STUDY / "methods"], STUDY / "layer_scan.json")


def _orthonormal(k: int, d: int = 32, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, k)))
    return q.T


def test_participation_ratio_counts_directions_not_vectors():
    """One direction repeated (either sign, any norm) is 1; k orthogonal directions are k."""
    e = _orthonormal(3)
    assert units.participation_ratio(np.array([e[0], -2 * e[0], 5 * e[0]])) == pytest.approx(1)
    assert units.participation_ratio(e) == pytest.approx(3)
    assert units.participation_ratio(np.vstack([e, e[0], e[0]])) < 3


def test_duplicates_merge_only_the_same_intervention_and_clusters_split_axes_from_poles():
    e = _orthonormal(3)
    noise = 0.02 * _orthonormal(1, seed=1)[0]
    vecs = np.array([e[0], e[0] + noise, -e[0], e[1], e[1] + 0.9 * e[2], e[2]])
    g = units.duplicate_groups(vecs)
    assert g[0] == g[1] and len(set(g.tolist())) == 5  # v and −v are two interventions
    axes, poles = units.clusters(vecs), units.clusters(vecs, signed=True)
    assert axes[0] == axes[2] and poles[0] != poles[2]  # one axis, two poles
    assert axes[3] != axes[0]


def test_the_committed_library_is_few_directions(committed):
    """Issue 40's count, from the saved vectors: 20 CAA vectors are about two directions; the
    pca_diff and pca_center vectors are one unit; duplicates are merged before the unit analysis."""
    caa, every = committed["unit_sets"]["caa"]["geometry"], committed["unit_sets"]["all"]["geometry"]
    assert caa["participation_ratio"] == pytest.approx(2.0, abs=0.05)
    assert every["n_vectors"] == 32 and every["n_units"] < 32
    assert any({"survival-instinct:pca_center", "survival-instinct:pca_diff"} <= set(d)
               for d in every["duplicates"])
    assert len(committed["unit_sets"]["all"]["units"]) == every["n_units"]
    md = format_analysis(committed)
    assert "effective directions" in md and "within poles" in md and "cluster-robust" in md
    # the first-token screen: the 44 generated nulls and the 32 screened-only random directions
    assert committed["n_screened_nulls"] == 76 and "the 76 screened nulls as units" in md


def test_nulls_cosine_is_read_off_the_steering_layer_projection(committed):
    """The implied cosine of a label-shuffled null equals the cosine computed independently from
    its saved direction and the refusal mean difference at the steering layer."""
    from safetensors.numpy import load_file

    s = json.loads((STUDY / "caa" / "summary.json").read_text())
    real, nulls = vector_units(s, "caa"), null_units(s, "caa")
    check = implied_cosines(real, nulls)["caa"]
    assert check["max_relative_deviation"] < 1e-4
    ref = load_file(str(STUDY / "caa" / "refusal_direction.safetensors"))["means"]
    layers = json.loads((STUDY / "caa" / "refusal.json").read_text())
    d = ref[-1, [0, 3, 6, 9, 12, 14, 15, 18, 21].index(layers["steering_layer"])]
    for n in (n for n in nulls if n["kind"] == "shuffled"):
        v = load_file(str(STUDY / "caa" / "vectors" / f"{n['setting'].split('@')[0]}.safetensors"))["null"][0]
        assert n["cosine"] == pytest.approx(float(v @ d / np.linalg.norm(v) / np.linalg.norm(d)), abs=2e-4)


def test_within_cluster_and_cluster_robust_see_through_a_between_cluster_contrast():
    """x and y constant within 6 clusters of 8 near-copies: the pooled permutation test counts 48
    points and finds the contrast; the cluster-robust and within-cluster analyses do not."""
    rng = np.random.default_rng(3)
    cl = np.repeat(np.arange(6), 8)
    x = np.array([-1, -1, -0.5, 0.5, 1, 1])[cl] + 0.01 * rng.normal(size=48)
    y = np.array([-0.3, -0.6, 0.2, -0.1, 0.5, 0.7])[cl] + 0.01 * rng.normal(size=48)
    assert stats.pearsonr(x, y).pvalue < 1e-6
    assert clustered.wild_cluster(list(x), list(y), list(cl))["p_value"] > 0.05
    assert clustered.within_cluster(list(x), list(y), list(cl))["p_value"] > 0.05
    x2 = x + 0.3 * rng.normal(size=48)  # x varies inside clusters and y follows it there too
    y2 = 2 * x2 + 0.1 * rng.normal(size=48)
    assert clustered.within_cluster(list(x2), list(y2), list(cl))["p_value"] < 0.01


def test_cr1_standard_error_matches_the_sandwich_formula():
    rng = np.random.default_rng(0)
    cl = rng.integers(0, 7, 40)
    x, y = rng.normal(size=40), rng.normal(size=40)
    got = clustered.wild_cluster(list(x), list(y), list(cl))
    xm = np.column_stack([np.ones(40), x])
    b = np.linalg.lstsq(xm, y, rcond=None)[0]
    u = y - xm @ b
    meat = sum(np.outer(xm[cl == g].T @ u[cl == g], xm[cl == g].T @ u[cl == g]) for g in range(7))
    bread = np.linalg.inv(xm.T @ xm)
    v = bread @ meat @ bread * 7 / 6 * 39 / 38
    assert got["slope"] == pytest.approx(b[1]) and got["se_cr1"] == pytest.approx(np.sqrt(v[1, 1]))


def test_tost_is_two_welch_tests_and_non_significance_is_not_equivalence():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.15, 0.1, 8), rng.normal(0.14, 0.1, 8)
    t = clustered.tost_welch(list(a), list(b), 0.02)
    assert stats.ttest_ind(a, b, equal_var=False).pvalue > 0.05 and not t["equivalent"]
    va, vb = a.var(ddof=1) / 8, b.var(ddof=1) / 8
    df = (va + vb) ** 2 / (va ** 2 / 7 + vb ** 2 / 7)
    diff, se = a.mean() - b.mean(), np.sqrt(va + vb)
    want = max(stats.t.sf((diff + 0.02) / se, df), stats.t.cdf((diff - 0.02) / se, df))
    assert t["p_tost"] == pytest.approx(want)
    big = clustered.tost_welch(list(rng.normal(0, 0.1, 400)), list(rng.normal(0, 0.1, 400)), 0.05)
    assert big["equivalent"]


def _planted(p_two: float, p_tost: float, p_caa: float) -> dict:
    corr = {"r": -0.9, "p_value": 1e-4, "n": 20}
    part = {"r": 0.5, "p_value": p_caa, "n": 20}
    pred = {"cosine": corr, "projection_shift": corr, "cosine_given_projection": part,
            "projection_given_cosine": part}
    o = {"all": {**pred, "cosine_given_projection": {"r": -0.1, "p_value": 0.6, "n": 32}},
         "steering_only": pred, "caa_only": pred,
         "real_vs_null": {"covariance": {"p_value": p_two, "mean_abs_real": 0.15, "mean_abs_null": 0.14,
                                         "difference": 0.01, "n_real": 32, "n_null": 8}},
         "equivalence": {"covariance": {"p_tost": p_tost, "equivalent": p_tost < 0.05, "margin": 0.17,
                                        "ci90_low": -0.05, "ci90_high": 0.08, "difference": 0.01}}}
    return {"outcomes": {"nonrefusal": o, "harm": o}, "nulls": [], "unit_sets": {}}


def test_statements_say_only_what_the_tests_show():
    """The old words: 'the cosine adds nothing ... not the reverse' (false on the CAA vectors) and
    'moves refusal about as much' (a non-significant difference read as equality)."""
    text = " ".join(statements(_planted(p_two=0.73, p_tost=0.3, p_caa=0.014)))
    assert "on the 20 CAA vectors it still predicts (partial r +0.50, p 0.014)" in text
    assert "equivalence within ±17 points is not shown" in text and "as much" not in text
    assert "detectably" in text
    text = " ".join(statements(_planted(p_two=0.73, p_tost=0.001, p_caa=0.4)))
    assert "equivalence within ±17 points is shown" in text and "CAA vectors it adds nothing" in text


def test_polarity_cosine_is_a_predictor_when_recorded(tmp_path, committed):
    """Absent: no polarity rows. From a direction file: each vector's cosine with it, and the
    polarity cosine enters the predictors (here a planted direction: the first CAA vector's)."""
    from safetensors.numpy import save_file

    assert "polarity_cosine" not in committed["outcomes"]["nonrefusal"]["all"]
    v = units.layer_vector(STUDY / "caa" / "vectors" / "corrigible-neutral-HHH.safetensors", 14)
    save_file({"direction": v.astype(np.float32)}, str(tmp_path / "pol.safetensors"))
    got = units.polarity_direction(tmp_path / "pol.safetensors", 14)
    recs = [{"vector": "a", "polarity_cos": None}, {"vector": "b", "polarity_cos": 0.3}]
    units.fill_polarity(recs, {"a": 2 * got, "b": got}, got)
    assert recs[0]["polarity_cos"] == pytest.approx(1) and recs[1]["polarity_cos"] == 0.3
    from steerlens.results.library import predictors

    rng = np.random.default_rng(0)
    planted = [{"cosine": c, "projection_shift": c, "polarity_cos": p, "nonrefusal": -p}
               for c, p in zip(rng.normal(size=12), rng.normal(size=12))]
    assert predictors(planted, "nonrefusal")["polarity_cosine"]["r"] == pytest.approx(-1)


def _paragraph(text: str, needle: str) -> str:
    return next(p for p in text.split("\n\n") if needle in p)


def test_docs_say_what_the_committed_library_shows(committed):
    """README, docs/library.md and the findings discussion: the goal count is the run's; no
    unqualified 'not the reverse' while the CAA vectors' partial correlation is significant; any
    'about as much' comes with the equivalence test."""
    n_goals = json.loads((STUDY / "caa" / "config.json").read_text())["config"]["n_goals"]
    docs = {p: (ROOT / p).read_text()
            for p in ("README.md", "docs/library.md", "docs/findings_discussion_round1.md")}
    lib = {"README.md": docs["README.md"].split("## Why, across many vectors")[1].split("\n## ")[0],
           "docs/library.md": docs["docs/library.md"].split("## Results")[1],
           "docs/findings_discussion_round1.md": _paragraph(
               docs["docs/findings_discussion_round1.md"], "vector-library")}
    caa_p = committed["outcomes"]["nonrefusal"]["caa_only"]["cosine_given_projection"]["p_value"]
    for name, text in lib.items():
        text = "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))  # one line per paragraph
        for m in re.finditer(r"(?:all|same) (\d+) (?:JBB )?goals", text):
            assert int(m.group(1)) == n_goals, (name, m.group(0))
        if caa_p < 0.05:
            assert "not the reverse" not in text, name
        for para in text.split("\n\n"):
            if "as much" in para:
                assert "TOST" in para, (name, para[:80])
    assert "same 100 goals" not in " ".join(docs["docs/library.md"].split())


def test_polarity_is_read_from_overlap_json_and_units_split_by_attack(tmp_path):
    """Branch-written `polarity_cos` in a run's overlap.json reaches the unit records; a run with
    two attacks gives one unit set per attack (a vector under one attack is one unit)."""
    from steerlens.results.library import _by_attack, _recorded_polarity

    (tmp_path / "overlap.json").write_text(json.dumps({"a": {"cosine": 0.1, "polarity_cos": 0.9}}))
    recs = [{"vector": "a", "run": "r", "polarity_cos": None, "attack": "none"},
            {"vector": "b", "run": "r", "polarity_cos": None, "attack": "none"},
            {"vector": "a", "run": "r", "polarity_cos": None, "attack": "aim"}]
    _recorded_polarity({"r": tmp_path}, recs)
    assert [r["polarity_cos"] for r in recs] == [0.9, None, 0.9]
    assert {k: len(v) for k, v in _by_attack({"all": recs}).items()} == {"all@none": 2, "all@aim": 1}
    assert list(_by_attack({"all": recs[:2]})) == ["all"]


def test_analysis_with_a_per_layer_polarity_file(tmp_path):
    """A per-layer direction file (`vectors` + its `layers`, as audits save vectors): every unit
    gets its cosine at the steering layer, computed here independently, and the polarity cosine
    enters the predictors. Planted: the polarity direction is corrigible-neutral-HHH's CAA vector."""
    from safetensors.numpy import load_file, save_file

    src = STUDY / "methods" / "vectors" / "corrigible-neutral-HHH.safetensors"
    meta = {"steerlens": json.dumps({"layers": units._metadata(src)["layers"]})}
    save_file({"vectors": load_file(str(src))["vectors"]}, str(tmp_path / "pol.safetensors"), meta)
    a = analyse({"methods": STUDY / "methods"}, polarity=tmp_path / "pol.safetensors")
    d = units.layer_vector(src, 14)
    for u in a["vectors"]:
        v = units.layer_vector(units.vector_file(STUDY / "methods", u["vector"]), 14)
        assert u["polarity_cos"] == pytest.approx(float(v @ d / np.linalg.norm(v) / np.linalg.norm(d)))
    assert {"polarity_cosine", "cosine_given_polarity"} <= set(a["outcomes"]["nonrefusal"]["all"])
    assert "polarity cosine" in format_analysis(a)


def test_each_outcomes_equivalence_uses_its_own_margin():
    """The library's TOST on harmful compliance uses the harm MDE; without one it is not run
    (never the non-refusal margin in its place)."""
    from steerlens.results.library import outcome_margin

    d = {"minimum_detectable_delta_non_refusal": 0.17,
         "by_outcome": {"nonrefusal": {"minimum_detectable_shift": 0.17},
                        "harm": {"minimum_detectable_shift": 0.11}}}
    assert outcome_margin(d, "harm") == 0.11 and outcome_margin(d, "nonrefusal") == 0.17
    old = {"minimum_detectable_delta_non_refusal": 0.17}
    assert outcome_margin(old, "harm") is None and outcome_margin(old, "nonrefusal") == 0.17
