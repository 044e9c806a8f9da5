"""Answer polarity: the classifier on the shipped sets, the neutral data, polarity-balanced
extraction against a planted polarity component, and the direction on a tiny model."""

import json

import pytest
import torch

from steerlens.core.geometry import cosine
from steerlens.datasets.behaviours import load_behaviour
from steerlens.datasets.loaders import ABItem, data_dir, load_polarity
from steerlens.errors import SteerlensError
from steerlens.methods.caa import (
    PairActivations,
    balanced,
    caa_vector,
    pair_activations,
    polarity_direction,
)
from steerlens.methods.extraction import METHODS, extract
from steerlens.methods.polarity import (
    answer_polarity,
    balance_plan,
    item_polarity,
    pair_weights,
    polarity_counts,
    project_out,
    too_few,
)

# (yes, no, other) matching answers, from the committed files (issue 40's counts).
COUNTS = {
    "coordinate-other-ais": (318, 25, 17),
    "corrigible-neutral-HHH": (215, 22, 53),
    "survival-instinct": (410, 161, 332),
    "coordinate-itself": (289, 19, 14),
    "coordinate-other-versions": (314, 20, 14),
    "corrigible-more-HHH": (235, 3, 71),
    "self-awareness-web-gpt": (235, 1, 64),
    "sycophancy": (0, 0, 1000),
    "openness": (500, 500, 0),
}


def test_answer_polarity_words():
    for text in ("Yes", "Yes, I agree", "yes.", " Yes!", '"Yes"', "YES"):
        assert answer_polarity(text) == "yes", text
    for text in ("No", "No.", "no", "No, don't do that", "NO"):
        assert answer_polarity(text) == "no", text
    for text in ("I agree", "Not at all", "Nope", "Yesterday", "None", "Noted", "", "1 + 1",
                 "The answer is yes"):
        assert answer_polarity(text) == "other", text


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_polarity_counts_of_the_committed_sets(name):
    c = polarity_counts(load_behaviour(name))
    assert (c["yes"], c["no"], c["other"]) == COUNTS[name]


def test_matching_text_follows_the_letter():
    q = "Shall we?\n\nChoices:\n (A) No, never.\n (B) Yes, please"
    assert item_polarity(ABItem(q, "B", "A")) == "yes"
    assert item_polarity(ABItem(q, "A", "B")) == "no"
    assert [item_polarity(x) for x in balanced([ABItem(q, "B", "A")])] == ["yes", "yes"]


def test_polarity_data_is_balanced():
    train, test = load_polarity("train"), load_polarity("test")
    assert (len(train), len(test)) == (200, 40)
    assert not {x.question for x in train} & {x.question for x in test}
    for items, n in ((train, 100), (test, 20)):
        assert polarity_counts(items) == {"yes": n, "no": n, "other": 0}  # true answers
        assert sum(x.matching == "A" for x in items) == n
        assert sum("(A) Yes" in x.question for x in items) == n
        yes_true = [x for x in items if item_polarity(x) == "yes"]
        assert sum(x.matching == "A" for x in yes_true) == n // 2
    raw = json.loads((data_dir() / "polarity" / "test.json").read_text())
    assert {r["topic"] for r in raw} == {"arithmetic", "geography", "science", "general"}
    with pytest.raises(Exception, match="unknown polarity split"):
        load_polarity("val")


def test_weights_and_plan():
    w = pair_weights(["yes"] * 6 + ["no"] * 2 + ["other"] * 2)
    assert float(w.sum()) == pytest.approx(10)
    assert float(w[:6].sum()) == pytest.approx(4) and float(w[6:8].sum()) == pytest.approx(4)
    assert torch.equal(w[8:], torch.ones(2, dtype=w.dtype))
    assert too_few({"yes": 300, "no": 9, "other": 0})  # fewer than 10
    assert too_few({"yes": 400, "no": 20, "other": 0})  # under 5%
    assert not too_few({"yes": 215, "no": 22, "other": 53})
    assert not too_few({"yes": 0, "no": 0, "other": 9})
    with pytest.raises(SteerlensError, match="unknown balance"):
        balance_plan([], "both")


def _items(n_yes: int, n_no: int, n_other: int) -> list[ABItem]:
    def one(word, k):
        q = f"Question {word} {k}?\n\nChoices:\n (A) {word}\n (B) Something else {k}"
        return ABItem(q, "A", "B")
    return ([one("Yes", k) for k in range(n_yes)] + [one("No", k) for k in range(n_no)]
            + [one("Maybe", k) for k in range(n_other)])


def _planted(n_yes=70, n_no=14, n_other=16, layers=2, d=32, seed=0, size=1.5):
    """pos - neg = b (the behaviour) + s p (s = +1 Yes-matching, -1 No, 0 other) + noise, in
    both answer orders (rows 2i, 2i+1 share the item): what polarity balance must cancel."""
    g = torch.Generator().manual_seed(seed)
    b, p = torch.nn.functional.normalize(torch.randn(2, layers, d, generator=g), dim=-1)
    p = torch.nn.functional.normalize(p - (p * b).sum(-1, keepdim=True) * b, dim=-1)
    items = balanced(_items(n_yes, n_no, n_other))
    s = torch.tensor([1.0] * 2 * n_yes + [-1.0] * 2 * n_no + [0.0] * 2 * n_other)
    c = 3 * torch.randn(len(items), layers, d, generator=g)
    half = (b + size * s[:, None, None] * p) / 2 + 0.2 * torch.randn(len(items), layers, d, generator=g)
    return PairActivations(c + half, c - half, items), b, p


@pytest.mark.parametrize("method", [m for m in METHODS if m != "actadd"])
def test_planted_polarity_cancels_by_default(method):
    acts, b, p = _planted()
    letter = extract(acts, [0, 1], method, balance="letter").vectors
    new = extract(acts, [0, 1], method, polarity=p).vectors
    weighted = method in ("mean_difference", "mean_centred", "linear_probe")
    expected = "weights+projection" if weighted else "projection"
    assert extract(acts, [0, 1], method, polarity=p).meta["polarity_method"] == expected
    if weighted:  # the weights alone cancel a planted, symmetric component
        w = balance_plan(acts.items).weights
        alone = METHODS[method](acts.matching, acts.not_matching, weights=w)
        assert float(cosine(alone, p).abs().max()) < 0.2, method
    assert float(cosine(new, p).abs().max()) < 0.2, method
    if method != "pca_diff":  # a centred PCA reads how the differences vary; here b does not
        assert float(cosine(new, b).min()) > 0.8, method
        assert float(cosine(letter, p).abs().min()) > 0.5, method


def test_letter_and_none_reproduce_the_unweighted_methods():
    acts, _, p = _planted()
    for name, fn in METHODS.items():
        for balance in ("letter", "none"):
            sv = extract(acts, [0, 1], name, balance=balance)
            assert torch.equal(sv.vectors, fn(acts.matching, acts.not_matching)), name
            assert sv.meta["balance"] == balance and sv.meta["polarity_method"] == "none"


def test_fallback_projects_and_needs_the_direction():
    acts, b, p = _planted(n_yes=60, n_no=3, n_other=10)
    with pytest.raises(SteerlensError, match="projects out the neutral polarity"):
        extract(acts, [0, 1], "mean_difference")
    sv = extract(acts, [0, 1], "mean_difference", polarity=p)
    assert sv.meta["polarity_method"] == "projection"
    assert sv.meta["polarity_counts"] == {"yes": 60, "no": 3, "other": 10}  # per question
    assert "fewer than 10" in sv.meta["polarity_fallback"]
    assert float(cosine(sv.vectors, p).abs().max()) < 1e-5


def test_caa_vector_balances_polarity_on_a_tiny_model(tiny_model, monkeypatch):
    """The default CAA vector is the Yes/No-weighted mean of the same pair activations (openness:
    Yes and No matching answers) or, with too few of one polarity, has the given polarity
    direction projected out; the letter option is today's vector exactly."""
    monkeypatch.setattr("steerlens.methods.polarity.MIN_POLARITY_ITEMS", 2)  # 8 items suffice
    layers = [1, 3]
    train = load_polarity("train")
    pol = polarity_direction(tiny_model, layers, train[:2] + train[25:27], batch_size=8)
    for name, method in (("openness", "weights+projection"), ("coordinate-other-ais", "projection")):
        items = load_behaviour(name)[:8]
        acts = pair_activations(tiny_model, balanced(items), layers, batch_size=8, desc=None)
        letter = caa_vector(tiny_model, items, layers, "s", balance=True, batch_size=8)
        assert torch.equal(letter.vectors, acts.diffs.mean(0)) and letter.meta["balance"] == "letter"
        plan = balance_plan(acts.items)
        v = caa_vector(tiny_model, items, layers, "s", batch_size=8, polarity=pol)
        assert plan.method == method == v.meta["polarity_method"]
        assert v.meta["balance"] == "polarity" and v.meta["polarity_counts"] == plan.counts
        mean = acts.diffs.mean(0)
        if plan.weights is not None:
            w = (plan.weights / plan.weights.sum()).float()
            mean = (acts.diffs * w[:, None, None]).sum(0)
        assert torch.allclose(v.vectors, project_out(mean, pol.vectors), atol=1e-5)
        assert max(map(abs, v.meta["polarity_cosine"])) < 1e-5


def test_polarity_direction_is_yes_minus_no(tiny_model):
    """Independent computation: every question in both orders, act(answer "Yes") minus
    act(answer "No") row by row from the raw pair activations."""
    train = load_polarity("train")
    items = train[:4] + train[25:29]  # arithmetic, true Yes then true No
    layers = [1, 2]
    sv = polarity_direction(tiny_model, layers, items, batch_size=8)
    used = balanced(items)
    acts = pair_activations(tiny_model, used, layers, batch_size=8, desc=None)
    rows = []
    for m, n, it in zip(acts.matching, acts.not_matching, used):
        yes_letter = "A" if "(A) Yes" in it.question else "B"
        rows.append(m - n if it.matching == yes_letter else n - m)
    assert torch.allclose(sv.vectors, torch.stack(rows).mean(0), atol=1e-6)
    assert sv.meta["true_yes"] == 4 and sv.meta["true_no"] == 4 and sv.meta["n_prompts"] == 32
    with pytest.raises(SteerlensError, match="no item offers"):
        polarity_direction(tiny_model, layers, load_behaviour("sycophancy", 2), batch_size=8)


@pytest.mark.embedded
def test_embedded_polarity_direction_equals_plain_hf(embedded_model):
    """The direction on the embedded model equals plain HF forwards on the whole strings:
    per question and order, act(answer Yes) - act(answer No) at resid_pre, averaged."""
    hf, tok = embedded_model.original_model, embedded_model.tokenizer

    def act(question, letter):  # plain HF: the whole chat text, block inputs at the last token
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": f"({letter}"}],
            tokenize=False, continue_final_message=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        hs = hf(ids, output_hidden_states=True).hidden_states
        return torch.stack([hs[lay][0, -1] for lay in (8, 14)])

    train = load_polarity("train")
    items = train[:3] + train[25:28]  # arithmetic: 3 true Yes, 3 true No
    sv = polarity_direction(embedded_model, [8, 14], items, batch_size=8)
    rows = []
    for it in balanced(items):
        yes = "A" if "(A) Yes" in it.question else "B"
        rows.append(act(it.question, yes) - act(it.question, "B" if yes == "A" else "A"))
    ref = torch.stack(rows).mean(0)
    rel = (sv.vectors - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.max()) < 1e-4, rel
