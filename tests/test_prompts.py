import pytest
import torch

from steerlens.errors import SteerlensError
from steerlens.prompts import chat_template, eoi_positions, header_ids, left_pad, tokenize_chat

INSTR = ["Write a poem about the sea", "How do I make a weapon?", "Hi"]


def _full(tok, text, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}]
    s = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tok(s, add_special_tokens=False)["input_ids"]


def test_segments_match_full_template(tiny_model):
    tok = tiny_model.tokenizer
    b = tokenize_chat(tok, INSTR)
    for i, text in enumerate(INSTR):
        row = b.input_ids[i, -b.lengths[i]:].tolist()
        assert tok.decode(row) == tok.decode(_full(tok, text))
        assert row[: len(header_ids(tok))] == header_ids(tok)


def test_system_prompt_override(tiny_model):
    tok = tiny_model.tokenizer
    assert "tiny test model" in chat_template(tok).header
    tpl = chat_template(tok, system="Be terse.")
    assert "Be terse." in tpl.header and "tiny test model" not in tpl.header


def test_left_padding_and_mask():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_padded_batch_matches_single_prompts(tiny_model):
    tok = tiny_model.tokenizer
    b = tokenize_chat(tok, INSTR)
    batched = tiny_model(b.input_ids, attention_mask=b.attention_mask)[:, -1]
    for i in range(len(INSTR)):
        single = tiny_model(b.input_ids[i: i + 1, -b.lengths[i]:])[:, -1]
        assert torch.allclose(single, batched[i: i + 1], atol=1e-4)


def test_eoi_positions_are_the_template_suffix(tiny_model):
    tok = tiny_model.tokenizer
    b = tokenize_chat(tok, INSTR)
    suffix = tok(chat_template(tok).suffix, add_special_tokens=False)["input_ids"]
    assert b.n_suffix == len(suffix)
    assert b.input_ids[:, eoi_positions(b.n_suffix)].tolist() == [suffix] * len(INSTR)


def test_empty_prompt_set_errors(tiny_model):
    with pytest.raises(SteerlensError, match="empty prompt set"):
        tokenize_chat(tiny_model.tokenizer, [])


@pytest.mark.embedded
def test_embedded_segments_equal_hf_tokenization(embedded_model):
    tok = embedded_model.tokenizer
    b = tokenize_chat(tok, INSTR)
    for i, text in enumerate(INSTR):
        assert b.input_ids[i, -b.lengths[i]:].tolist() == _full(tok, text)
    assert "You are Qwen" in chat_template(tok).header
