import pytest
import torch

from steerlens.errors import SteerlensError
from steerlens.prompts import tokenize_chat
from steerlens.steering import ActivationAddition, Steering, ablation, addition, combine


def _resid(model, steering, layer=3, tail=None):
    b = tokenize_chat(model.tokenizer, ["Tell me a story", "Hi"])
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
    s = addition(v, 1, 2.0, site="resid_post")
    x, _ = _resid(tiny_model, s, layer=1, tail=3)
    assert torch.allclose(x[:, :-3], base[:, :-3])
    assert torch.allclose(x[:, -3:], base[:, -3:] + 2.0)


def test_composition_and_validation(tiny_model):
    v = torch.randn(tiny_model.cfg.d_model)
    both = combine(addition(v, 1), ablation(v[None], tiny_model.cfg.n_layers))
    assert len(both.hooks()) == 1 + 1 + 2 * tiny_model.cfg.n_layers
    assert both.touches_prompt
    with pytest.raises(SteerlensError, match="zero"):
        ActivationAddition(torch.zeros(8), 1)
    with pytest.raises(SteerlensError, match="NaN"):
        ActivationAddition(torch.full((8,), float("nan")), 1)
