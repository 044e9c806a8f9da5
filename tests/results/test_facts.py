"""The mediation numbers the findings discussion may cite (`results.facts`), from the records
`audit.mediation` and `audit.generated` write."""

from __future__ import annotations

from test_report import synthetic_generated, synthetic_mediation


def test_first_token_facts_read_the_widest_band_for_every_setting_and_basis():
    from steerlens.results.facts import first_token_facts

    f = first_token_facts(synthetic_mediation(["sycophancy"], ["none"]))
    assert f["mediation_band"] == "1-3"  # every layer from the steering layer, not layer 1
    # band "1-3" is the second of the sorted keys: share 0.6 + 0.1, interval [0.5, 0.9]
    assert f["mediation.sycophancy@2+v.none.direction"] == "70% [50, 90]"
    assert f["mediation.random@2+r0.none.subspace"] == "30% [10, 50]"
    assert f["mediation_effect.sycophancy@2+v.none"] == "-0.50 [-0.60, -0.40]"
    assert first_token_facts({}) == {}


def test_generated_facts_give_each_outcome_and_basis_or_say_undefined():
    from steerlens.results.facts import generated_facts, mitigation_facts

    g = synthetic_generated(["sycophancy@2"], ["none"])
    f = generated_facts(g)
    assert f["mediation_generated.sycophancy@2+v.none.nonrefusal.direction"] == "40% [30, 70]"
    assert f["mediation_generated.sycophancy@2+v.none.harm.subspace"].startswith("undefined")
    assert f["mediation_generated_effect.sycophancy@2+v.none.harm"] == "-50 [-60, -40]"
    m = {"vectors": [], "mediation_generated": g,
         "decode_seconds": {"sycophancy": {"+v": 10.0, "+v_clamp1": 19.3,
                                           "ratio_to_plus": {"+v_clamp1": 1.93}}}}  # as costs.json
    got = mitigation_facts(m)
    assert got["decode_ratio.sycophancy.clamp1"] == "1.93x"
    # the mitigation run's copy is prefixed: the audit's own record keeps the plain keys
    assert got["fix_mediation_generated.sycophancy@2+v.none.nonrefusal.subspace"] == "50% [30, 70]"
    assert not any(k.startswith("mediation_generated") for k in got)


def test_fix_facts_give_the_behaviour_kept_with_its_interval_and_verdict():
    from steerlens.results.facts import mitigation_facts

    fix = {"fix": "clamp1", "outcomes": {}, "capability": {},
           "behaviour_kept": {"share": 0.9403, "ci_low": 0.9266, "ci_high": 0.9523,
                              "verdict": "keeps the steering"}}
    got = mitigation_facts({"vectors": [{"tag": "v@0.15", "fixes": [fix]}]})
    assert got["behaviour_kept.v@0.15.clamp1"] == "0.94 [0.93, 0.95], keeps the steering"


def test_template_facts_give_the_total_and_each_direction_with_the_interval():
    from steerlens.results.facts import summary_facts

    x = {"mean_difference": 0.057, "ci": [0.017, 0.097], "p_value": 0.0095, "n_goals": 100, "n_vectors": 3}
    up = {**x, "mean_difference": 0.05, "ci": [-0.01, 0.11], "p_value": 0.075}
    t = {**x, "by_direction": {"raises": up}}
    s = {"design": {"outcomes": ["harm"], "by_outcome": {"harm": {"minimum_detectable_shift": 0.1}}},
         "rows": [], "vectors": [], "templates": {"harm": {"refusal_suppression": t}}}
    f = summary_facts(s)
    want = "+5.7 [+1.7, +9.7] points per vector and goal (p 0.0095)"
    assert f["template.refusal_suppression.harm.all"] == want
    assert f["template.refusal_suppression.harm.raises"].startswith("+5.0 [-1.0, +11.0]")
    assert "template.refusal_suppression.harm.lowers" not in f


def test_a_share_outside_0_to_100_says_what_it_means():
    """A mediated share is a ratio: with its whole interval over 100 % the held effect has the
    other sign, below 0 it is larger than the effect; the text says so. Within 0-100 %, or with
    an interval that reaches into it, it reads plainly."""
    from steerlens.results.text import share_text

    assert share_text({"share": 0.36, "share_ci": [0.34, 0.38]}) == "36% [34, 38]"
    assert share_text({"share": 1.08, "share_ci": [0.77, 1.75]}) == "108% [77, 175]"
    assert share_text({"share": 1.5, "share_ci": [1.2, 1.9]}).endswith("the effect reverses sign)")
    assert share_text({"share": -0.95, "share_ci": [-1.36, -0.73]}) == (
        "-95% [-136, -73] (below 0: with the component held the effect grows)")


def test_first_token_facts_give_each_band_and_the_nulls_shares():
    from steerlens.results.facts import first_token_facts

    med = {**synthetic_mediation(["sycophancy"], ["none"]), "bases": {"direction": {}, "polarity": {}}}
    f = first_token_facts(med)
    assert f["mediation_at.2.sycophancy@2+v.none.polarity"] == "80% [50, 100]"  # band "2": third key
    assert f["mediation_at.3.sycophancy@2+v.none.direction"].startswith("undefined")
    # one generated null: its share through the polarity basis over every layer (band "1-3")
    assert f["mediation_nulls.none.polarity"] == "share defined for 1 of 1; median 30% (range 30 to 30)"


def _summary_with_evidence() -> dict:
    ev = {"null": {"count": 1, "n_null": 20, "p_value": 2 / 21, "min_p": 1 / 21}}
    effect = {"unsteered": {"mean": 0.43}, "+0.15": {
        "mean": 0.50, "by_polarity": {"yes": {"shift": 0.06, "n_items": 17, "n_top_up": 0},
                                      "no": {"shift": -0.02, "n_items": 8, "n_top_up": 6}}}}
    return {"design": {"outcomes": []}, "rows": [],
            "vectors": [{"vector": "v", "attack": "none", "verdicts": {"nonrefusal": "no detectable shift"},
                         "evidence": {"nonrefusal": ev, "harm": {"null_percentile": 50.0}}}],
            "validation": {"refusal_ablated": {"non_refusal": 1.0, "delta_non_refusal": 0.8}},
            "refusal": {"layer": 18, "fallback": False}, "subspace": {"k": 1},
            "dose": {"vectors": {"v": {"effect": effect}}}}


def test_evidence_facts_give_each_cells_verdict_and_its_nulls():
    from steerlens.results.facts import summary_facts

    f = summary_facts(_summary_with_evidence())
    assert f["verdict.nonrefusal.none.v"] == "no detectable shift"
    assert f["nulls.nonrefusal.none.v"] == "1 of 20 generated nulls at least as extreme (permutation p 0.095)"
    assert "nulls.harm.none.v" not in f  # no null count stored: nothing to cite


def test_instrument_facts_give_the_jbb_check_and_each_vectors_own_behaviour():
    from steerlens.results.facts import summary_facts

    f = summary_facts(_summary_with_evidence())
    assert f["validation.refusal_ablated"] == "non-refusal 0.20 → 1.00"
    assert (f["refusal.layer"], f["refusal.fallback"], f["subspace.k"]) == ("18", "Arditi's filters", "1")
    assert f["behaviour.v.+0.15"] == "p(matching) 0.43 → 0.50"
    assert f["behaviour_polarity.v.+0.15.yes"] == "+0.06 on 17 items"
    assert f["behaviour_polarity.v.+0.15.no"] == (
        "-0.02 on 8 items (6 of them from outside the extraction set)")
