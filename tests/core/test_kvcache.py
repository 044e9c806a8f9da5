"""Shared-prefix KV caches: a forked prefix plus the rows equals the whole rows, exactly."""

import torch

from steerlens.core.kvcache import build_prefix_cache, copy_cache, fold_prefix, new_cache
from steerlens.core.prompts import chat_prompts, full_batch, left_pad, pad_id

INSTR = ["Write a poem about the sea", "How do I make a weapon?", "Hi"]


def test_forked_prefix_logits_equal_full_rows(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, INSTR)
    pre = build_prefix_cache(tiny_model, prompts.prefix)
    assert len(pre) == len(prompts.prefix) > 0
    ids, mask = left_pad(prompts.rows, pad_id(tiny_model.tokenizer))
    got = tiny_model(ids, attention_mask=pre.full_mask(mask),
                     past_key_values=pre.fork(tiny_model, len(INSTR)))[:, -1]
    b = full_batch(prompts, tiny_model.tokenizer)
    ref = tiny_model(b.input_ids, attention_mask=b.attention_mask)[:, -1]
    assert torch.allclose(got, ref, atol=1e-4)


def test_fork_leaves_the_prefix_untouched(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, INSTR)
    pre = build_prefix_cache(tiny_model, prompts.prefix)
    before = pre.cache.get_seq_length()
    c = pre.fork(tiny_model, 2)
    tiny_model(torch.tensor([prompts.rows[0]] * 2), past_key_values=c)
    assert pre.cache.get_seq_length() == before
    assert c.get_seq_length() == before + len(prompts.rows[0])
    d = copy_cache(c)
    tiny_model(torch.tensor([[1], [2]]), past_key_values=d)
    assert c.get_seq_length() == before + len(prompts.rows[0])


def test_empty_prefix_and_new_cache(tiny_model):
    pre = build_prefix_cache(tiny_model, [])
    assert len(pre) == 0 and pre.cache is None
    assert pre.fork(tiny_model, 3).get_seq_length() == 0
    assert new_cache(tiny_model).get_seq_length() == 0


def test_fold_prefix_only_for_sliding_window(tiny_model):
    prompts = chat_prompts(tiny_model.tokenizer, INSTR)
    same = fold_prefix(tiny_model, prompts)
    assert same is prompts  # full attention: padding between prefix and body is harmless
