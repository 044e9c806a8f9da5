"""CAA: natural answer tokens, letter balance, and parity with an independent computation."""

import pytest
import torch

from steerlens.core.geometry import cosine
from steerlens.datasets.loaders import CAA_BEHAVIOURS, ABItem, load_caa
from steerlens.methods.caa import (
    PairActivations,
    balanced,
    caa_vector,
    pair_activations,
    split_half_cosine,
    swap_options,
)


def test_swap_options_moves_the_matching_text_to_the_other_letter():
    q = "Pick one.\n\nChoices:\n (A) I agree\n (B) I disagree"
    s = swap_options(ABItem(q, "A", "B"))
    assert s == ABItem("Pick one.\n\nChoices:\n (A) I disagree\n (B) I agree", "B", "A")
    assert swap_options(s) == ABItem(q, "A", "B")
    for b in CAA_BEHAVIOURS:  # every shipped item swaps and swaps back
        for it in load_caa(b)[:200]:
            assert swap_options(swap_options(it)) == it


def test_planted_letter_component_cancels_when_balanced():
    """act = behaviour * sign(answer matches) + letter(answer) + noise: plain CAA over items
    with 18 A-matching and 6 B-matching answers carries the letter; the balanced one not."""
    g = torch.Generator().manual_seed(0)
    d = 16
    behaviour, letter_a, letter_b = torch.randn(3, d, generator=g)
    items = [ABItem(f"Q{i}\n (A) yes\n (B) no", "A" if i < 18 else "B", "B" if i < 18 else "A")
             for i in range(24)]

    def acts(its):
        content = {it.question.split("\n")[0]: torch.randn(d, generator=g) for it in its}
        m = torch.stack([content[it.question.split("\n")[0]] + behaviour
                         + (letter_a if it.matching == "A" else letter_b) for it in its])
        n = torch.stack([content[it.question.split("\n")[0]]
                         + (letter_a if it.not_matching == "A" else letter_b) for it in its])
        return PairActivations(m[:, None], n[:, None], list(its))

    plain = acts(items).diffs.mean(0)[0]
    bal = acts(balanced(items)).diffs.mean(0)[0]
    letter = letter_a - letter_b
    assert torch.allclose(bal, behaviour, atol=1e-5)
    assert torch.allclose(plain, behaviour + 0.5 * letter, atol=1e-5)  # (18 - 6) / 24
    assert abs(float(cosine(bal - behaviour + 1e-9, letter))) < 1e-3 or \
        float((bal - behaviour).norm()) < 1e-5


def test_balanced_vector_is_zero_at_the_embeddings(tiny_model):
    """At resid_pre of layer 0 each pair differs only in its answer token's embedding: the
    balanced vector is exactly zero there, the unbalanced one is c * (E_A - E_B)."""
    items = load_caa("survival-instinct")[:6]  # unbalanced letters
    v = caa_vector(tiny_model, items, [0, 2], "s", balance="letter", batch_size=4)
    assert float(v.at(0).abs().max()) == 0.0 and float(v.at(2).norm()) > 0
    plain = caa_vector(tiny_model, items, [0], "s", balance=False, batch_size=4)
    assert float(plain.at(0).norm()) > 0
    assert v.meta["balance"] and len(v.meta["split_half_cosine"]) == 2
    assert v.meta["n_prompts"] == 4 * len(items)


def _hf_reference(model, items, layers, offset: int = 1):
    """steering-vectors' CAA, computed without steerlens: HF template on the whole strings,
    one plain HF forward each, decoder-layer outputs (hidden_states[l + 1]) at the last token,
    mean of (matching - non-matching). `offset=0` reads block inputs (resid_pre)."""
    hf, tok = model.original_model, model.tokenizer

    def act(question, letter):
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": f"({letter}"}],
            tokenize=False, continue_final_message=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        hs = hf(ids, output_hidden_states=True).hidden_states
        return torch.stack([hs[lay + offset][0, -1] for lay in layers])

    return torch.stack([act(it.question, it.matching) - act(it.question, it.not_matching)
                        for it in items]).mean(0)


def test_parity_with_steering_vectors_caa(tiny_model):
    items = load_caa("sycophancy")[:5]
    v = caa_vector(tiny_model, items, [0, 1, 2], site="resid_post", balance=False, batch_size=3)
    ref = _hf_reference(tiny_model, items, [0, 1, 2])
    assert torch.allclose(v.vectors, ref, rtol=1e-4, atol=1e-4)
    assert v.site == "resid_post"


def test_split_half_cosine_keeps_twins_together():
    d = torch.randn(8, 2, 4)
    d[1::2] = d[0::2]  # twins identical: any split of twin pairs gives equal halves only if...
    c = split_half_cosine(d, group=2, seed=0)
    assert c.shape == (2,) and torch.isfinite(c).all()
    same = torch.ones(6, 1, 4)
    assert torch.allclose(split_half_cosine(same), torch.ones(1, dtype=torch.float32))
    assert torch.isnan(split_half_cosine(torch.ones(1, 1, 4))).all()


@pytest.mark.embedded
def test_embedded_parity_and_letter_balance(embedded_model):
    items = load_caa("corrigible-neutral-HHH")[:6]
    layers = [4, 12]
    v = caa_vector(embedded_model, items, layers, site="resid_post", balance=False, batch_size=6)
    ref = _hf_reference(embedded_model, items, layers)
    rel = (v.vectors - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.max()) < 1e-4
    # Letter balance: the default (balanced) vector is near-orthogonal to the letter direction
    # (mean act("(A") - act("(B") over the same questions) at every layer past the embeddings.
    items = load_caa("survival-instinct")[:16]  # 18/6-like imbalance in the first items
    layers = [0, 4, 8, 12, 16, 20]
    acts = pair_activations(embedded_model, balanced(items), layers, batch_size=8, desc=None)
    vec = acts.diffs.mean(0)
    plain = acts.diffs[0::2].mean(0)  # the original answer orders only: unbalanced CAA
    letter = acts.letter_direction()
    assert float(vec[0].abs().max()) == 0.0
    cos_plain = cosine(plain[1:], letter[1:]).abs()
    cos = cosine(vec[1:], letter[1:]).abs()
    # Unbalanced, the vector is mostly the letter; balanced, what is left is sampling noise
    # (|cos| 0.11 at 16 items, 0.12 at 64 on this model, shrinking with n).
    assert float(cos_plain.min()) > 0.8, cos_plain
    assert float(cos.max()) < 0.2, cos


def test_label_shuffled_null_cancels_the_behaviour():
    """Per-question differences share a direction c with sizes that vary by question (as real
    CAA differences do) plus noise: every shuffled null is orthogonal to the vector, of the
    noise's size; without the projection the signed mean would be mostly c."""
    from steerlens.methods.caa import label_shuffled

    g = torch.Generator().manual_seed(0)
    c = torch.randn(1, 2, 256, generator=g)
    size = torch.rand(20, 1, 1, generator=g) * 4  # 20 questions, effect sizes 0..4
    diffs = c * size.repeat_interleave(2, 0) + 0.1 * torch.randn(40, 2, 256, generator=g)
    nulls = label_shuffled(diffs, 5, seed=0)
    vec = diffs.mean(0)
    assert nulls.shape == (5, 2, 256)
    assert float(cosine(nulls, vec.expand(5, 2, 256)).abs().max()) < 1e-5
    naive = (diffs * torch.tensor([1.0, -1.0] * 10).repeat_interleave(2)[:, None, None]).mean(0)
    assert float(cosine(naive, vec).abs().min()) > 0.5  # what the projection removes
    assert float(nulls.norm(dim=-1).max()) < 0.2 * float(vec.norm(dim=-1).min())


@pytest.mark.embedded
def test_embedded_balanced_vector_equals_plain_hf(embedded_model):
    """The exactness issue's case: the letter-balanced (resid_pre) vector on 4 items is
    non-zero and equals plain HF forwards on the whole strings, on any installed transformers
    (it was exactly zero with transformers 5.24 before the cache shim)."""
    items = load_caa("corrigible-neutral-HHH")[:4]
    v = caa_vector(embedded_model, items, [10, 14], balance="letter", batch_size=8)
    ref = _hf_reference(embedded_model, balanced(items), [10, 14], offset=0)
    norms = v.vectors.norm(dim=-1)
    assert float(norms.min()) > 0.1, norms
    rel = (v.vectors - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.max()) < 1e-4, rel
