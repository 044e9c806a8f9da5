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
    twinned = True  # the grid decodes it with `twinned_cell`, not `generate_grid`

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


class _TailProbe:
    """The steered half's mean projection of the last `tail` positions onto each readout
    basis row, per readout layer (what `generation.Readout` records for a plain cell)."""

    def __init__(self, readout, tail: int):
        self.readout, self.tail, self.values = readout, tail, {}

    def hooks(self) -> list:
        r = self.readout
        if r is None or not r.layers:
            return []

        def grab(x: Tensor, hook, i: int) -> Tensor:
            q = r.bases[i].to(device=x.device, dtype=torch.float32)
            part = x[x.shape[0] // 2:, x.shape[1] - self.tail:].float()
            self.values[i] = einsum(part, q, "b p d, k d -> b p k").mean(dim=1)
            return x

        return [(hook_name(lay), lambda x, hook, i=i: grab(x, hook, i))
                for i, lay in enumerate(r.layers)]

    def rows(self) -> list[list[list[float]]]:
        if not self.values:
            return []
        return torch.stack([self.values[i] for i in sorted(self.values)], dim=1).cpu().tolist()


def _twin_first(model, prompts: PromptSet, clamp: TwinClamp, idx: list[int], readout=None):
    """The prompts `idx` as [twins; steered rows] under `clamp`: (last-position logits of all
    2b rows, cache, mask, the steered rows' readout projections)."""
    from steerlens.core.kvcache import new_cache
    from steerlens.core.prompts import left_pad, pad_id

    device = model.cfg.device
    ids, mask = left_pad([prompts.full(i) for i in idx], pad_id(model.tokenizer))
    ids, mask = torch.cat([ids, ids]).to(device), torch.cat([mask, mask]).to(device)
    cache, probe = new_cache(model), _TailProbe(readout, prompts.n_tail)
    logits = model.run_with_hooks(ids, fwd_hooks=clamp.hooks(prompts.n_tail) + probe.hooks(),
                                  attention_mask=mask, past_key_values=cache, logits_to_keep=1)
    return logits[:, -1], cache, mask, probe.rows()


def _decode_pairs(model, cache, mask: Tensor, logits: Tensor, clamp: TwinClamp,
                  max_new_tokens: int, dec) -> tuple[list[list[int]], list[str]]:
    """Greedy decoding of [twins; steered rows]: the steered row chooses, its twin is fed the
    same token; a finished row leaves the batch with its twin (`dec._advance`: a stop token,
    or the judge's verdict is final)."""
    b, device = logits.shape[0] // 2, model.cfg.device
    alive, out, stopped = list(range(b)), [[] for _ in range(b)], ["length"] * b
    with model.hooks(fwd_hooks=clamp.hooks(None)):
        for step in range(max_new_tokens):
            nxt = logits[len(alive):].argmax(-1)
            keep = dec._advance(nxt.tolist(), alive, out, stopped)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                k = torch.tensor(keep, device=device)
                both = torch.cat([k, k + len(alive)])
                cache.batch_select_indices(both)
                mask, nxt, alive = mask[both], nxt[k], [alive[j] for j in keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits = model(torch.cat([nxt, nxt])[:, None], attention_mask=mask,
                           past_key_values=cache, logits_to_keep=1)[:, -1]
    return out, stopped


@torch.no_grad()
def twinned_cell(model, prompts: PromptSet, clamp: TwinClamp, max_new_tokens: int,
                 batch_size: int = 8, decided: Callable[[str], bool] | None = None,
                 readout=None, stop_ids: set[int] | None = None):
    """A grid cell (`generation.Cell`) under `clamp`: each row decoded beside its unsteered
    twin (fed the row's tokens), with the first-step readout of the steered rows (refusal
    score, projections) and the grid's early exit (`decided`). Twice the rows per step."""
    from steerlens.core.generation import Cell, Completion, _Decoder, refusal_log_odds, stop_token_ids

    stop_ids = stop_token_ids(model.tokenizer) if stop_ids is None else stop_ids
    n, tok = len(prompts), model.tokenizer
    cell = Cell([None] * n, [0.0] * n, [[]] * n)
    dec = _Decoder(model, Steering(), stop_ids, decided)
    for idx in length_batches([prompts.full(i) for i in range(n)], batch_size):
        logits, cache, mask, proj = _twin_first(model, prompts, clamp, idx, readout)
        b = len(idx)
        score = refusal_log_odds(logits[b:], readout.refusal_ids).tolist() if readout else [0.0] * b
        out, stopped = ((_decode_pairs(model, cache, mask, logits, clamp, max_new_tokens, dec))
                        if max_new_tokens > 0 else ([[] for _ in idx], ["length"] * b))
        for j, i in enumerate(idx):
            cell.refusal_score[i], cell.projection[i] = score[j], proj[j] if proj else []
            cell.completions[i] = Completion(out[j], tok.decode(out[j], skip_special_tokens=True),
                                             stopped[j])
    return cell


@torch.no_grad()
def generate_twinned(model, prompts: PromptSet, clamp: TwinClamp, max_new_tokens: int,
                     stop_ids: set[int], batch_size: int = 8) -> tuple[list[list[int]], Tensor]:
    """Greedy tokens of every prompt under `clamp` (each row beside its unsteered twin, which is
    fed the row's tokens), and the steered rows' first-token logits. Rows run to
    `max_new_tokens` or a stop token."""
    first = torch.empty(len(prompts), model.cfg.d_vocab)
    for idx in length_batches([prompts.full(i) for i in range(len(prompts))], batch_size):
        first[idx] = twinned_next_token_logits(model, prompts.subset(idx), clamp, len(idx)).cpu()
    cell = twinned_cell(model, prompts, clamp, max_new_tokens, batch_size, stop_ids=stop_ids)
    return [c.tokens for c in cell.completions], first


@torch.no_grad()
def twinned_next_token_logits(model, prompts: PromptSet, clamp: TwinClamp,
                              batch_size: int = 16) -> Float[Tensor, "batch vocab"]:
    """The steered rows' next-token logits under `clamp` (float32, prompt order): one pass of
    [twins; rows] per batch, as `generation.next_token_logits` is for a plain steering."""
    out = torch.empty(len(prompts), model.cfg.d_vocab, device=model.cfg.device)
    for idx in length_batches([prompts.full(i) for i in range(len(prompts))], batch_size):
        logits = _twin_first(model, prompts, clamp, idx)[0]
        out[torch.tensor(idx, device=out.device)] = logits[len(idx):].float()
    return out
