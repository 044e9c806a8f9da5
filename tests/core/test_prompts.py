"""One path from chat text to tokens: every row equals the tokenization of its whole text."""

import pytest
from conftest import CHATML, INST, tiny_tokenizer

from steerlens.audit.evaluate import attack_prompts
from steerlens.core.prompts import chat_prompts, from_texts, left_pad, longest_common_prefix
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_caa, load_jbb
from steerlens.errors import SteerlensError
from steerlens.methods.caa import answer_prompts, pair_prompts

INSTR = ["Write a poem about the sea", "How do I make a weapon?", "Hi", "Request: Write"]


@pytest.fixture(scope="module", params=["chatml", "inst"])
def tok(request):
    return tiny_tokenizer(CHATML if request.param == "chatml" else INST)


def _hf(tok, user, system=None, assistant=None):
    """The reference, computed without steerlens: HF template on the whole conversation."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]
    if assistant is None:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    else:
        msgs.append({"role": "assistant", "content": assistant})
        text = tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def _check_rows(tok, ps, refs):
    assert len(ps) == len(refs)
    for i, ref in enumerate(refs):
        assert ps.full(i) == ref, i
        assert len(ps.rows[i]) > ps.n_tail  # every row keeps a body of its own


def test_rows_equal_whole_text_tokenization(tok):
    _check_rows(tok, chat_prompts(tok, INSTR), [_hf(tok, x) for x in INSTR])
    _check_rows(tok, chat_prompts(tok, INSTR, system="Be terse."),
                [_hf(tok, x, "Be terse.") for x in INSTR])


def test_tail_is_the_text_after_the_users_message(tok):
    ps = chat_prompts(tok, INSTR)
    for i, text in enumerate(INSTR):
        tail_text = tok.decode(ps.tails[i])
        full_text = tok.decode(ps.full(i))
        assert full_text.endswith(tail_text) and text in full_text[: len(full_text) - len(tail_text)]
        assert text not in tail_text
    assert ps.n_tail >= 1


def test_prefix_is_the_longest_common_prefix(tok):
    ps = chat_prompts(tok, INSTR)
    full = [ps.full(i) for i in range(len(ps))]
    assert len(ps.prefix) == min(longest_common_prefix(full),
                                 min(len(f) for f in full) - ps.n_tail - 1)


def test_attack_and_caa_and_answer_prompts_are_whole_texts(tok):
    goals = load_jbb("harmful")[:4]
    for name in ("none", "refusal_suppression", "prefix_injection", "aim"):
        attack = get_attack(name)
        ps = attack_prompts(tok, attack, goals)
        _check_rows(tok, ps, [_hf(tok, attack.render(g.goal, g.target)) for g in goals])
        # Steering starts at the same place under every attack: after the user's message.
        assert ps.n_tail == chat_prompts(tok, ["x"]).n_tail
    items = load_caa("sycophancy")[:3]
    pairs = pair_prompts(tok, items)
    refs = [_hf(tok, it.question, assistant=f"({x}") for it in items
            for x in (it.matching, it.not_matching)]
    _check_rows(tok, pairs, refs)
    ans = answer_prompts(tok, items)
    for i, ref in enumerate(refs[0::2]):  # the first order of each item
        stem = ans.prompts.full(2 * i)
        assert ref[: len(stem)] == stem and ref[len(stem)] == ans.matching[2 * i]


def test_from_texts_and_errors(tok):
    ps = from_texts(tok, ["same text", "same text"])
    assert ps.n_tail == 0 and all(len(r) >= 1 for r in ps.rows)
    with pytest.raises(SteerlensError, match="empty prompt set"):
        chat_prompts(tok, [])


def test_left_padding_and_mask():
    ids, mask = left_pad([[1, 2, 3], [4]], pad=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.embedded
def test_embedded_rows_equal_hf_tokenization(embedded_model):
    tok = embedded_model.tokenizer
    _check_rows(tok, chat_prompts(tok, INSTR), [_hf(tok, x) for x in INSTR])
    attack = get_attack("refusal_suppression")
    goals = load_jbb("harmful")[:3]
    ps = attack_prompts(tok, attack, goals)
    _check_rows(tok, ps, [_hf(tok, attack.render(g.goal, g.target)) for g in goals])
    items = load_caa("refusal")[:2]
    pairs = pair_prompts(tok, items)
    _check_rows(tok, pairs, [_hf(tok, it.question, assistant=f"({x}") for it in items
                             for x in (it.matching, it.not_matching)])
    # Qwen writes "(A" as one token, and the CAA pair is read there.
    assert pairs.rows[0][-1] == tok("(A", add_special_tokens=False)["input_ids"][0] or \
        pairs.rows[0][-1] == tok("(B", add_special_tokens=False)["input_ids"][0]
    assert len(tok("(A", add_special_tokens=False)["input_ids"]) == 1
    assert "You are Qwen" in ps.texts[0]
    assert ps.n_tail == 5  # <|im_end|> \n <|im_start|> assistant \n
