"""The generation engine equals naive one-prompt-at-a-time full recomputation."""

import torch

from steerlens.audit.evaluate import attack_prompts
from steerlens.core.generation import (
    Readout,
    generate_grid,
    next_token_logits,
    next_token_logits_grid,
    refusal_log_odds,
    stop_token_ids,
)
from steerlens.core.prompts import chat_prompts, full_batch
from steerlens.core.steering import Steering, ablation, addition, combine
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_jbb


def _settings(model):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.cfg.d_model, generator=g) * 3
    r = torch.randn(model.cfg.d_model, generator=g)
    return {
        "baseline": Steering(),
        "add_after": addition(v, 1, 2.0),
        "add_all": addition(v, 2, -1.5, positions="all"),
        "ablate": ablation(r[None], model.cfg.n_layers),
        "both": combine(addition(v, 1, 2.0), ablation(r[None], model.cfg.n_layers)),
    }


@torch.no_grad()
def naive_generate(model, prompts, steering, max_new_tokens):
    """Reference: one prompt at a time, whole ids, no cache; after-instruction steering acts
    on the prompt's tail and every generated token."""
    stop = stop_token_ids(model.tokenizer)
    outs = []
    for i in range(len(prompts)):
        ids, new = prompts.full(i), []
        for _ in range(max_new_tokens):
            with steering.apply(model, tail=prompts.n_tail + len(new)):
                nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt in stop:
                break
            new.append(nxt)
            ids = ids + [nxt]
        outs.append(new)
    return outs


def test_cached_grid_equals_naive_generation(tiny_model):
    """KV cache + shared prefix + shared body cache + early row exit == naive recompute."""
    prompts = attack_prompts(tiny_model.tokenizer, get_attack("refusal_suppression"),
                             load_jbb("harmful")[:5])
    settings = _settings(tiny_model)
    got = generate_grid(tiny_model, prompts, settings, max_new_tokens=6, batch_size=2, desc=None)
    for name, s in settings.items():
        ref = naive_generate(tiny_model, prompts, s, max_new_tokens=6)
        assert [c.tokens for c in got[name].completions] == ref, name
    assert any(a.tokens != b.tokens for a, b in zip(got["baseline"].completions,
                                                     got["add_after"].completions))


def test_readout_equals_plain_forward(tiny_model):
    """The first decode step's refusal score and projections == a full forward with hooks."""
    prompts = chat_prompts(tiny_model.tokenizer, ["Write a poem", "How to steal a car?", "Hi"])
    d = tiny_model.cfg.d_model
    bases = torch.linalg.qr(torch.randn(d, 2, generator=torch.Generator().manual_seed(1)))[0].T
    readout = Readout([5, 7], layers=[1, 3], bases=torch.stack([bases, bases]))
    s = _settings(tiny_model)["add_after"]
    cells = generate_grid(tiny_model, prompts, {"s": s}, max_new_tokens=0, readout=readout,
                          batch_size=2, desc=None)
    b = full_batch(prompts, tiny_model.tokenizer)
    names = ["blocks.1.hook_resid_pre", "blocks.3.hook_resid_pre"]
    with tiny_model.hooks(fwd_hooks=s.hooks(tail=prompts.n_tail)):
        logits, cache = tiny_model.run_with_cache(b.input_ids, attention_mask=b.attention_mask,
                                                  names_filter=lambda n: n in names)
    ref_score = refusal_log_odds(logits[:, -1], [5, 7])
    assert torch.allclose(torch.tensor(cells["s"].refusal_score), ref_score, atol=1e-4)
    for j, n in enumerate(names):
        tail = cache[n][:, -prompts.n_tail:]
        ref = (tail @ bases.T).mean(1)
        got = torch.tensor([row[j] for row in cells["s"].projection])
        assert torch.allclose(got, ref, atol=1e-4)
    assert cells["s"].completions == [None] * 3


def test_screen_only_settings_are_not_generated(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, ["Write a poem", "Hi"])
    cells = generate_grid(tiny_model, prompts, _settings(tiny_model), max_new_tokens=3,
                          readout=Readout([5]), screen_only=["ablate"], desc=None)
    assert cells["ablate"].completions == [None, None]
    assert all(c is not None for c in cells["baseline"].completions)


def test_next_token_logits_equal_full_forward(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, ["Write a poem", "How to steal a car?"])
    b = full_batch(prompts, tiny_model.tokenizer)
    for name, s in _settings(tiny_model).items():
        with s.apply(tiny_model, tail=prompts.n_tail):
            ref = tiny_model(b.input_ids, attention_mask=b.attention_mask)[:, -1]
        got = next_token_logits(tiny_model, prompts, s)
        assert torch.allclose(got, ref, atol=1e-4), name


def test_logits_grid_equals_per_setting(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, ["Write a poem", "How to steal a car?", "Hi"])
    settings = _settings(tiny_model)
    grid = next_token_logits_grid(tiny_model, prompts, settings, batch_size=2)
    for name, s in settings.items():
        ref = next_token_logits(tiny_model, prompts, s, batch_size=2)
        assert torch.allclose(grid[name], ref, atol=1e-4), name


def test_stacked_settings_equal_one_at_a_time(tiny_model):
    """After-instruction settings decoded together (one batch, a vector per row, screen-only
    rows dropped after the first step) give what each setting gives alone."""
    prompts = attack_prompts(tiny_model.tokenizer, get_attack("none"), load_jbb("harmful")[:5])
    g = torch.Generator().manual_seed(3)
    vs = torch.randn(4, tiny_model.cfg.d_model, generator=g) * 3
    settings = {"baseline": Steering(), "a": addition(vs[0], 1, 2.0), "b": addition(vs[1], 2, -1.0),
                "two_layers": combine(addition(vs[2], 1), addition(vs[3], 3)),
                "screened": addition(vs[3], 1), "ablate": ablation(vs[0][None], tiny_model.cfg.n_layers)}
    assert all(s.stackable for k, s in settings.items() if k != "ablate")
    d = tiny_model.cfg.d_model
    readout = Readout([5, 7], layers=[1, 3], bases=torch.eye(d)[:2].expand(2, 2, d))
    kw = dict(max_new_tokens=6, batch_size=2, readout=readout, screen_only=["screened"], desc=None)
    stacked = generate_grid(tiny_model, prompts, settings, stack=8, **kw)
    for name in settings:
        a = stacked[name]
        b = generate_grid(tiny_model, prompts, {name: settings[name]}, **kw)[name]  # truly alone
        assert [c and c.tokens for c in a.completions] == [c and c.tokens for c in b.completions]
        assert torch.allclose(torch.tensor(a.refusal_score), torch.tensor(b.refusal_score), atol=1e-4)
        assert torch.allclose(torch.tensor(a.projection), torch.tensor(b.projection), atol=1e-4)
    assert stacked["screened"].completions == [None] * 5
    assert len({tuple(c.tokens) for n in ("baseline", "a", "b") for c in stacked[n].completions}) > 5
