"""Directional activation patching: read each row's residual component in span(B) at chosen
layers, and hold it at other values (the unsteered twin's) in a steered pass.

The site is `resid_pre` of each held layer, on the positions after the user's instruction
(the only ones an after-instruction addition changes: every earlier position is the same in
the steered and the unsteered run). At the steering layer itself the hold acts after the
addition (hooks on one point run in the order given), so the held component there is that of
`baseline + v`. Holding is `x + (target - x Q^T) Q` per row, Q the row's orthonormal basis at
that layer (zero rows: nothing held), so a target equal to the row's own component changes
nothing, bit for bit, and a row with no basis is untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import einsum, rearrange, repeat
from jaxtyping import Float
from torch import Tensor

from steerlens.core.generation import _body_cache
from steerlens.core.hooks import hook_name
from steerlens.core.kvcache import build_prefix_cache, copy_cache, fold_prefix
from steerlens.core.prompts import PromptSet, length_batches
from steerlens.core.steering import RowAdditions, Steering
from steerlens.errors import SteerlensError


def _span(x: Tensor, tail: int | None) -> int:
    return x.shape[1] if tail is None else tail


class ComponentReader:
    """Hooks recording, at `resid_pre` of `layers`, each row's coefficients on that layer's basis
    rows (`bases[i]`, orthonormal within each group the caller holds) on the last `tail`
    positions of the call (None: all of them)."""

    def __init__(self, layers: Sequence[int], bases: Float[Tensor, "layer k d_model"]):
        self.layers, self.bases = list(layers), bases
        self.values: dict[int, Tensor] = {}

    def hooks(self, tail: int | None) -> list[tuple[str, object]]:
        def read(x: Tensor, hook, i: int) -> Tensor:
            q = self.bases[i].to(device=x.device, dtype=torch.float32)
            part = x[:, x.shape[1] - _span(x, tail):].float()
            # per row, as `HeldComponent` computes it: holding a read value is then exact
            q = repeat(q, "k d -> b k d", b=x.shape[0])
            self.values[i] = einsum(part, q, "b p d, b k d -> b p k")
            return x

        return [(hook_name(lay), lambda x, hook, i=i: read(x, hook, i))
                for i, lay in enumerate(self.layers)]

    def stacked(self) -> Float[Tensor, "batch layer pos k"]:
        return torch.stack([self.values[i] for i in range(len(self.layers))], dim=1)


class HeldComponent:
    """Per row and layer, the component in span(`q[row, layer]`) of the last positions held at
    `target[row, layer]` (coefficients on those rows); zero basis rows hold nothing."""

    touches_prompt = False
    stackable = False

    def __init__(self, layers: Sequence[int], q: Float[Tensor, "rows layer k d_model"],
                 target: Float[Tensor, "rows layer pos k"]):
        if q.shape[:3] != (target.shape[0], len(layers), target.shape[-1]):
            raise SteerlensError(f"held component shapes disagree: basis {tuple(q.shape)}, "
                                 f"target {tuple(target.shape)}, {len(layers)} layers")
        self.layers, self.q, self.target = list(layers), q, target

    def hooks(self, tail: int | None) -> list[tuple[str, object]]:
        def hold(x: Tensor, hook, i: int) -> Tensor:
            n = _span(x, tail)
            q = self.q[:, i].to(device=x.device, dtype=torch.float32)
            part = x[:, x.shape[1] - n:]
            coeff = einsum(part.float(), q, "b p d, b k d -> b p k")
            fix = einsum(self.target[:, i].to(coeff.device) - coeff, q, "b p k, b k d -> b p d")
            x = x.clone()
            x[:, x.shape[1] - n:] = part + fix.to(x.dtype)
            return x

        return [(hook_name(lay), lambda x, hook, i=i: hold(x, hook, i))
                for i, lay in enumerate(self.layers)]

    def keep(self, index: Tensor) -> None:
        self.q, self.target = self.q[index.to(self.q.device)], self.target[index.to(self.q.device)]


@dataclass(frozen=True)
class Arm:
    """One patched (or plain) steered pass: a stackable steering, and which basis rows are
    held at which layers (`cols`: indices into the reader's rows; empty: nothing held)."""

    steering: Steering
    cols: tuple[int, ...] = ()
    layers: frozenset[int] = frozenset()


def _arm_basis(arms: Sequence[Arm], layers: list[int], bases: Tensor) -> Tensor:
    """Each arm's basis per layer: the reader's rows in `cols` at layers of its band, else zero."""
    mask = torch.zeros(len(arms), len(layers), bases.shape[1])
    for a, arm in enumerate(arms):
        for i, lay in enumerate(layers):
            if lay in arm.layers:
                mask[a, i, list(arm.cols)] = 1.0
    return einsum(mask, bases.float().cpu(), "a l k, l k d -> a l k d"), mask


class TailPatcher:
    """One prompt set, run once unsteered: the bodies' KV caches, the unsteered score and the
    components at `layers`; then any number of steered arms, each from a copy of those caches,
    with components held at the unsteered values (`run`). Score: a function of the first-token
    logits per row (e.g. the refusal log-odds)."""

    def __init__(self, model, prompts: PromptSet, layers: Sequence[int],
                 bases: Float[Tensor, "layer k d_model"],
                 score: Callable[[Tensor], Tensor], batch_size: int = 16):
        self.model, self.score, self.layers = model, score, list(layers)
        self.bases = bases.float()
        self.prompts = fold_prefix(model, prompts)
        prefix = build_prefix_cache(model, self.prompts.prefix)
        self.batches = length_batches(self.prompts.rows, batch_size)
        self.caches = [_body_cache(model, prefix, [self.prompts.bodies[i] for i in idx], Steering())
                       for idx in self.batches]
        n = len(self.prompts)
        self.baseline: Tensor | None = None
        self.components = torch.empty(n, len(self.layers), self.prompts.n_tail, bases.shape[1])
        for idx, (cache, mask) in zip(self.batches, self.caches):
            reader = ComponentReader(self.layers, self.bases)
            logits = self._tails(copy_cache(cache), mask, idx, reader.hooks(None))
            got = self.score(logits).float().cpu()
            if self.baseline is None:
                self.baseline = got.new_empty(n, *got.shape[1:])
            self.baseline[idx] = got
            self.components[idx] = reader.stacked().cpu()

    def _tails(self, cache, mask: Tensor, rows: list[int], hooks: list) -> Tensor:
        """First-token logits of the tails of prompts `rows`, after their body caches."""
        device = self.model.cfg.device
        step = torch.tensor([self.prompts.tails[i] for i in rows], dtype=torch.long, device=device)
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)
        logits = self.model.run_with_hooks(step, fwd_hooks=hooks, attention_mask=mask,
                                           past_key_values=cache, logits_to_keep=1)
        return logits[:, -1]

    @torch.no_grad()
    def run(self, arms: Sequence[Arm]) -> Float[Tensor, "arm n ..."]:
        """The score of every prompt under every arm (the arms of a call share each batch)."""
        if not all(a.steering.stackable for a in arms):
            raise SteerlensError("patching runs after-instruction additions only",
                                 fix="build the steering with steering.addition(v, layer)")
        k = len(arms)
        q, mask = _arm_basis(arms, self.layers, self.bases)
        out = None
        for idx, (cache, pmask) in zip(self.batches, self.caches):
            c = copy_cache(cache)
            c.batch_repeat_interleave(k)
            target = repeat(self.components[idx], "b l p k -> (b a) l p k", a=k)
            target = target * repeat(mask, "a l k -> (b a) l 1 k", b=len(idx))
            held = HeldComponent(self.layers, repeat(q, "a l k d -> (b a) l k d", b=len(idx)), target)
            steer = RowAdditions([a.steering for a in arms], len(idx))
            rows = [i for i in idx for _ in range(k)]
            logits = self._tails(c, pmask.repeat_interleave(k, dim=0), rows,
                                 steer.hooks(None) + held.hooks(None))
            got = rearrange(self.score(logits).float().cpu(), "(b a) ... -> a b ...", a=k)
            if out is None:
                out = got.new_empty(k, len(self.prompts), *got.shape[2:])
            out[:, idx] = got
        return out


class TwinClamp:
    """`steering` deployed with its component in span(B) clamped to an unsteered twin's: the
    batch is laid out as [twins; steered rows] (the same token histories), the additions act on
    the steered half only, and at `resid_pre` of each clamp layer the steered rows' component
    in span(`bases[layer]`) on the steered positions is set to their twin's, read in the same
    forward pass (layers run in order, so the twin's value at that layer exists). Every decode
    step feeds the twin the steered row's token (`generate_twinned`): twice the rows per step.
    """

    touches_prompt = False
    stackable = False

    def __init__(self, steering: Steering, layers: Sequence[int],
                 bases: Float[Tensor, "layer k d_model"]):
        if not steering.stackable:
            raise SteerlensError("a clamp deploys after-instruction additions only",
                                 fix="build the steering with steering.addition(v, layer)")
        self.steering, self.layers, self.bases = steering, list(layers), bases.float()

    def _add(self, x: Tensor, hook, delta: Tensor, tail: int | None) -> Tensor:
        n, b = _span(x, tail), x.shape[0] // 2
        x = x.clone()
        x[b:, x.shape[1] - n:] += delta.to(device=x.device, dtype=x.dtype)
        return x

    def _clamp(self, x: Tensor, hook, i: int, tail: int | None) -> Tensor:
        n, b = _span(x, tail), x.shape[0] // 2
        q = self.bases[i].to(device=x.device)
        part = x[:, x.shape[1] - n:].float()
        coeff = einsum(part, q, "b p d, k d -> b p k")
        fix = einsum(coeff[:b] - coeff[b:], q, "b p k, k d -> b p d")
        x = x.clone()
        x[b:, x.shape[1] - n:] += fix.to(x.dtype)
        return x

    def hooks(self, tail: int | None = None) -> list[tuple[str, object]]:
        adds = [(hook_name(a.layer, a.site), lambda x, hook, d=a.multiplier * a.vector:
                 self._add(x, hook, d, tail)) for a in self.steering.interventions]
        return adds + [(hook_name(lay), lambda x, hook, i=i: self._clamp(x, hook, i, tail))
                       for i, lay in enumerate(self.layers)]


@torch.no_grad()
def generate_twinned(model, prompts: PromptSet, clamp: TwinClamp, max_new_tokens: int,
                     stop_ids: set[int], batch_size: int = 8) -> tuple[list[list[int]], Tensor]:
    """Greedy tokens of every prompt under `clamp` (each row beside its unsteered twin, which is
    fed the row's tokens), and the steered rows' first-token logits. Rows run to
    `max_new_tokens` or a stop token (no early exit: pairs stay aligned)."""
    from steerlens.core.kvcache import new_cache
    from steerlens.core.prompts import left_pad, pad_id

    device, tokens = model.cfg.device, [[] for _ in range(len(prompts))]
    first = torch.empty(len(prompts), model.cfg.d_vocab)
    for idx in length_batches([prompts.full(i) for i in range(len(prompts))], batch_size):
        ids, mask = left_pad([prompts.full(i) for i in idx], pad_id(model.tokenizer))
        ids, mask = torch.cat([ids, ids]).to(device), torch.cat([mask, mask]).to(device)
        cache, b = new_cache(model), len(idx)
        logits = model.run_with_hooks(ids, fwd_hooks=clamp.hooks(prompts.n_tail),
                                      attention_mask=mask, past_key_values=cache,
                                      logits_to_keep=1)[:, -1]
        first[idx] = logits[b:].float().cpu()
        done = [False] * b
        with model.hooks(fwd_hooks=clamp.hooks(None)):
            for _ in range(max_new_tokens):
                nxt = logits[b:].argmax(-1)  # the steered row chooses; its twin is fed the same
                for j, t in enumerate(nxt.tolist()):
                    done[j] = done[j] or t in stop_ids
                    if not done[j]:
                        tokens[idx[j]].append(t)
                if all(done):
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                logits = model(torch.cat([nxt, nxt])[:, None], attention_mask=mask,
                               past_key_values=cache, logits_to_keep=1)[:, -1]
    return tokens, first
