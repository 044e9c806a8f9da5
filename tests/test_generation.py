import torch

from steerlens.attacks import get_attack
from steerlens.data import load_jbb
from steerlens.evaluate import attack_prompts
from steerlens.generation import generate_grid, generate_naive, next_token_logits
from steerlens.prompts import header_ids, tokenize_chat
from steerlens.steering import Steering, ablation, addition, combine


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


def test_cached_grid_equals_naive_generation(tiny_model):
    """KV cache + shared prefix + shared prompt cache + early row exit == naive recompute."""
    tok = tiny_model.tokenizer
    goals = load_jbb("harmful")[:5]
    attack = get_attack("refusal_suppression")
    prefix, bodies, suffix = attack_prompts(tok, attack, goals)
    settings = _settings(tiny_model)
    got = generate_grid(tiny_model, prefix, bodies, suffix, settings, max_new_tokens=6,
                        batch_size=2, desc=None)
    rows = [prefix + b + suffix for b in bodies]
    for name, s in settings.items():
        ref = generate_naive(tiny_model, rows, len(suffix), s, max_new_tokens=6)
        assert [c.tokens for c in got[name]] == ref, name
    assert got["baseline"][0].tokens != got["add_after"][0].tokens or \
        got["baseline"][1].tokens != got["add_after"][1].tokens


def test_steering_with_and_without_kv_cache_same_text(tiny_model):
    """The bridge's own generate with use_past_kv_cache True/False under the same steering."""
    tok = tiny_model.tokenizer
    b = tokenize_chat(tok, ["Tell me about cats"])
    v = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 3
    s = addition(v, 1, 1.0, positions="all")
    outs = []
    for use_cache in (True, False):
        with s.apply(tiny_model):
            outs.append(tiny_model.generate(b.input_ids, max_new_tokens=5, do_sample=False,
                                            use_past_kv_cache=use_cache, verbose=False))
    assert torch.equal(outs[0], outs[1])


def test_next_token_logits_equals_full_forward(tiny_model):
    tok = tiny_model.tokenizer
    instr = ["Write a poem", "How to steal a car?"]
    b = tokenize_chat(tok, instr)
    ref = tiny_model(b.input_ids, attention_mask=b.attention_mask)[:, -1]
    bodies = [tok(x, add_special_tokens=False)["input_ids"] for x in instr]
    suffix = b.input_ids[0, -b.n_suffix:].tolist()
    got = next_token_logits(tiny_model, header_ids(tok), bodies, suffix)
    assert torch.allclose(got, ref, atol=1e-4)


def test_logits_grid_equals_per_setting(tiny_model):
    from steerlens.generation import next_token_logits_grid

    tok = tiny_model.tokenizer
    instr = ["Write a poem", "How to steal a car?", "Hello there friend"]
    b = tokenize_chat(tok, instr)
    bodies = [tok(x, add_special_tokens=False)["input_ids"] for x in instr]
    suffix = b.input_ids[0, -b.n_suffix:].tolist()
    settings = _settings(tiny_model)
    grid = next_token_logits_grid(tiny_model, header_ids(tok), bodies, suffix, settings,
                                  batch_size=2)
    for name, s in settings.items():
        ref = next_token_logits(tiny_model, header_ids(tok), bodies, suffix, s, batch_size=2)
        assert torch.allclose(grid[name], ref, atol=1e-4), name
