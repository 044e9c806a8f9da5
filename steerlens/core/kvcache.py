"""Shared-prefix KV caches: run a common prefix once, then fork it for every batch.

Every chat prompt of a set starts with the same ids (the chat header, an attack template's
head): `PromptSet.prefix`, derived from the ids themselves. Running it once and extending a
copy of its cache is exact up to float rounding (tests/core/test_kvcache.py compares logits and
activations with the full pass).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.core.prompts import PromptSet


@dataclass
class PrefixCache:
    """The HF KV cache of one prefix, computed under whatever hooks were active at the time."""

    ids: list[int]
    cache: object | None  # transformers Cache; None when the prefix is empty

    def __len__(self) -> int:
        return len(self.ids)

    def fork(self, model, batch: int):
        """An independent cache holding the prefix `batch` times (the original is untouched)."""
        if self.cache is None:
            return new_cache(model)
        c = copy_cache(self.cache)
        c.batch_repeat_interleave(batch)
        return c

    def full_mask(self, mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch prefix_plus_pos"]:
        """Attention mask covering the prefix (all ones) followed by the batch's own mask."""
        ones = torch.ones(mask.shape[0], len(self.ids), dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1)


def new_cache(model):
    """An empty HF cache shaped for this model (sliding-window layers included, e.g. Gemma)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.original_model.config)


def copy_cache(cache):
    """A deep copy of a cache, so one branch can extend it without touching the other."""
    with torch.no_grad():
        return copy.deepcopy(cache)


@torch.no_grad()
def build_prefix_cache(
    model, ids: list[int], stop_at_layer: int | None = None, fwd_hooks: list | None = None
) -> PrefixCache:
    """Run `ids` once (batch 1) and keep its KV cache; blocks from `stop_at_layer` on are skipped."""
    if not ids:
        return PrefixCache([], None)
    tokens = torch.tensor([ids], dtype=torch.long, device=model.cfg.device)
    cache = new_cache(model)
    model.run_with_hooks(tokens, fwd_hooks=fwd_hooks or [], return_type=None,
                         stop_at_layer=stop_at_layer, past_key_values=cache, logits_to_keep=1)
    return PrefixCache(list(ids), cache)


def has_sliding_window(model) -> bool:
    """True for models with sliding-window attention layers (Gemma-2/3, windowed Mistral)."""
    cfg = model.original_model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return bool(getattr(cfg, "sliding_window", None)) and (
        getattr(cfg, "use_sliding_window", True) is not False)


def fold_prefix(model, prompts: PromptSet) -> PromptSet:
    """The prompts to run: shared prefix as given, or folded back into every row.

    A shared prefix puts batch padding between prefix and body. Full attention ignores masked
    keys wherever they sit, but a sliding window counts key *positions*, so interior pads
    would shrink it; for such models the prefix goes back into each row (pads stay leftmost).
    """
    if prompts.prefix and has_sliding_window(model):
        return replace(prompts, prefix=[], rows=[prompts.full(i) for i in range(len(prompts))])
    return prompts
