"""The clamp's grid cell (core.patching.twinned_cell) and first-pass logits on the tiny random
model, against the plain paths: the twin is fed the row's tokens, nothing clamped is +v, all of
R^d clamped from the steering layer on is the unsteered model, with the grid's early exit and
readout."""

import pytest
import torch

from steerlens.core.generation import Readout, generate_grid, next_token_logits, stop_token_ids
from steerlens.core.hooks import hook_name
from steerlens.core.patching import TwinClamp, twinned_cell, twinned_next_token_logits
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import Steering, addition
from steerlens.datasets.loaders import load_jbb

L, LAYERS = 1, [1, 2, 3]


@pytest.fixture(scope="module")
def prompts(tiny_model):
    return chat_prompts(tiny_model.tokenizer, [b.goal for b in load_jbb("harmful")[:6]])


def _vec(seed: int, norm: float = 12.0) -> torch.Tensor:
    from conftest import seeded_vector

    return seeded_vector(seed, norm)


def _stop_after(n: int):
    """A judge-like early exit that fires at different steps on different rows."""
    return lambda text: len(text) >= n


def _clamps(steering):
    return (TwinClamp(steering, LAYERS, torch.zeros(3, 1, 64)),
            TwinClamp(steering, LAYERS, torch.eye(64)[None].repeat(3, 1, 1)))


def test_the_twin_is_fed_the_rows_tokens(tiny_model, prompts):
    """Before the steering layer the twins' and the rows' residuals are equal at every call
    (prompt pass and each decode step, also after finished pairs leave the batch): the
    same tokens; at the last layer they differ (the steering acts)."""
    seen = {0: [], 3: []}

    def grab(x, hook, lay):
        seen[lay].append(x.clone())
        return x

    none, _ = _clamps(addition(_vec(1), L))
    hooks = [(hook_name(lay), lambda x, hook, lay=lay: grab(x, hook, lay)) for lay in seen]
    with tiny_model.hooks(fwd_hooks=hooks):
        twinned_cell(tiny_model, prompts, none, 8, batch_size=6, decided=_stop_after(12))
    sizes = {x.shape[0] for x in seen[0]}
    assert len(seen[0]) > 2 and len(sizes) > 1  # finished pairs left the batch
    for x in seen[0]:
        b = x.shape[0] // 2
        assert torch.equal(x[:b], x[b:])
    assert any(not torch.allclose(x[: x.shape[0] // 2], x[x.shape[0] // 2:]) for x in seen[3])


def test_nothing_clamped_is_plus_v_and_everything_clamped_is_unsteered(tiny_model, prompts):
    """With the grid's early exit and readout: zero bases give +v's cell (tokens, how each row
    stopped, first-token score, projections), R^d from the steering layer on the unsteered
    cell's; the two differ."""
    st = addition(_vec(2), L)
    readout = Readout([5, 7], layers=[1, 3], bases=torch.eye(64)[:2].expand(2, 2, 64))
    decided = _stop_after(10)
    grid = generate_grid(tiny_model, prompts, {"v": st, "base": Steering()}, 8, 3,
                         decided=decided, readout=readout, desc=None)
    none, full = _clamps(st)
    for clamp, want in ((none, grid["v"]), (full, grid["base"])):
        got = twinned_cell(tiny_model, prompts, clamp, 8, 4, decided, readout)
        assert [c.tokens for c in got.completions] == [c.tokens for c in want.completions]
        assert [c.stopped for c in got.completions] == [c.stopped for c in want.completions]
        torch.testing.assert_close(torch.tensor(got.refusal_score), torch.tensor(want.refusal_score),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(got.projection), torch.tensor(want.projection),
                                   atol=1e-4, rtol=0)
    assert [c.tokens for c in grid["v"].completions] != [c.tokens for c in grid["base"].completions]


def test_first_pass_logits_of_the_clamp(tiny_model, prompts):
    """The single-forward measurements (behaviour kept, MMLU/TruthfulQA) under a clamp: zero
    bases give +v's next-token logits, R^d the unsteered ones."""
    st = addition(_vec(3), L)
    none, full = _clamps(st)
    plus, base = next_token_logits(tiny_model, prompts, st), next_token_logits(tiny_model, prompts)
    assert (plus - base).abs().max() > 1.0
    torch.testing.assert_close(twinned_next_token_logits(tiny_model, prompts, none, 4), plus,
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(twinned_next_token_logits(tiny_model, prompts, full, 4), base,
                               atol=1e-4, rtol=0)


def test_stop_tokens_end_a_pair(tiny_model, prompts):
    """A stop token ends the row (stopped 'eos') as in the grid: every token a stop token
    gives empty completions."""
    none, _ = _clamps(addition(_vec(4), L))
    cell = twinned_cell(tiny_model, prompts, none, 5, 3, stop_ids=set(range(tiny_model.cfg.d_vocab)))
    assert all(c.tokens == [] and c.stopped == "eos" for c in cell.completions)
    assert stop_token_ids(tiny_model.tokenizer)
