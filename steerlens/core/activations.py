"""Residual-stream activation collection at chosen layers and positions.

Only the requested (layer, position) slices are kept, so memory is O(prompts x layers x
d_model). The forward pass stops after the last layer read (no unembedding), and the prefix
shared by every prompt is run once and reused through its KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.hooks import check_layers, hook_name, stop_layer
from steerlens.core.kvcache import build_prefix_cache, copy_cache, fold_prefix
from steerlens.core.prompts import PromptSet, left_pad, length_batches, pad_id
from steerlens.core.steering import Steering
from steerlens.errors import SteerlensError


def _check_positions(prompts: PromptSet, positions: Sequence[int]) -> None:
    shortest = min(len(r) for r in prompts.rows)
    if any(p >= 0 or -p > shortest for p in positions):
        raise SteerlensError(
            f"positions {list(positions)} must be negative and within the shortest row ({shortest})",
            fix="read tail positions, e.g. PromptSet.tail_positions()",
        )


def _grabber(layers: Sequence[int], site: str, index, out: dict[int, Tensor]) -> list:
    """Hooks that keep `x[:, index]` (float32) of each layer's residual site in `out`."""
    def grab(x: Tensor, hook, layer: int) -> Tensor:
        out[layer] = x[:, index].float()
        return x

    return [(hook_name(lay, site), lambda x, hook, lay=lay: grab(x, hook, lay)) for lay in layers]



@torch.no_grad()
def collect_resid(
    model,
    prompts: PromptSet,
    layers: Sequence[int],
    positions: Sequence[int] = (-1,),
    site: str = "resid_pre",
    batch_size: int = 16,
    steering: Steering | None = None,
    desc: str | None = "activations",
) -> Float[Tensor, "batch layer pos d_model"]:
    """Residual activations of every prompt at negative `positions` (left padding aligns them).

    `steering` acts as in use: on the prefix and body only where it touches the prompt, on the
    tail after the instruction. Returns float32 on the model's device, in prompt order.
    """
    layers = check_layers(model, layers)
    positions = list(positions)
    _check_positions(prompts, positions)
    steering = steering or Steering()
    stop = stop_layer(model, layers)
    prompts = fold_prefix(model, prompts)
    prefix = build_prefix_cache(model, prompts.prefix, stop, steering.hooks(tail=0))
    device = model.cfg.device
    out = torch.empty(len(prompts), len(layers), len(positions), model.cfg.d_model, device=device)
    pos_index = torch.tensor(positions, device=device)
    for idx in tqdm(length_batches(prompts.rows, batch_size), desc=desc, disable=desc is None,
                    leave=False):
        ids, mask = left_pad([prompts.rows[i] for i in idx], pad_id(model.tokenizer))
        grabbed: dict[int, Tensor] = {}
        hooks = steering.hooks(tail=prompts.n_tail) + _grabber(layers, site, pos_index, grabbed)
        model.run_with_hooks(ids.to(device), fwd_hooks=hooks,
                             attention_mask=prefix.full_mask(mask.to(device)),
                             past_key_values=prefix.fork(model, len(idx)), return_type=None,
                             stop_at_layer=stop, logits_to_keep=1)
        stacked = torch.stack([grabbed[lay] for lay in layers])
        out[torch.tensor(idx, device=device)] = rearrange(stacked, "l b p d -> b l p d")
    return out


def _stems(rows: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Group rows by all but their last id: (distinct stems, row indices per stem)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(r[:-1]), []).append(i)
    return [list(s) for s in groups], list(groups.values())


@torch.no_grad()
def collect_last(
    model,
    prompts: PromptSet,
    layers: Sequence[int],
    site: str = "resid_pre",
    batch_size: int = 16,
    desc: str | None = "activations",
) -> Float[Tensor, "batch layer d_model"]:
    """Activations at the last token of every prompt, running shared stems once.

    Rows that differ only in their last id (a CAA pair: the same question answered `(A` or
    `(B`) share one pass over the stem; each ending is one step from a copy of its cache.
    Equal to `collect_resid(..., positions=[-1])` (tests/core/test_activations.py).
    """
    layers = check_layers(model, layers)
    stop = stop_layer(model, layers)
    prompts = fold_prefix(model, prompts)
    if min(len(r) for r in prompts.rows) < 2:
        return collect_resid(model, prompts, layers, [-1], site, batch_size, desc=desc)[:, :, 0]
    stems, groups = _stems(prompts.rows)
    prefix = build_prefix_cache(model, prompts.prefix, stop)
    device = model.cfg.device
    out = torch.empty(len(prompts), len(layers), model.cfg.d_model, device=device)
    for idx in tqdm(length_batches(stems, batch_size), desc=desc, disable=desc is None, leave=False):
        ids, mask = left_pad([stems[i] for i in idx], pad_id(model.tokenizer))
        mask = prefix.full_mask(mask.to(device))
        cache = prefix.fork(model, len(idx))
        model.run_with_hooks(ids.to(device), attention_mask=mask, past_key_values=cache,
                             return_type=None, stop_at_layer=stop, logits_to_keep=1)
        step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        width = max(len(groups[i]) for i in idx)
        for j in range(width):
            # Stems with fewer endings repeat their last one; the repeat is not stored.
            rows = [groups[i][min(j, len(groups[i]) - 1)] for i in idx]
            step = torch.tensor([[prompts.rows[r][-1]] for r in rows], device=device)
            grabbed: dict[int, Tensor] = {}
            model.run_with_hooks(step, fwd_hooks=_grabber(layers, site, -1, grabbed),
                                 attention_mask=step_mask, past_key_values=copy_cache(cache),
                                 return_type=None, stop_at_layer=stop, logits_to_keep=1)
            acts = rearrange(torch.stack([grabbed[lay] for lay in layers]), "l b d -> b l d")
            keep = [k for k, i in enumerate(idx) if j < len(groups[i])]
            out[torch.tensor([rows[k] for k in keep], device=device)] = acts[keep]
    return out
