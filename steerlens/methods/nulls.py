"""Null steering directions of the same kind as the audited vectors, beyond isotropic random
directions (which barely touch the refusal direction: cos ~ ±1/sqrt(d)).

- `covariance_directions`: Gaussian draws with the empirical covariance of residual
  activations at the steering layer, N(0, Σ̂): "natural" directions, which lie in the span the
  model's activations occupy (Σ̂ from n activations has rank ≤ n − 1);
- `pair_differences`: differences of the activations of random pairs of prompts, the shape of
  an ActAdd vector (Turner et al. 2023) built from pairs that differ in nothing in particular.

Both are drawn from a seeded generator; callers rescale them to the audited dose. The audit
(`audit.settings.null_directions`) draws them from the refusal train activations at the steering
layer, within class: the covariance of harmful and harmless activations each centred on its own
mean, and pairs of two harmful or two harmless prompts (`--n-null-covariance`,
`--n-null-pairs`).
"""

from __future__ import annotations

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import SteerlensError


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(20_000 + seed)


def covariance_directions(acts: Float[Tensor, "n d_model"], n: int,
                          seed: int = 0) -> Float[Tensor, "n_draws d_model"]:
    """`n` draws from N(0, Σ̂), Σ̂ the unbiased covariance of `acts`: x = Cᵀ g / sqrt(m − 1)
    with C the centred activations and g ~ N(0, I_m), which has covariance exactly Σ̂."""
    m = acts.shape[0]
    if m < 2:
        raise SteerlensError("covariance nulls need at least 2 activations",
                             fix="pass more prompts' activations")
    centred = acts.double() - acts.double().mean(0, keepdim=True)
    g = torch.randn(n, m, generator=_generator(seed), dtype=torch.float64)
    return (einsum(g, centred, "k m, m d -> k d") / (m - 1) ** 0.5).float()


def pair_differences(acts: Float[Tensor, "n d_model"], n: int,
                     seed: int = 0) -> Float[Tensor, "n_draws d_model"]:
    """`n` differences acts[i] − acts[j] over random ordered pairs i ≠ j."""
    m = acts.shape[0]
    if m < 2:
        raise SteerlensError("pair-difference nulls need at least 2 activations",
                             fix="pass more prompts' activations")
    g = _generator(seed)
    i = torch.randint(0, m, (n,), generator=g)
    j = (i + torch.randint(1, m, (n,), generator=g)) % m  # never i itself
    return (acts[i].double() - acts[j].double()).float()
