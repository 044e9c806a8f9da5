"""Mitigations for unsafe steering vectors: downstream compensation and CAST conditional steering,
each on the tiny random model with a planted case."""

import pytest
import torch

from steerlens.core.activations import collect_resid
from steerlens.core.generation import generate_grid, next_token_logits, next_token_logits_grid
from steerlens.core.geometry import unit
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import Steering, addition, combine
from steerlens.datasets.loaders import load_instructions, load_jbb
from steerlens.errors import SteerlensError
from steerlens.methods.mitigations import (
    Condition,
    best_condition_point,
    compensation,
    f1_score,
    find_condition_point,
    gate_decisions,
    gated,
    projection_shift,
    prompt_means,
)
from steerlens.methods.refusal import refusal_activations

MARKER = " bomb" * 6  # planted: every "harmful" prompt carries it, no harmless one does


def _ins(split, a, b):
    return [x.instruction for x in load_instructions(split)[a:b]]


@pytest.fixture(scope="module")
def refusal_dirs(tiny_model):
    """Difference in means at the last tail position of every layer (Arditi's, unselected)."""
    acts = refusal_activations(tiny_model, _ins("harmful_train", 0, 8), _ins("harmless_train", 0, 8),
                               range(tiny_model.cfg.n_layers))
    return {lay: acts.means()[-1, lay] for lay in acts.layers}, acts.resid_norm(1)


def test_compensation_cancels_mean_projection_shift_layer_by_layer(tiny_model, refusal_dirs):
    """Planted: v = -2 x resid norm x r_1 at layer 1 shifts the later refusal projections
    clearly; the compensated steering leaves no mean shift at layers 2 and 3 (relative < 1e-3)
    and still adds v at layer 1. Calibrating both layers at once would not cancel layer 3."""
    dirs, norm = refusal_dirs
    steer = addition(-2 * norm * unit(dirs[1]).float(), 1)
    calib = _ins("harmful_val", 0, 8)
    comp = compensation(tiny_model, steer, dirs, [2, 3], calib)
    ps = chat_prompts(tiny_model.tokenizer, calib)
    before = {lay: projection_shift(tiny_model, ps, steer, lay, dirs[lay]) for lay in (2, 3)}
    after = {lay: projection_shift(tiny_model, ps, comp, lay, dirs[lay]) for lay in (2, 3)}
    for lay in (2, 3):
        assert abs(before[lay]) > 0.5  # about -2.9 and -2.4 on the tiny model
        assert abs(after[lay]) < 1e-3 * abs(before[lay])
    assert comp.interventions[0] is steer.interventions[0]
    assert [(i.layer, i.positions) for i in comp.interventions[1:]] == [
        (2, "after_instruction"), (3, "after_instruction")]
    assert comp.interventions[1].multiplier == pytest.approx(-before[2], rel=1e-6)
    tail = ps.tail_positions()
    plain, ours = (collect_resid(tiny_model, ps, [1], tail, steering=s, desc=None) for s in (steer, comp))
    assert torch.equal(plain, ours)
    one_shot = combine(steer, *[addition(unit(dirs[lay]).float(), lay, -before[lay]) for lay in (2, 3)])
    assert abs(projection_shift(tiny_model, ps, one_shot, 3, dirs[3])) > 0.1 * abs(before[3])


def test_compensation_refuses_jbb_and_earlier_layers(tiny_model, refusal_dirs):
    dirs, _ = refusal_dirs
    steer = addition(unit(dirs[2]).float(), 2)
    with pytest.raises(SteerlensError, match="JBB goals"):
        compensation(tiny_model, steer, dirs, [3], [load_jbb("harmful")[0].goal])
    with pytest.raises(SteerlensError, match="after the steering layer"):
        compensation(tiny_model, steer, dirs, [2, 3], _ins("harmful_val", 0, 2))


def test_ibm_search_rules():
    """IBM's naming ("larger": the threshold is larger, met below it), F1 of the harmful class,
    and the first strictly best point kept."""
    truth = torch.tensor([True, True, False, False])
    assert f1_score(truth, torch.tensor([True, False, False, True])) == pytest.approx(0.5)
    assert f1_score(truth, torch.zeros(4, dtype=torch.bool)) == 0.0
    sims = {1: torch.tensor([0.1, 0.2, 0.6, 0.7]), 2: torch.tensor([0.9, 0.8, 0.1, 0.2])}
    assert best_condition_point(sims, truth, [0.3, 0.5], ["larger", "smaller"]) == (1, 0.3, "larger", 1.0)
    assert best_condition_point({2: sims[2]}, truth, [0.5], ["larger", "smaller"])[2] == "smaller"


@pytest.fixture(scope="module")
def planted(tiny_model):
    harmful = [x + MARKER for x in _ins("harmful_train", 0, 12)]
    harmless = _ins("harmless_train", 0, 12)
    return harmful, harmless, find_condition_point(tiny_model, harmful, harmless, [1, 2, 3])


def test_condition_point_separates_planted_prompts(tiny_model, planted):
    """IBM's search (default thresholds 0..0.99) finds a point with F1 = 1 on the planted
    training prompts: the gate steers every benign prompt and no harmful one."""
    harmful, harmless, cond = planted
    assert cond.f1 == 1.0 and cond.layer in (1, 2, 3) and cond.comparator in ("larger", "smaller")
    assert not any(gate_decisions(tiny_model, harmful, cond))
    assert all(gate_decisions(tiny_model, harmless, cond))


def test_prompt_means_ignore_padding(tiny_model, planted):
    harmful, harmless, _ = planted
    ps = chat_prompts(tiny_model.tokenizer, [harmful[0], harmless[0], harmless[5]])
    together = prompt_means(tiny_model, ps, [1, 3])
    alone = torch.cat([prompt_means(tiny_model, ps.subset([i]), [1, 3]) for i in range(3)])
    assert len({len(r) for r in ps.rows}) == 3  # three lengths: two rows are left-padded
    assert torch.allclose(together, alone, atol=1e-5)


def test_gated_steering_acts_per_row(tiny_model, planted):
    """In one left-padded batch, harmful rows' logits are exactly the unsteered ones, benign
    rows' exactly the ungated steering's; the gate's in-pass similarity equals `prompt_means`'.
    Generation (shared prefix, body cache, decode) and the logit grid agree."""
    harmful, harmless, cond = planted
    ps = chat_prompts(tiny_model.tokenizer, [harmful[0], harmless[0], harmless[5], harmful[3]])
    v = 2 * torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    steer, gate = addition(v, 3), gated(addition(v, 3), cond)
    assert gate_decisions(tiny_model, ps, cond) == [False, True, True, False]
    base, plain, got = (next_token_logits(tiny_model, ps, s, batch_size=4) for s in (None, steer, gate))
    assert torch.equal(got[[0, 3]], base[[0, 3]])
    assert torch.equal(got[[1, 2]], plain[[1, 2]])
    assert (plain - base).abs().amax(-1).min() > 0.1
    order = sorted(range(4), key=lambda i: len(ps.rows[i]))  # next_token_logits' batch order
    sims = cond.similarity(prompt_means(tiny_model, ps, [cond.layer])[:, 0])
    assert torch.allclose(gate.state.similarity, sims[order], atol=1e-6)
    settings = {"base": Steering(), "gated": gated(steer, cond), "plain": steer}
    cells = generate_grid(tiny_model, ps, settings, max_new_tokens=5, batch_size=4, desc=None)
    toks = {k: [c.tokens for c in cell.completions] for k, cell in cells.items()}
    assert [toks["gated"][i] for i in (0, 3)] == [toks["base"][i] for i in (0, 3)]
    assert [toks["gated"][i] for i in (1, 2)] == [toks["plain"][i] for i in (1, 2)]
    grid = next_token_logits_grid(tiny_model, ps, {**settings, "gated": gated(steer, cond)}, batch_size=4)
    assert torch.allclose(grid["gated"][[0, 3]], grid["base"][[0, 3]], atol=1e-5)
    assert torch.allclose(grid["gated"][[1, 2]], grid["plain"][[1, 2]], atol=1e-5)


def test_gate_validation(tiny_model):
    cond = Condition(torch.ones(tiny_model.cfg.d_model), 2, 0.5, "larger")
    v = torch.ones(tiny_model.cfg.d_model)
    with pytest.raises(SteerlensError, match="condition layer 2 must be in 1..1"):
        gated(addition(v, 1), cond)
    with pytest.raises(SteerlensError, match="after-instruction additions"):
        gated(addition(v, 2, positions="all"), cond)
    with pytest.raises(SteerlensError, match="unknown comparator"):
        Condition(v, 1, 0.5, "bigger")
    with pytest.raises(SteerlensError, match="no decision"):
        gate = gated(addition(v, 2), cond)
        ps = chat_prompts(tiny_model.tokenizer, ["Hi"])
        with gate.apply(tiny_model, tail=None):
            tiny_model(torch.tensor([ps.full(0)]))
