"""Steering interventions as TransformerLens hooks: activation addition and directional ablation.

An intervention yields `(hook_name, fn)` pairs, so it works with `run_with_hooks`,
`model.hooks()` and generation alike; a `Steering` composes several. Activation addition acts
on every position, or only on the positions after the user's instruction (CAA's rule, the
audit's default). Positions are explicit per forward call: `hooks(tail)` says how many
trailing positions of the call lie after the instruction (`None`: all of them, as in decode
steps), so a KV-cached run and a full recompute steer the same tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import einsum, repeat
from jaxtyping import Float
from torch import Tensor

from steerlens.core.geometry import check_vector, orthonormal_basis
from steerlens.core.hooks import hook_name
from steerlens.errors import SteerlensError

Positions = Literal["all", "after_instruction"]
POSITIONS: tuple[str, ...] = ("all", "after_instruction")
_UNSET = object()


def add_to_tail(x: Float[Tensor, "batch pos d_model"], delta: Tensor, tail: int | None) -> Tensor:
    """`x + delta` on the last `tail` positions (every position when None, none when 0); `delta`
    broadcasts over positions (d_model, or batch 1 d_model for one vector per row)."""
    d = delta.to(device=x.device, dtype=x.dtype)
    if tail is None:
        return x + d
    if tail == 0:
        return x
    x = x.clone()
    x[:, -tail:] += d
    return x


@dataclass(frozen=True)
class ActivationAddition:
    """Add `multiplier * vector` to the residual stream at `layer` (`site`)."""

    vector: Float[Tensor, "d_model"]
    layer: int
    multiplier: float = 1.0
    site: str = "resid_pre"
    positions: Positions = "after_instruction"

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise SteerlensError(f"unknown positions mode {self.positions!r}",
                                 fix=f"use one of {', '.join(POSITIONS)}")
        check_vector(self.vector, name="steering vector")
        if self.vector.ndim != 1:
            raise SteerlensError("an activation addition takes one (d_model,) vector")

    @property
    def touches_prompt(self) -> bool:
        return self.positions == "all"

    def hooks(self, tail: int | None) -> list[tuple[str, object]]:
        """Hooks for one forward call whose last `tail` positions are after the instruction."""
        delta = self.multiplier * self.vector
        n = None if self.positions == "all" else tail

        def add(x: Tensor, hook) -> Tensor:
            return add_to_tail(x, delta, n)

        return [(hook_name(self.layer, self.site), add)]


@dataclass(frozen=True)
class DirectionalAblation:
    """Project span(`basis`) out of every residual write: block 0's input, each attn_out and mlp_out.

    With one row this is Arditi et al.'s directional ablation; with k rows, subspace ablation.
    It acts on every position.
    """

    basis: Float[Tensor, "k d_model"]
    n_layers: int
    q: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        b = self.basis if self.basis.ndim == 2 else self.basis[None]
        check_vector(b, name="ablation direction")
        object.__setattr__(self, "q", orthonormal_basis(b).float())

    touches_prompt = True

    def hooks(self, tail: int | None) -> list[tuple[str, object]]:
        def ablate(x: Tensor, hook) -> Tensor:
            q = self.q.to(x.device)
            xf = x.float()
            coeff = einsum(xf, q, "b p d, k d -> b p k")
            return (xf - einsum(coeff, q, "b p k, k d -> b p d")).to(x.dtype)

        names = [hook_name(0, "resid_pre")]
        for layer in range(self.n_layers):
            names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
        return [(n, ablate) for n in names]


@dataclass(frozen=True)
class Steering:
    """A composition of interventions, applied together. An empty one is the unsteered baseline."""

    interventions: tuple = ()

    @property
    def touches_prompt(self) -> bool:
        """True when the prompt's own activations change (ablation, or addition at all positions)."""
        return any(i.touches_prompt for i in self.interventions)

    def hooks(self, tail: int | None = None) -> list[tuple[str, object]]:
        """Hooks for one forward call: its last `tail` positions are after the instruction
        (`None`: every position is, as in a decode step)."""
        return [h for i in self.interventions for h in i.hooks(tail)]

    def keep(self, index: Tensor) -> None:
        """Rows leaving a batch: the same steering acts on every row, so nothing changes."""

    @property
    def stackable(self) -> bool:
        """True when only after-instruction additions, one per hook: such settings can share
        one batch, each row with its own vector (`RowAdditions`)."""
        adds = self.interventions
        return all(isinstance(i, ActivationAddition) and i.positions == "after_instruction"
                   for i in adds) and len({hook_name(i.layer, i.site) for i in adds}) == len(adds)

    @contextmanager
    def apply(self, model, tail: int | None = _UNSET) -> Iterator[None]:  # type: ignore[assignment]
        """Attach the hooks to `model` for the block.

        Additions after the instruction need to know where it ends: pass `tail` (the number of
        trailing post-instruction positions of each call, e.g. `PromptSet.n_tail`, or `None`
        for calls that lie wholly after it). For generation use `steerlens.core.generation`, which
        passes it per call.
        """
        if tail is _UNSET:
            if any(getattr(i, "positions", "all") == "after_instruction" for i in self.interventions):
                raise SteerlensError(
                    "this steering acts only after the instruction, so apply() needs to know "
                    "where the instruction ends",
                    fix="pass tail=<post-instruction tokens of the call> (PromptSet.n_tail), "
                        "or build the addition with positions='all'")
            tail = None
        with model.hooks(fwd_hooks=self.hooks(tail)):
            yield


class RowAdditions:
    """Several stackable settings in one batch: row j adds the vector of its own setting
    (`settings[j % k]`, rows as `cache.batch_repeat_interleave(k)` lays them out) after the
    instruction. Each row computes what its setting alone would (a setting without an addition
    at a hook adds exact zeros); only the batch is larger, which is what decoding on a CPU needs.
    """

    touches_prompt = False

    def __init__(self, settings: Sequence[Steering], n_rows: int):
        if not all(s.stackable for s in settings):
            raise SteerlensError("only after-instruction additions can share a batch row by row")
        names = sorted({hook_name(i.layer, i.site) for s in settings for i in s.interventions})
        self.deltas: dict[str, Tensor] = {}
        for name in names:
            # multiplier * vector in the vector's own dtype, as ActivationAddition computes it
            per = [next((i.multiplier * i.vector for i in s.interventions
                         if hook_name(i.layer, i.site) == name), None) for s in settings]
            given = [d for d in per if d is not None]
            dtype = functools.reduce(torch.promote_types, [d.dtype for d in given])
            rows = torch.stack([torch.zeros_like(given[0], dtype=dtype) if d is None else d.to(dtype)
                                for d in per])
            self.deltas[name] = repeat(rows, "k d -> (n k) d", n=n_rows)

    def hooks(self, tail: int | None) -> list[tuple[str, object]]:
        def add(x: Tensor, hook, name: str) -> Tensor:
            return add_to_tail(x, self.deltas[name][:, None], tail)

        return [(name, functools.partial(add, name=name)) for name in self.deltas]

    def keep(self, index: Tensor) -> None:
        """Follow the rows still in the batch (as `cache.batch_select_indices(index)`)."""
        self.deltas = {n: d[index.to(d.device)] for n, d in self.deltas.items()}


def addition(vector: Tensor, layer: int, multiplier: float = 1.0, **kw) -> Steering:
    return Steering((ActivationAddition(vector, layer, multiplier, **kw),))


def ablation(basis: Tensor, n_layers: int) -> Steering:
    return Steering((DirectionalAblation(basis, n_layers),))


def combine(*steerings: Steering) -> Steering:
    return Steering(tuple(i for s in steerings for i in s.interventions))


def as_float(v: Tensor, model) -> Tensor:
    """A vector on the model's device in float32 (hooks cast it to the activation dtype)."""
    return v.to(device=model.cfg.device, dtype=torch.float32)
