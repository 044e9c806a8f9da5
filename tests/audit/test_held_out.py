"""The behaviour check's items: held-out test items for every reading, and for the per-polarity
reading only, generate items the vector was not extracted from where the test items hold too
few of a polarity."""

from types import SimpleNamespace

import pytest
import torch

from steerlens.audit.config import AuditConfig
from steerlens.audit.held_out import (
    MIN_POLARITY_TEST,
    POLARITY_TOP_UP,
    TOP_UP_SOURCE,
    check_items,
    extracted_indices,
    held_out_items,
)
from steerlens.datasets.behaviours import behaviour_split
from steerlens.methods.polarity import item_polarity

YES_HEAVY = "corrigible-neutral-HHH"  # held-out: 23 Yes / 0 No / 1 other in the first 24


@pytest.mark.parametrize("n_caa_items,seed", [(64, 0), (48, 1), (200, 3), (250, 0)])
def test_the_top_up_is_unextracted_items_of_the_short_polarity(n_caa_items, seed):
    """A polarity with fewer than 3 held-out items is topped up to 8 with generate items of
    that polarity, in file order, none of which the vector was extracted from (unless fewer
    than 3 are left: then none is read and the record says why)."""
    generate = behaviour_split(YES_HEAVY, "generate")
    used = set(extracted_indices(len(generate), n_caa_items, seed))
    check = check_items(YES_HEAVY, 24, n_caa_items, seed)
    no = check.record["no"]
    unused_no = [i for i, it in enumerate(generate) if i not in used and item_polarity(it) == "no"]
    if len(unused_no) < MIN_POLARITY_TEST:  # 250 extracted: 2 left, not read
        assert no == {"n_test": 0, "n_top_up": 0, "not_checked": "0 held-out and 2 unextracted "
                      "generate items with a No-like matching answer: fewer than 3"}
        assert check.top_up == []
        return
    assert no["n_test"] == 0 and no["generate_indices"] == unused_no[:POLARITY_TOP_UP]
    assert no["n_top_up"] == min(POLARITY_TOP_UP, len(unused_no)) and no["source"] == TOP_UP_SOURCE
    assert not set(no["generate_indices"]) & used and "not_checked" not in no
    assert check.top_up == [generate[i] for i in no["generate_indices"]]
    assert check.top_up_groups == ["no"] * no["n_top_up"]
    assert check.record["yes"] == {"n_test": 23, "n_top_up": 0}
    assert check.test == held_out_items(YES_HEAVY, 24) == behaviour_split(YES_HEAVY, "test")[:24]


def test_no_unextracted_item_of_a_polarity_is_recorded_not_checked():
    """Every generate item extracted (or a set with no Yes item at all): nothing to top up, and
    the record says why the polarity is not checked."""
    n = len(behaviour_split(YES_HEAVY, "generate"))
    check = check_items(YES_HEAVY, 24, n, 0)
    assert check.top_up == [] and check.record["no"]["n_top_up"] == 0
    assert "0 held-out and 0 unextracted generate items with a No-like" in check.record["no"]["not_checked"]
    none = check_items("sycophancy", 24, 64, 0)  # all answers are letters: other
    assert none.top_up == [] and set(none.record) == {"yes", "no"}
    assert all("not_checked" in r for r in none.record.values())


def test_polarity_check_says_why_a_polarity_is_not_checked():
    from steerlens.audit.vector_stages import polarity_check

    by = {"yes": {"shift": 0.3, "n_items": 20}, "no": {"shift": -0.2, "n_items": 1}}
    effect = {"+0.15": {"by_polarity": by}, "-0.15": {"by_polarity": by}}
    record = {"yes": {"n_test": 20, "n_top_up": 0},
              "no": {"n_test": 1, "n_top_up": 0, "not_checked": "none left"}}
    got = polarity_check(effect, 0.15, record)
    assert got["no"] == {"n_items": 1, "checked": False, "why": "none left"}
    assert got["yes"]["checked"] and "why" not in got["yes"]


def test_the_top_up_runs_the_check_and_leaves_the_overall_effect(tiny_model):
    """On a set whose held-out items hold 1 No item: the No reading is topped up with 7
    unextracted generate items, both polarities are checked, the top-up holds none of the
    items `_caa_acts` extracts from, and the overall numbers are exactly those of the test items
    alone (the computation before the top-up)."""
    from steerlens.audit import vector_stages
    from steerlens.audit.evaluate import behaviour_effect
    from steerlens.audit.settings import dosed
    from steerlens.core.steering import addition
    from steerlens.core.vectors import SteeringVector

    b = "coordinate-other-ais"  # the first 10 held-out: 8 Yes / 1 No / 1 other
    cfg = AuditConfig(behaviours=(b,), n_behaviour_test=10, n_caa_items=8, batch_size=8)
    ref = SimpleNamespace(layer=1, direction=SimpleNamespace(layers=[1]))
    v = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    sv = SteeringVector(v[None], [1], "resid_pre", {"kind": "caa", "behaviour": b})
    check = vector_stages._check_items(cfg, b)
    assert check.record["no"]["n_test"] == 1 and check.record["no"]["n_top_up"] == 7
    extracted, _, _ = vector_stages._caa_acts(tiny_model, cfg, ref, b)
    assert not [it for it in check.top_up if it in extracted]

    effect = vector_stages._effects(tiny_model, cfg, ref, {b: sv}, [-2, 2], 3.0, check)[b]
    checks = vector_stages.polarity_check(effect, 2, check.record)
    assert checks["yes"]["checked"] and checks["no"]["checked"]
    assert checks["no"]["n_items"] == 1 + 7 and checks["yes"]["n_items"] == 8

    settings = {f"{d:+g}": addition(dosed(v, d, 3.0), 1) for d in (-2, 2)}
    old = behaviour_effect(tiny_model, check.test, settings, 8, None,
                           groups=[item_polarity(it) for it in check.test])
    assert effect["unsteered"] == old["unsteered"]
    for k in settings:
        assert {x: y for x, y in effect[k].items() if x != "by_polarity"} == \
            {x: y for x, y in old[k].items() if x != "by_polarity"}
        assert effect[k]["by_polarity"]["yes"] == {**old[k]["by_polarity"]["yes"], "n_top_up": 0}
    no_items = [it for it in check.test if item_polarity(it) == "no"] + check.top_up
    alone = behaviour_effect(tiny_model, no_items, settings, 8, None, groups=["no"] * len(no_items))
    for k in settings:
        got = effect[k]["by_polarity"]["no"]
        assert got["shift"] == pytest.approx(alone[k]["by_polarity"]["no"]["shift"], abs=1e-5)
        assert got["n_top_up"] == 7 and MIN_POLARITY_TEST <= got["n_items"]
