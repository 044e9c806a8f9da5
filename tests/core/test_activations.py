"""Activation collection equals a plain full forward pass (prefix sharing and early stop are exact)."""

import pytest
import torch

from steerlens.core.activations import collect_last, collect_resid
from steerlens.core.prompts import chat_prompts, full_batch
from steerlens.core.steering import addition
from steerlens.datasets.loaders import load_caa
from steerlens.errors import SteerlensError
from steerlens.methods.caa import pair_prompts

INSTR = ["Write a poem about the sea", "How do I make a weapon?", "Hi", "List three fruits"]


def _reference(model, prompts, layers, site, positions, hooks=()):
    """run_with_cache on the whole left-padded rows (prefix included), no sharing, no stop."""
    b = full_batch(prompts, model.tokenizer)
    names = [f"blocks.{lay}.hook_{site}" for lay in layers]
    with model.hooks(fwd_hooks=list(hooks)):
        _, cache = model.run_with_cache(b.input_ids, attention_mask=b.attention_mask,
                                        names_filter=lambda n: n in names)
    return torch.stack([cache[n][:, positions] for n in names], dim=1)


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "resid_post"])
def test_prefix_shared_stopped_collection_equals_full_cache(tiny_model, site):
    prompts = chat_prompts(tiny_model.tokenizer, INSTR)
    assert prompts.prefix, "the chat header should be shared"
    positions = prompts.tail_positions()
    got = collect_resid(tiny_model, prompts, [1, 2], positions, site=site, batch_size=3, desc=None)
    ref = _reference(tiny_model, prompts, [1, 2], site, positions)
    assert got.shape == (len(INSTR), 2, len(positions), tiny_model.cfg.d_model)
    assert torch.allclose(got, ref, atol=1e-4)


def test_steered_collection_equals_full_pass_with_tail_hooks(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, INSTR)
    v = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    s = addition(v, 1, 2.0)
    got = collect_resid(tiny_model, prompts, [2], [-1, -prompts.n_tail - 1], steering=s,
                        batch_size=2, desc=None)
    ref = _reference(tiny_model, prompts, [2], "resid_pre", [-1, -prompts.n_tail - 1],
                     s.hooks(tail=prompts.n_tail))
    assert torch.allclose(got, ref, atol=1e-4)
    plain = collect_resid(tiny_model, prompts, [2], [-prompts.n_tail - 1], desc=None)
    # The last body token is before the instruction's end: unsteered.
    assert torch.allclose(got[:, :, 1:], plain, atol=1e-4)
    assert not torch.allclose(got[:, :, :1], collect_resid(tiny_model, prompts, [2], [-1],
                                                           desc=None), atol=1e-3)


def test_stop_at_layer_skips_later_blocks(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, INSTR)
    fired = []
    with tiny_model.hooks(fwd_hooks=[("blocks.3.hook_resid_pre", lambda x, hook: fired.append(1))]):
        collect_resid(tiny_model, prompts, [1], [-1], desc=None)
    assert not fired, "blocks after the last layer read must not run"


def test_collect_last_shares_pair_stems_exactly(tiny_model):
    """A CAA pair (same question, two answers) from one stem pass == each row run whole."""
    prompts = pair_prompts(tiny_model.tokenizer, load_caa("sycophancy")[:3])
    got = collect_last(tiny_model, prompts, [1, 3], batch_size=2, desc=None)
    ref = _reference(tiny_model, prompts, [1, 3], "resid_pre", [-1])[:, :, 0]
    assert torch.allclose(got, ref, atol=1e-4)


def test_bad_layers_and_positions(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, ["Hi there"])
    with pytest.raises(SteerlensError, match="out of range"):
        collect_resid(tiny_model, prompts, [99], [-1], desc=None)
    with pytest.raises(SteerlensError, match="positions"):
        collect_resid(tiny_model, prompts, [1], [0], desc=None)
    with pytest.raises(SteerlensError, match="positions"):
        collect_resid(tiny_model, prompts, [1], [-999], desc=None)
