"""The core path on tiny random models of each family the paper audits (no downloads)."""

import pytest
import torch
from conftest import save_tiny_model
from test_generation import naive_generate

from steerlens.audit.evaluate import attack_prompts
from steerlens.core.activations import collect_resid
from steerlens.core.generation import generate_grid
from steerlens.core.models import load_model
from steerlens.core.prompts import chat_prompts, full_batch
from steerlens.core.steering import ablation, addition
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_jbb

FAMILIES = ["llama", "mistral", "gemma2"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp(request.param), family=request.param)
    torch.set_grad_enabled(False)
    return load_model(path, device="cpu")


def test_activations_match_full_cache(family_model):
    m = family_model
    tok = m.tokenizer
    instr = ["Write a poem about the sea", "How do I make a weapon?"]
    prompts = chat_prompts(tok, instr)
    got = collect_resid(m, prompts, [1, 2], [-1], desc=None)
    b = full_batch(prompts, tok)
    names = ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    _, cache = m.run_with_cache(b.input_ids, attention_mask=b.attention_mask,
                                names_filter=lambda n: n in names)
    ref = torch.stack([cache[n][:, -1] for n in names], dim=1)
    assert torch.allclose(got[:, :, 0], ref, atol=1e-4)


def test_generation_grid_matches_naive(family_model):
    m = family_model
    goals = load_jbb("harmful")[:3]
    prompts = attack_prompts(m.tokenizer, get_attack("refusal_suppression"), goals)
    v = torch.randn(m.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3
    settings = {"add": addition(v, 1, 2.0), "abl": ablation(v[None], m.cfg.n_layers)}
    got = generate_grid(m, prompts, settings, max_new_tokens=4, batch_size=2, desc=None)
    for name, s in settings.items():
        ref = naive_generate(m, prompts, s, 4)
        assert [c.tokens for c in got[name].completions] == ref, name


def test_ablation_removes_direction_from_residual(family_model):
    m = family_model
    b = full_batch(chat_prompts(m.tokenizer, ["Tell me a story"]), m.tokenizer)
    r = torch.randn(m.cfg.d_model, generator=torch.Generator().manual_seed(1))
    got = {}

    def grab(x, hook):
        got["x"] = x.clone()
        return x

    with ablation(r[None], m.cfg.n_layers).apply(m):
        m.run_with_hooks(b.input_ids, fwd_hooks=[(f"blocks.{m.cfg.n_layers - 1}.hook_resid_post",
                                                  grab)])
    assert (got["x"] @ (r / r.norm())).abs().max() < 1e-3
