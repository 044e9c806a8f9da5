"""Residual-stream activation collection at chosen layers and positions.

Only the requested (layer, position) slices are kept, so memory is O(prompts x layers x
d_model). The forward pass stops after the last layer read (no unembedding), and the chat
header shared by every prompt is run once and reused through its KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.errors import SteerlensError
from steerlens.kvcache import PrefixCache, build_prefix_cache, fold_prefix
from steerlens.prompts import left_pad

SITES = ("resid_pre", "resid_mid", "resid_post")


def hook_name(layer: int, site: str = "resid_pre") -> str:
    """The TransformerLens hook name of a residual-stream site: `blocks.{layer}.hook_{site}`."""
    if site not in SITES:
        raise SteerlensError(f"unknown residual site {site!r}", fix=f"use one of {', '.join(SITES)}")
    return f"blocks.{layer}.hook_{site}"


def check_layers(model, layers: Sequence[int]) -> list[int]:
    """Validate layer indices against the model and return them as a sorted list."""
    n = model.cfg.n_layers
    bad = [lay for lay in layers if not 0 <= int(lay) < n]
    if bad or not layers:
        raise SteerlensError(
            f"layer(s) {bad or 'none'} out of range for a model with {n} layers",
            fix=f"choose layers in 0..{n - 1}",
        )
    return sorted({int(lay) for lay in layers})


def stop_layer(model, layers: Sequence[int]) -> int | None:
    """Stop the forward pass after the deepest layer read (None: run to the end)."""
    stop = max(layers) + 1
    return None if stop >= model.cfg.n_layers else stop


@torch.no_grad()
def collect_resid(
    model,
    rows: list[list[int]],
    layers: Sequence[int],
    positions: Sequence[int] = (-1,),
    site: str = "resid_pre",
    prefix: list[int] | PrefixCache | None = None,
    batch_size: int = 16,
    fwd_hooks: list | None = None,
    desc: str | None = "activations",
) -> Float[Tensor, "batch layer pos d_model"]:
    """Residual activations of `rows` (token ids after the shared `prefix`) at negative `positions`.

    Rows are left-padded per batch, so negative positions index the same token of every row.
    `fwd_hooks` (e.g. steering) apply to the prefix and the rows alike. Returns float32 on the
    model's device.
    """
    layers = check_layers(model, layers)
    positions = list(positions)
    if not rows:
        raise SteerlensError("empty prompt set: nothing to collect", fix="pass at least one prompt")
    shortest = min(len(r) for r in rows)
    if any(p >= 0 or -p > shortest for p in positions):
        raise SteerlensError(
            f"positions {positions} must be negative and within the shortest row ({shortest})",
            fix="read post-instruction positions, e.g. prompts.eoi_positions(n_suffix)",
        )
    stop = stop_layer(model, layers)
    hooks_extra = list(fwd_hooks or [])
    if not isinstance(prefix, PrefixCache):
        prefix, rows = fold_prefix(model, list(prefix or []), rows)
        prefix = build_prefix_cache(model, list(prefix or []), stop, hooks_extra)
    device = model.cfg.device
    out = torch.empty(len(rows), len(layers), len(positions), model.cfg.d_model, device=device)
    pos_index = torch.tensor(positions, device=device)
    batches = range(0, len(rows), batch_size)
    for start in tqdm(batches, desc=desc, disable=desc is None, leave=False):
        chunk = rows[start : start + batch_size]
        ids, mask = left_pad(chunk, _pad_id(model))
        ids, mask = ids.to(device), mask.to(device)
        grabbed: dict[int, Tensor] = {}

        def grab(x, hook, layer):
            grabbed[layer] = x[:, pos_index].float()
            return x

        hooks = hooks_extra + [
            (hook_name(lay, site), lambda x, hook, lay=lay: grab(x, hook, lay)) for lay in layers
        ]
        model.run_with_hooks(
            ids,
            fwd_hooks=hooks,
            attention_mask=prefix.full_mask(mask),
            past_key_values=prefix.fork(len(chunk)),
            return_type=None,
            stop_at_layer=stop,
            logits_to_keep=1,
        )
        stacked = torch.stack([grabbed[lay] for lay in layers])
        out[start : start + len(chunk)] = rearrange(stacked, "layer batch pos d -> batch layer pos d")
    return out


def _pad_id(model) -> int:
    tok = model.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def mean_diff(
    pos: Float[Tensor, "n ..."], neg: Float[Tensor, "m ..."]
) -> Float[Tensor, "..."]:
    """Difference in means along the first axis, in float32."""
    return pos.float().mean(0) - neg.float().mean(0)


def paired_mean_diff(
    a: Float[Tensor, "n ..."], b: Float[Tensor, "n ..."]
) -> Float[Tensor, "..."]:
    """Mean of per-item differences (CAA); equals `mean_diff` for equal-size paired sets."""
    if a.shape != b.shape:
        raise SteerlensError(f"paired sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).mean(0)


@torch.no_grad()
def collect_continuations(
    model,
    rows: list[list[int]],
    continuations: Sequence[int],
    layers: Sequence[int],
    site: str = "resid_pre",
    prefix: list[int] | None = None,
    batch_size: int = 16,
    desc: str | None = "activations",
) -> Float[Tensor, "batch cont layer d_model"]:
    """Activations at one appended token, for each of several tokens after the same rows.

    A CAA pair differs only in its last token ("A" vs "B"): the shared part is run once and
    each ending is a single-token step from a copy of its KV cache.
    """
    import copy

    layers = check_layers(model, layers)
    stop = stop_layer(model, layers)
    prefix, rows = fold_prefix(model, list(prefix or []), rows)
    pre = build_prefix_cache(model, prefix, stop)
    device = model.cfg.device
    out = torch.empty(len(rows), len(continuations), len(layers), model.cfg.d_model, device=device)
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=desc is None,
                      leave=False):
        chunk = rows[start : start + batch_size]
        ids, mask = left_pad(chunk, _pad_id(model))
        ids, mask = ids.to(device), pre.full_mask(mask.to(device))
        cache = pre.fork(len(chunk))
        if cache is None:
            from steerlens.kvcache import new_cache

            cache = new_cache(model)
        model.run_with_hooks(ids, attention_mask=mask, past_key_values=cache, return_type=None,
                             stop_at_layer=stop, logits_to_keep=1)
        step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        for c, tok_id in enumerate(continuations):
            grabbed: dict[int, Tensor] = {}

            def grab(x, hook, layer):
                grabbed[layer] = x[:, -1].float()
                return x

            hooks = [(hook_name(lay, site), lambda x, hook, lay=lay: grab(x, hook, lay))
                     for lay in layers]
            step = torch.full((len(chunk), 1), int(tok_id), dtype=torch.long, device=device)
            model.run_with_hooks(step, fwd_hooks=hooks, attention_mask=step_mask,
                                 past_key_values=copy.deepcopy(cache), return_type=None,
                                 stop_at_layer=stop, logits_to_keep=1)
            out[start : start + len(chunk), c] = rearrange(
                torch.stack([grabbed[lay] for lay in layers]), "layer batch d -> batch layer d")
    return out
