"""Batched greedy generation with steering, KV cache, shared prefixes and early exit.

A prompt is `prefix + body + suffix`: the prefix (chat header, attack-template head) is shared
by every prompt, the body varies, the suffix (template tail, end-of-instruction tokens) is the
same for all. Cost levers, each exact (tests/test_generation.py compares with the naive
full-recompute path):
- the prefix is run once and its KV cache forked per batch;
- when no setting changes the prompt's own activations (activation addition after the
  instruction), the prompt's cache is computed once and shared by every steering setting;
- only the last position's logits are computed (`logits_to_keep=1`);
- finished rows (EOS, or a judge that has decided) leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from steerlens.kvcache import PrefixCache, build_prefix_cache, fold_prefix
from steerlens.prompts import left_pad
from steerlens.steering import Steering

_STOP_STRINGS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


def stop_token_ids(tokenizer) -> set[int]:
    """EOS plus the chat end-of-turn tokens this vocabulary has."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[s] for s in _STOP_STRINGS if s in vocab}
    return ids


@dataclass
class Completion:
    tokens: list[int]
    text: str
    stopped: str  # "eos", "judge" or "length"


def _order(bodies: list[list[int]]) -> list[int]:
    """Indices sorted by length, so batches carry little padding."""
    return sorted(range(len(bodies)), key=lambda i: len(bodies[i]))


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


@torch.no_grad()
def _prompt_cache(model, prefix: PrefixCache, bodies, steering: Steering | None):
    """Run the bodies after a forked prefix; returns (cache, mask)."""
    ids, mask = left_pad(bodies, _pad_id(model.tokenizer))
    ids, mask = ids.to(model.cfg.device), mask.to(model.cfg.device)
    full_mask = prefix.full_mask(mask)
    cache = prefix.fork(len(bodies))
    if cache is None:
        from steerlens.kvcache import new_cache

        cache = new_cache(model)
    hooks = steering.hooks() if steering is not None else []
    ctx = steering.window(0) if steering is not None else _null()
    with ctx:
        model.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=full_mask,
                             past_key_values=cache, return_type=None, logits_to_keep=1)
    return cache, full_mask


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@torch.no_grad()
def _decode(model, cache, mask, suffix: list[int], steering: Steering, max_new_tokens: int,
            stop_ids: set[int], decided: Callable[[str], bool] | None) -> list[Completion]:
    """Feed the shared suffix, then decode greedily; rows leave the batch once finished."""
    tok = model.tokenizer
    device = model.cfg.device
    b = mask.shape[0]
    step_ids = torch.tensor([suffix] * b, dtype=torch.long, device=device)
    tail = len(suffix)
    alive = list(range(b))  # original row index of each live batch row
    out: list[list[int]] = [[] for _ in range(b)]
    stopped = ["length"] * b
    hooks = steering.hooks()
    with model.hooks(fwd_hooks=hooks):
        for _ in range(max_new_tokens):
            mask = torch.cat([mask, torch.ones(len(alive), step_ids.shape[1], dtype=mask.dtype,
                                               device=device)], dim=1)
            with steering.window(tail):
                logits = model(step_ids, attention_mask=mask, past_key_values=cache,
                               logits_to_keep=1)
            tail = None
            nxt = logits[:, -1].argmax(-1)
            # The one host transfer per step: B token ids, needed to decode text for the judge.
            host = nxt.tolist()
            keep = []
            for j, row in enumerate(alive):
                t = host[j]
                if t in stop_ids:
                    stopped[row] = "eos"
                    continue
                out[row].append(t)
                if decided is not None and decided(tok.decode(out[row], skip_special_tokens=True)):
                    stopped[row] = "judge"
                    continue
                keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)
                mask, nxt = mask[idx], nxt[idx]
                alive = [alive[j] for j in keep]
            step_ids = nxt[:, None]
    return [Completion(t, tok.decode(t, skip_special_tokens=True), s) for t, s in zip(out, stopped)]


@torch.no_grad()
def generate_grid(
    model,
    prefix: list[int],
    bodies: list[list[int]],
    suffix: list[int],
    settings: dict[str, Steering],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    decided: Callable[[str], bool] | None = None,
    desc: str | None = "generate",
) -> dict[str, list[Completion]]:
    """Greedy completions of `prefix + body + suffix` for every body under every steering setting."""
    if not bodies:
        return {name: [] for name in settings}
    prefix, bodies = fold_prefix(model, prefix, bodies)
    stop_ids = stop_token_ids(model.tokenizer)
    order = _order(bodies)
    results: dict[str, list[Completion | None]] = {n: [None] * len(bodies) for n in settings}
    shared = [n for n, s in settings.items() if not s.touches_prompt]
    own = [n for n, s in settings.items() if s.touches_prompt]
    plain = build_prefix_cache(model, prefix) if shared else None
    own_prefix = {}
    for n in own:
        with settings[n].window(0):
            own_prefix[n] = build_prefix_cache(model, prefix, fwd_hooks=settings[n].hooks())
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bar = tqdm(total=len(batches) * len(settings), desc=desc, disable=desc is None, leave=False)
    for idx in batches:
        chunk = [bodies[i] for i in idx]
        if shared:
            base_cache, base_mask = _prompt_cache(model, plain, chunk, None)
        for n in settings:
            if n in shared:
                cache = _fork(base_cache, len(chunk))
                mask = base_mask
            else:
                cache, mask = _prompt_cache(model, own_prefix[n], chunk, settings[n])
            comps = _decode(model, cache, mask, suffix, settings[n], max_new_tokens, stop_ids,
                            decided)
            for i, c in zip(idx, comps):
                results[n][i] = c
            bar.update(1)
    bar.close()
    return results  # type: ignore[return-value]


def _fork(cache, batch: int):
    """Copy a batch cache so a setting can extend it without touching the shared one."""
    return PrefixCache([0], cache, None).fork(1) if batch else cache


@torch.no_grad()
def generate_naive(model, rows: list[list[int]], n_suffix: int, steering: Steering,
                   max_new_tokens: int) -> list[list[int]]:
    """Reference path: one prompt at a time, full recompute every step, no cache. For tests."""
    stop_ids = stop_token_ids(model.tokenizer)
    outs = []
    for row in rows:
        ids = list(row)
        new: list[int] = []
        for _ in range(max_new_tokens):
            t = torch.tensor([ids], device=model.cfg.device)
            with steering.apply(model, tail=n_suffix + len(new)):
                logits = model(t)
            nxt = int(logits[0, -1].argmax())
            if nxt in stop_ids:
                break
            new.append(nxt)
            ids.append(nxt)
        outs.append(new)
    return outs


@torch.no_grad()
def next_token_logits(
    model,
    prefix: list[int],
    bodies: list[list[int]],
    suffix: list[int],
    steering: Steering | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Logits of the first response token for each `prefix + body + suffix`, float32 [n, vocab].

    The prefix runs once; only the last position is unembedded. Steering "after the
    instruction" acts on the suffix, as it does during generation.
    """
    steering = steering or Steering()
    prefix, bodies = fold_prefix(model, prefix, bodies)
    with steering.window(0):
        pre = build_prefix_cache(model, prefix, fwd_hooks=steering.hooks())
    out = []
    for start in range(0, len(bodies), batch_size):
        chunk = [b + suffix for b in bodies[start : start + batch_size]]
        ids, mask = left_pad(chunk, _pad_id(model.tokenizer))
        ids, mask = ids.to(model.cfg.device), mask.to(model.cfg.device)
        with steering.apply(model, tail=len(suffix)):
            logits = model(ids, attention_mask=pre.full_mask(mask),
                           past_key_values=pre.fork(len(chunk)), logits_to_keep=1)
        out.append(logits[:, -1].float())
    return torch.cat(out)


@torch.no_grad()
def next_token_logits_grid(
    model,
    prefix: list[int],
    bodies: list[list[int]],
    suffix: list[int],
    settings: dict[str, Steering],
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """`next_token_logits` for many settings: settings that leave the prompt untouched share
    one prompt cache per batch and only run the suffix; the others run on their own."""
    out: dict[str, list[torch.Tensor]] = {n: [] for n in settings}
    prefix, bodies = fold_prefix(model, prefix, bodies)
    shared = [n for n, s in settings.items() if not s.touches_prompt]
    for n, s in settings.items():
        if n not in shared:
            out[n] = [next_token_logits(model, prefix, bodies, suffix, s, batch_size)]
    if shared:
        plain = build_prefix_cache(model, prefix)
        for start in range(0, len(bodies), batch_size):
            chunk = bodies[start : start + batch_size]
            base_cache, base_mask = _prompt_cache(model, plain, chunk, None)
            step = torch.tensor([suffix] * len(chunk), dtype=torch.long, device=model.cfg.device)
            mask = torch.cat([base_mask, torch.ones_like(step)], dim=1)
            for n in shared:
                with settings[n].apply(model, tail=len(suffix)):
                    logits = model(step, attention_mask=mask,
                                   past_key_values=_fork(base_cache, len(chunk)),
                                   logits_to_keep=1)
                out[n].append(logits[:, -1].float())
    return {n: torch.cat(v) for n, v in out.items()}
