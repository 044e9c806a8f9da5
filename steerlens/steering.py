"""Steering interventions as TransformerLens hooks: activation addition and directional ablation.

Each intervention yields `(hook_name, fn)` pairs, so it works with `run_with_hooks`,
`model.hooks()` and generation alike; a `Steering` composes several. Activation addition can
act on every position or only on positions after the instruction (CAA's rule): the caller
says, per forward call, how many trailing positions are "after the instruction" with
`Steering.window(tail)`, which is what makes the KV-cache path equal the full-recompute path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from steerlens.activations import hook_name
from steerlens.errors import SteerlensError
from steerlens.geometry import check_vector, orthonormal_basis

POSITION_MODES = ("all", "after_instruction")


@dataclass
class _Window:
    tail: int | None = None  # None: every position of the call is after the instruction


@dataclass
class ActivationAddition:
    """Add `multiplier * vector` to the residual stream at `layer` (`site`)."""

    vector: Float[Tensor, "d_model"]
    layer: int
    multiplier: float = 1.0
    site: str = "resid_pre"
    positions: str = "after_instruction"

    def __post_init__(self) -> None:
        if self.positions not in POSITION_MODES:
            raise SteerlensError(f"unknown positions mode {self.positions!r}",
                                 fix=f"use one of {', '.join(POSITION_MODES)}")
        check_vector(self.vector, name="steering vector")
        if self.vector.ndim != 1:
            raise SteerlensError("an activation addition takes one (d_model,) vector")

    def hooks(self, window: _Window) -> list[tuple[str, object]]:
        def add(x: Tensor, hook) -> Tensor:
            delta = (self.multiplier * self.vector).to(device=x.device, dtype=x.dtype)
            tail = None if self.positions == "all" else window.tail
            if tail is None:
                return x + delta
            if tail == 0:
                return x
            x = x.clone()
            x[:, -tail:] += delta
            return x

        return [(hook_name(self.layer, self.site), add)]


@dataclass
class DirectionalAblation:
    """Project span(`basis`) out of every residual write: block 0's input, each attn_out and mlp_out.

    With one row this is Arditi et al.'s directional ablation; with k rows, subspace ablation.
    """

    basis: Float[Tensor, "k d_model"]
    n_layers: int
    _q: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        b = self.basis if self.basis.ndim == 2 else self.basis[None]
        check_vector(b, name="ablation direction")
        self._q = orthonormal_basis(b).float()

    def hooks(self, window: _Window) -> list[tuple[str, object]]:
        def ablate(x: Tensor, hook) -> Tensor:
            q = self._q.to(x.device)
            xf = x.float()
            coeff = einsum(xf, q, "b p d, k d -> b p k")
            return (xf - einsum(coeff, q, "b p k, k d -> b p d")).to(x.dtype)

        names = ["blocks.0.hook_resid_pre"]
        for layer in range(self.n_layers):
            names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
        return [(n, ablate) for n in names]


@dataclass
class Steering:
    """A composition of interventions, applied together. An empty one is the unsteered baseline."""

    interventions: list = field(default_factory=list)
    _window: _Window = field(default_factory=_Window, repr=False)

    @property
    def touches_prompt(self) -> bool:
        """True when the prompt's own activations change (ablation, or addition at all positions)."""
        return any(
            isinstance(i, DirectionalAblation) or getattr(i, "positions", "") == "all"
            for i in self.interventions
        )

    def hooks(self) -> list[tuple[str, object]]:
        return [h for i in self.interventions for h in i.hooks(self._window)]

    @contextmanager
    def window(self, tail: int | None) -> Iterator[None]:
        """Within this block, only the last `tail` positions of each call are after the instruction."""
        old = self._window.tail
        self._window.tail = tail
        try:
            yield
        finally:
            self._window.tail = old

    @contextmanager
    def apply(self, model, tail: int | None = None) -> Iterator[None]:
        """Attach the hooks to `model` for the duration of the block."""
        with self.window(tail), model.hooks(fwd_hooks=self.hooks()):
            yield


def addition(vector: Tensor, layer: int, multiplier: float = 1.0, **kw) -> Steering:
    return Steering([ActivationAddition(vector, layer, multiplier, **kw)])


def ablation(basis: Tensor, n_layers: int) -> Steering:
    return Steering([DirectionalAblation(basis, n_layers)])


def combine(*steerings: Steering) -> Steering:
    return Steering([i for s in steerings for i in s.interventions])


def as_device(v: Tensor, model) -> Tensor:
    return v.to(device=model.cfg.device, dtype=torch.float32)
