import pytest
import torch

from steerlens.activations import collect_continuations, collect_resid, mean_diff
from steerlens.errors import SteerlensError
from steerlens.prompts import chat_token_rows, header_ids, tokenize_chat

INSTR = ["Write a poem about the sea", "How do I make a weapon?", "Hi", "List three fruits"]


def _reference(model, layers, site, positions):
    b = tokenize_chat(model.tokenizer, INSTR)
    names = [f"blocks.{lay}.hook_{site}" for lay in layers]
    _, cache = model.run_with_cache(b.input_ids, attention_mask=b.attention_mask,
                                    names_filter=lambda n: n in names)
    return torch.stack([cache[n][:, positions] for n in names], dim=1)


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "resid_post"])
def test_prefix_shared_stopped_collection_equals_full_cache(tiny_model, site):
    """Header run once + KV fork + stop after the last layer read == a full run_with_cache."""
    tok = tiny_model.tokenizer
    rows, n_suffix = chat_token_rows(tok, INSTR, include_header=False)
    positions = [-n_suffix, -1]
    got = collect_resid(tiny_model, rows, [1, 2], positions, site=site,
                        prefix=header_ids(tok), batch_size=3, desc=None)
    ref = _reference(tiny_model, [1, 2], site, positions)
    assert got.shape == (len(INSTR), 2, 2, tiny_model.cfg.d_model)
    assert torch.allclose(got, ref, atol=1e-4)


def test_stop_at_layer_skips_later_blocks(tiny_model):
    tok = tiny_model.tokenizer
    rows, _ = chat_token_rows(tok, INSTR, include_header=False)
    fired = []
    hook = ("blocks.3.hook_resid_pre", lambda x, hook: fired.append(1))
    collect_resid(tiny_model, rows, [1], [-1], prefix=header_ids(tok), fwd_hooks=[hook], desc=None)
    assert not fired, "blocks after the last layer read must not run"


def test_continuations_equal_full_rows(tiny_model):
    """A CAA pair (same rows, two different final tokens) from one shared KV cache."""
    tok = tiny_model.tokenizer
    rows, _ = chat_token_rows(tok, INSTR, include_header=False, assistant_prefix="(")
    a, b = tok("A", add_special_tokens=False)["input_ids"][0], tok("B")["input_ids"][0]
    hdr = header_ids(tok)
    got = collect_continuations(tiny_model, rows, [a, b], [1, 3], prefix=hdr, batch_size=3,
                                desc=None)
    for c, t in enumerate([a, b]):
        ref = collect_resid(tiny_model, [hdr + r + [t] for r in rows], [1, 3], [-1], desc=None)
        assert torch.allclose(got[:, c], ref[:, :, 0], atol=1e-4)


def test_bad_layers_and_positions(tiny_model):
    rows = [[1, 2, 3]]
    with pytest.raises(SteerlensError, match="out of range"):
        collect_resid(tiny_model, rows, [99], [-1], desc=None)
    with pytest.raises(SteerlensError, match="positions"):
        collect_resid(tiny_model, rows, [1], [0], desc=None)
    with pytest.raises(SteerlensError, match="empty prompt set"):
        collect_resid(tiny_model, [], [1], [-1], desc=None)


def test_mean_diff():
    a, b = torch.ones(3, 2, 4), torch.zeros(5, 2, 4)
    assert torch.equal(mean_diff(a, b), torch.ones(2, 4))
