"""The refusal direction: Arditi's filter, difference in means and selection rules."""

import torch

from steerlens.core.prompts import chat_prompts, full_batch
from steerlens.datasets.loaders import load_instructions
from steerlens.methods.refusal import (
    RefusalDirection,
    _pick,
    filter_by_refusal,
    refusal_activations,
    refusal_scores,
    refusal_token_ids,
    select_refusal_direction,
)


def _ins(split, n):
    return [x.instruction for x in load_instructions(split)[:n]]


def test_refusal_tokens_are_arditis_for_qwen():
    from conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = refusal_token_ids(tok)
    assert ids == [tok("I", add_special_tokens=False)["input_ids"][0],
                   tok("As", add_special_tokens=False)["input_ids"][0]]


def test_refusal_scores_equal_full_forward(tiny_model):
    """Arditi's score: log p(refusal tokens) - log(1 - p) at the first response position."""
    ins = _ins("harmful_train", 3)
    got = refusal_scores(tiny_model, ins, batch_size=2)
    b = full_batch(chat_prompts(tiny_model.tokenizer, ins), tiny_model.tokenizer)
    logits = tiny_model(b.input_ids, attention_mask=b.attention_mask)[:, -1].double()
    p = torch.softmax(logits, -1)[:, refusal_token_ids(tiny_model.tokenizer)].sum(-1)
    assert torch.allclose(got.double(), torch.log(p) - torch.log1p(-p), atol=1e-3)


def test_filter_keeps_refused_harmful_and_answered_harmless(tiny_model):
    h, hl = _ins("harmful_train", 6), _ins("harmless_train", 6)
    f = filter_by_refusal(tiny_model, h, hl, batch_size=4)
    assert f.harmful == [x for x, s in zip(h, f.scores["harmful"]) if s > 0]
    assert f.harmless == [x for x, s in zip(hl, f.scores["harmless"]) if s < 0]


def test_difference_in_means_at_every_tail_position(tiny_model):
    acts = refusal_activations(tiny_model, _ins("harmful_train", 4), _ins("harmless_train", 5),
                               [1, 2], batch_size=3)
    n_tail = chat_prompts(tiny_model.tokenizer, ["x"]).n_tail
    assert acts.positions == list(range(-n_tail, 0))
    means = acts.means()
    assert means.shape == (n_tail, 2, tiny_model.cfg.d_model)
    assert torch.allclose(means[-1, 1], acts.harmful[:, 1, -1].mean(0) - acts.harmless[:, 1, -1].mean(0))


def test_selection_rules_match_arditi():
    """KL <= 0.1 and addition score >= 0 pass; lowest ablation score wins; the ladder is a
    recorded fallback used only when nothing passes."""
    c = [{"kl": 0.05, "addition_refusal": 0.2, "ablation_refusal": -1.0},
         {"kl": 0.2, "addition_refusal": 1.0, "ablation_refusal": -5.0},
         {"kl": 0.01, "addition_refusal": -0.1, "ablation_refusal": -9.0}]
    best, rule = _pick([dict(x) for x in c], 0.1, base_harmless=-3.0)
    assert best["ablation_refusal"] == -1.0 and rule["fallback"] is None
    best, rule = _pick([dict(x) for x in c[1:]], 0.1, base_harmless=-3.0)
    assert best["ablation_refusal"] == -5.0 and rule["fallback"] == "KL threshold x2"
    best, rule = _pick([dict(c[2])], 0.1, base_harmless=-3.0)
    assert rule["fallback"].startswith("KL x4 and addition above")


def test_selection_prunes_last_fifth_of_layers(tiny_model, tmp_path):
    rd, acts = select_refusal_direction(
        tiny_model, _ins("harmful_train", 6), _ins("harmless_train", 6), _ins("harmful_val", 3),
        _ins("harmless_val", 3), filter_prompts=False, batch_size=4)
    n = tiny_model.cfg.n_layers
    assert rd.meta["prune_from_layer"] == int(0.8 * n)
    assert all(c["pruned_layer"] == (c["layer"] >= int(0.8 * n)) for c in rd.candidates)
    assert rd.layer < int(0.8 * n)
    scored = [c for c in rd.candidates if "ablation_refusal" in c]
    assert scored and all({"kl", "addition_refusal", "passes_arditi"} <= set(c) for c in scored)
    assert torch.equal(rd.direction, rd.at(rd.layer))
    rd.save(tmp_path / "r.safetensors")
    back = RefusalDirection.load(tmp_path / "r.safetensors")
    assert torch.equal(back.direction, rd.direction) and back.layer == rd.layer
