"""Batched greedy generation with steering, KV cache, shared prefixes and early exit.

A prompt row is `prefix + body + tail` (see `steerlens.core.prompts`): the prefix is shared by every
row, the tail follows the user's message and is where after-instruction steering acts. Cost
levers, each exact (tests/core/test_generation.py compares with a naive full-recompute path):
- the prefix is run once and its KV cache forked per batch;
- settings that leave the prompt's own activations untouched (additions after the
  instruction) share one cache of the bodies per batch; each runs only its tail and decode;
- the first decode step (the tail under steering) is also the logit screen: it yields each
  row's first-token refusal score and the residual stream's projection onto the refusal
  direction/subspace at chosen layers (`Readout`), so neither needs a pass of its own;
- only the last position's logits are computed (`logits_to_keep=1`);
- finished rows (EOS, or a judge whose verdict can no longer change) leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from einops import einsum, reduce
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.hooks import hook_name
from steerlens.core.kvcache import PrefixCache, build_prefix_cache, copy_cache, fold_prefix
from steerlens.core.prompts import PromptSet, left_pad, length_batches, pad_id
from steerlens.core.steering import RowAdditions, Steering

_STOP_STRINGS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


def stop_token_ids(tokenizer) -> set[int]:
    """EOS plus the chat end-of-turn tokens this vocabulary has."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    return ids | {vocab[s] for s in _STOP_STRINGS if s in vocab}


@dataclass
class Completion:
    tokens: list[int]
    text: str
    stopped: str  # "eos", "judge" or "length"


@dataclass(frozen=True)
class Readout:
    """What the first decode step reads off the prompt's tail: the first-token refusal score
    (log-odds of `refusal_ids`) and, per layer, the mean projection of the tail's residual
    stream (`resid_pre`) onto each row of that layer's orthonormal `bases` (row 0: the refusal
    direction)."""

    refusal_ids: list[int]
    layers: list[int] = field(default_factory=list)
    bases: Float[Tensor, "layer k d_model"] | None = None


@dataclass
class Cell:
    """One setting's results over a prompt set, in prompt order."""

    completions: list[Completion | None]
    refusal_score: list[float]
    projection: list[list[list[float]]]  # [row][layer][basis row]


def refusal_log_odds(logits: Float[Tensor, "b vocab"], ids: Sequence[int]) -> Float[Tensor, "b"]:
    """log p(refusal) - log(1 - p(refusal)), p summed over the refusal first tokens (float32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    lp = torch.logsumexp(logp[:, list(ids)], dim=-1)
    return lp - torch.log1p(-lp.exp().clamp(max=1 - 1e-7))


class _Probe:
    """Hooks that record the tail's projections at the readout layers during one call."""

    def __init__(self, readout: Readout | None):
        self.readout = readout
        self.values: dict[int, Tensor] = {}

    def hooks(self) -> list:
        r = self.readout
        if r is None or not r.layers:
            return []

        def grab(x: Tensor, hook, i: int, layer: int) -> Tensor:
            q = r.bases[i].to(device=x.device, dtype=torch.float32)
            proj = einsum(x.float(), q, "b p d, k d -> b p k")
            self.values[layer] = reduce(proj, "b p k -> b k", "mean")
            return x

        return [(hook_name(lay, "resid_pre"), lambda x, hook, i=i, lay=lay: grab(x, hook, i, lay))
                for i, lay in enumerate(r.layers)]

    def rows(self) -> list[list[list[float]]]:
        if not self.values:
            return []
        stacked = torch.stack([self.values[lay] for lay in self.readout.layers], dim=1)
        return stacked.cpu().tolist()


@dataclass
class _Decoder:
    """Greedy decoding of one batch under one setting, from the cache of its bodies."""

    model: object
    steering: Steering
    stop_ids: set[int]
    decided: Callable[[str], bool] | None

    @torch.no_grad()
    def first_step(self, cache, mask, tails, readout: Readout | None):
        """Run the tails under steering: (next-token logits, mask, projections)."""
        device = self.model.cfg.device
        step = torch.tensor(tails, dtype=torch.long, device=device)
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)
        probe = _Probe(readout)
        logits = self.model.run_with_hooks(
            step, fwd_hooks=self.steering.hooks(None) + probe.hooks(), attention_mask=mask,
            past_key_values=cache, logits_to_keep=1)
        return logits[:, -1], mask, probe.rows()

    @torch.no_grad()
    def decode(self, cache, mask, logits, max_new_tokens: int) -> list[Completion]:
        """Greedy tokens from the first-step logits on; finished rows leave the batch."""
        tok, device = self.model.tokenizer, self.model.cfg.device
        b = mask.shape[0]
        alive, out, stopped = list(range(b)), [[] for _ in range(b)], ["length"] * b
        with self.model.hooks(fwd_hooks=self.steering.hooks(None)):
            for step in range(max_new_tokens):
                nxt = logits.argmax(-1)
                keep = self._advance(nxt.tolist(), alive, out, stopped)  # one host transfer
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(alive):
                    idx = torch.tensor(keep, device=device)
                    mask, nxt = self.select(cache, mask, idx), nxt[idx]
                    alive = [alive[j] for j in keep]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                logits = self.model(nxt[:, None], attention_mask=mask, past_key_values=cache,
                                    logits_to_keep=1)[:, -1]
        return [Completion(t, tok.decode(t, skip_special_tokens=True), s)
                for t, s in zip(out, stopped)]

    def select(self, cache, mask, idx: Tensor):
        """Keep the batch rows `idx` (cache, steering) and return their mask."""
        cache.batch_select_indices(idx)
        self.steering.keep(idx)
        return mask[idx]

    def _advance(self, host: list[int], alive, out, stopped) -> list[int]:
        """Append each live row's token; return the batch positions still generating."""
        keep = []
        for j, row in enumerate(alive):
            if host[j] in self.stop_ids:
                stopped[row] = "eos"
                continue
            out[row].append(host[j])
            text = self.model.tokenizer.decode(out[row], skip_special_tokens=True)
            if self.decided is not None and self.decided(text):
                stopped[row] = "judge"
                continue
            keep.append(j)
        return keep


@torch.no_grad()
def _body_cache(model, prefix: PrefixCache, bodies: list[list[int]], steering: Steering):
    """Run the bodies after a forked prefix (no after-instruction steering): (cache, mask)."""
    ids, mask = left_pad(bodies, pad_id(model.tokenizer))
    device = model.cfg.device
    mask = prefix.full_mask(mask.to(device))
    cache = prefix.fork(model, len(bodies))
    model.run_with_hooks(ids.to(device), fwd_hooks=steering.hooks(tail=0), attention_mask=mask,
                         past_key_values=cache, return_type=None, logits_to_keep=1)
    return cache, mask


@dataclass
class _Group:
    """Settings run together on one batch of prompts: row j is prompt `j // k` under
    setting `names[j % k]` (k = len(names); one setting: the batch as it is)."""

    names: list[str]
    steering: object  # Steering, or RowAdditions for k > 1
    cache: object
    mask: Tensor

    def rows(self, per_prompt: list) -> list:
        """`per_prompt` laid out as the group's rows."""
        return [x for x in per_prompt for _ in self.names]


@dataclass
class _Grid:
    """The settings of one prompt set and where each one's prompt cache comes from.

    Settings that leave the prompt untouched share one cache of the bodies per batch; the
    stackable ones among them (after-instruction additions) also share the decode batch, up to
    `rows` rows: on a CPU a 16-row decode step costs about as much as a 64-row one."""

    model: object
    prompts: PromptSet
    settings: dict[str, Steering]
    rows: int

    def __post_init__(self):
        shared = [s for s in self.settings.values() if not s.touches_prompt]
        self.plain = build_prefix_cache(self.model, self.prompts.prefix) if shared else None
        self.own = {n: build_prefix_cache(self.model, self.prompts.prefix, fwd_hooks=s.hooks(0))
                    for n, s in self.settings.items() if s.touches_prompt}

    def _plan(self, n: int) -> list[list[str]]:
        """Groups of setting names for a batch of n prompts, in the settings' order."""
        per = max(1, self.rows // n)
        stack = [k for k, s in self.settings.items() if k not in self.own and s.stackable]
        alone = [[k] for k in self.settings if k not in stack]
        return [stack[i: i + per] for i in range(0, len(stack), per)] + alone

    def groups(self, idx: list[int]):
        """Yield a `_Group` per group of settings for one batch of prompts."""
        bodies = [self.prompts.bodies[i] for i in idx]
        base = (_body_cache(self.model, self.plain, bodies, Steering())
                if self.plain is not None else None)
        for names in self._plan(len(idx)):
            if names[0] in self.own:
                s = self.settings[names[0]]
                yield _Group(names, s, *_body_cache(self.model, self.own[names[0]], bodies, s))
                continue
            cache, mask = copy_cache(base[0]), base[1]
            steering = self.settings[names[0]]
            if len(names) > 1:
                cache.batch_repeat_interleave(len(names))
                mask = mask.repeat_interleave(len(names), dim=0)
                steering = RowAdditions([self.settings[k] for k in names], len(idx))
            yield _Group(names, steering, cache, mask)


@torch.no_grad()
def generate_grid(
    model,
    prompts: PromptSet,
    settings: dict[str, Steering],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    decided: Callable[[str], bool] | None = None,
    readout: Readout | None = None,
    screen_only: Sequence[str] = (),
    desc: str | None = "generate",
    stack: int = 8,
) -> dict[str, Cell]:
    """Greedy completions of every prompt under every setting, with the first-step readout.

    Settings in `screen_only` get the readout (first-token refusal score, projections) but
    no completion: the logit screen of many settings for the price of one step each. Prompts
    are run `batch_size` at a time; after-instruction settings decode together, up to
    `stack * batch_size` rows.
    """
    prompts = fold_prefix(model, prompts)
    grid = _Grid(model, prompts, settings, stack * batch_size)
    stop_ids = stop_token_ids(model.tokenizer)
    n = len(prompts)
    cells = {name: Cell([None] * n, [0.0] * n, [[]] * n) for name in settings}
    batches = length_batches(prompts.rows, batch_size)
    bar = tqdm(total=len(batches) * len(settings), desc=desc, disable=desc is None, leave=False)
    for idx in batches:
        for g in grid.groups(idx):
            _run_group(model, g, cells, idx, [prompts.tails[i] for i in idx], stop_ids, decided,
                       readout, max_new_tokens, set(screen_only))
            bar.update(len(g.names))
    bar.close()
    return cells


def _run_group(model, g: _Group, cells: dict[str, Cell], idx: list[int], tails: list[list[int]],
               stop_ids, decided, readout, max_new_tokens: int, screen_only: set[str]) -> None:
    """First step (readout) for every row of a group, then greedy decoding of the rows whose
    setting is generated; results go into `cells`."""
    dec = _Decoder(model, g.steering, stop_ids, decided)
    logits, mask, proj = dec.first_step(g.cache, g.mask, g.rows(tails), readout)
    score = refusal_log_odds(logits, readout.refusal_ids).tolist() if readout else None
    k = len(g.names)
    for j in range(len(logits)):
        cell, i = cells[g.names[j % k]], idx[j // k]
        cell.refusal_score[i] = score[j] if score else 0.0
        cell.projection[i] = proj[j] if proj else []
    gen = [j for j in range(len(logits)) if g.names[j % k] not in screen_only]
    if not gen or max_new_tokens < 1:
        return
    if len(gen) < len(logits):
        sel = torch.tensor(gen, device=logits.device)
        mask, logits = dec.select(g.cache, mask, sel), logits[sel]
    for j, comp in zip(gen, dec.decode(g.cache, mask, logits, max_new_tokens)):
        cells[g.names[j % k]].completions[idx[j // k]] = comp


@torch.no_grad()
def next_token_logits(
    model, prompts: PromptSet, steering: Steering | None = None, batch_size: int = 16
) -> Float[Tensor, "batch vocab"]:
    """Logits of the token after each prompt (float32, prompt order), steered as in use."""
    steering = steering or Steering()
    prompts = fold_prefix(model, prompts)
    prefix = build_prefix_cache(model, prompts.prefix, fwd_hooks=steering.hooks(0))
    out = torch.empty(len(prompts), model.cfg.d_vocab, device=model.cfg.device)
    for idx in length_batches(prompts.rows, batch_size):
        ids, mask = left_pad([prompts.rows[i] for i in idx], pad_id(model.tokenizer))
        ids, mask = ids.to(model.cfg.device), mask.to(model.cfg.device)
        logits = model.run_with_hooks(ids, fwd_hooks=steering.hooks(prompts.n_tail),
                                      attention_mask=prefix.full_mask(mask),
                                      past_key_values=prefix.fork(model, len(idx)),
                                      logits_to_keep=1)
        out[torch.tensor(idx, device=out.device)] = logits[:, -1].float()
    return out


@torch.no_grad()
def next_token_logits_grid(
    model, prompts: PromptSet, settings: dict[str, Steering], batch_size: int = 16, stack: int = 8
) -> dict[str, Float[Tensor, "batch vocab"]]:
    """`next_token_logits` for many settings; those that leave the prompt untouched share one
    cache of the bodies per batch and run only their tails, stacked as in `generate_grid`."""
    prompts = fold_prefix(model, prompts)
    grid = _Grid(model, prompts, settings, stack * batch_size)
    out = {n: torch.empty(len(prompts), model.cfg.d_vocab, device=model.cfg.device)
           for n in settings}
    for idx in length_batches(prompts.rows, batch_size):
        tails = [prompts.tails[i] for i in idx]
        for g in grid.groups(idx):
            logits, _, _ = _Decoder(model, g.steering, set(), None).first_step(
                g.cache, g.mask, g.rows(tails), None)
            k = len(g.names)
            for j, name in enumerate(g.names):
                out[name][torch.tensor(idx, device=logits.device)] = logits[j::k].float()
    return out
