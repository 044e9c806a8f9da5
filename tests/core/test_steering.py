import pytest
import torch

from steerlens.core.prompts import chat_prompts, full_batch
from steerlens.core.steering import ActivationAddition, Steering, ablation, addition, combine
from steerlens.core.vectors import SteeringVector
from steerlens.errors import SteerlensError


def _resid(model, steering, layer=3, tail=None):
    prompts = chat_prompts(model.tokenizer, ["Tell me a story", "Hi"])
    b = full_batch(prompts, model.tokenizer)
    got = {}

    def grab(x, hook):
        got["x"] = x.clone()
        return x

    with steering.apply(model, tail=tail):
        model.run_with_hooks(b.input_ids, attention_mask=b.attention_mask,
                             fwd_hooks=[(f"blocks.{layer}.hook_resid_post", grab)])
    return got["x"], b


def test_ablation_removes_direction_from_residual_writes(tiny_model):
    r = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    x, b = _resid(tiny_model, ablation(r[None], tiny_model.cfg.n_layers))
    proj = (x @ (r / r.norm()))[b.attention_mask.bool()]
    assert proj.abs().max() < 1e-4
    x0, _ = _resid(tiny_model, Steering())
    assert (x0 @ (r / r.norm()))[b.attention_mask.bool()].abs().max() > 1e-2


def test_addition_after_instruction_only_touches_tail(tiny_model):
    v = torch.ones(tiny_model.cfg.d_model)
    base, _ = _resid(tiny_model, Steering(), layer=1)
    x, _ = _resid(tiny_model, addition(v, 1, 2.0, site="resid_post"), layer=1, tail=3)
    assert torch.allclose(x[:, :-3], base[:, :-3])
    assert torch.allclose(x[:, -3:], base[:, -3:] + 2.0)


def test_apply_does_what_it_says(tiny_model):
    """After-instruction steering refuses to guess where the instruction ends; a vector's
    apply() steers every position, as steering-vectors' does."""
    v = torch.ones(tiny_model.cfg.d_model)
    with pytest.raises(SteerlensError, match="where the instruction ends"):
        with addition(v, 1, 2.0).apply(tiny_model):
            pass
    base, _ = _resid(tiny_model, Steering(), layer=1)
    sv = SteeringVector(v[None], [1], site="resid_post")
    prompts = chat_prompts(tiny_model.tokenizer, ["Tell me a story", "Hi"])
    b = full_batch(prompts, tiny_model.tokenizer)
    got = {}
    with sv.apply(tiny_model, 1, 2.0):
        tiny_model.run_with_hooks(b.input_ids, attention_mask=b.attention_mask, fwd_hooks=[
            ("blocks.1.hook_resid_post", lambda x, hook: got.setdefault("x", x.clone()))])
    assert torch.allclose(got["x"], base + 2.0)


def test_composition_and_validation(tiny_model):
    v = torch.randn(tiny_model.cfg.d_model)
    both = combine(addition(v, 1), ablation(v[None], tiny_model.cfg.n_layers))
    assert len(both.hooks()) == 1 + 1 + 2 * tiny_model.cfg.n_layers
    assert both.touches_prompt and not addition(v, 1).touches_prompt
    assert addition(v, 1, positions="all").touches_prompt
    with pytest.raises(SteerlensError, match="zero"):
        ActivationAddition(torch.zeros(8), 1)
    with pytest.raises(SteerlensError, match="NaN"):
        ActivationAddition(torch.full((8,), float("nan")), 1)
    with pytest.raises(SteerlensError, match="positions mode"):
        ActivationAddition(torch.ones(8), 1, positions="everywhere")
