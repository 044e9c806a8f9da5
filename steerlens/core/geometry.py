"""Pure maths of vectors against directions and subspaces (float64 internally, no model, no I/O).

Cosine overlap, scalar projection, orthogonalisation (the mitigation), orthonormal bases,
projectors and principal angles. Inputs in any dtype are promoted so bf16 models do not
round the geometry.
"""

from __future__ import annotations

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import SteerlensError

_EPS = 1e-12


def _f64(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64)


def check_vector(v: Tensor, d_model: int | None = None, name: str = "vector") -> None:
    """Reject zero, non-finite or wrongly sized vectors with a message that names the fix."""
    if d_model is not None and v.shape[-1] != d_model:
        raise SteerlensError(
            f"{name} has d_model {v.shape[-1]}, the model has {d_model}",
            fix="use a vector built for this model (same d_model)",
        )
    if not torch.isfinite(v).all():
        raise SteerlensError(f"{name} contains NaN or inf", fix="rebuild the vector")
    if (v.float().norm(dim=-1) == 0).any():
        raise SteerlensError(f"{name} is zero", fix="a steering vector needs a non-zero direction")


def unit(v: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """`v / ||v||` along the last axis (float64)."""
    v = _f64(v)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Cosine similarity along the last axis, broadcasting (e.g. per layer)."""
    return einsum(unit(a), unit(b), "... d, ... d -> ...")


def scalar_projection(
    v: Float[Tensor, "... d"], direction: Float[Tensor, "... d"]
) -> Float[Tensor, "..."]:
    """Signed length of `v` along `direction` (direction's scale does not matter)."""
    return einsum(_f64(v), unit(direction), "... d, ... d -> ...")


def orthogonalize(
    v: Float[Tensor, "... d"], direction: Float[Tensor, "... d"]
) -> Float[Tensor, "... d"]:
    """`v` minus its component along `direction`: the paper's 1-D mitigation. Keeps v's dtype."""
    r = unit(direction)
    out = _f64(v) - scalar_projection(v, r)[..., None] * r
    return out.to(v.dtype)


def orthonormal_basis(
    vectors: Float[Tensor, "k d"], tol: float = 1e-8
) -> Float[Tensor, "r d"]:
    """Orthonormal rows spanning `vectors`, in order (QR), dependent rows dropped.

    Order matters: the first j output rows span the first j inputs, so truncating a basis to
    k keeps the k leading directions.
    """
    v = _f64(vectors)
    if v.ndim != 2 or v.shape[0] == 0:
        raise SteerlensError("a subspace needs a non-empty (k, d_model) set of vectors")
    keep = [i for i in range(v.shape[0]) if float(v[i].norm()) > _EPS]
    while keep:
        q, r = torch.linalg.qr(v[keep].T)
        diag = r.diagonal().abs()
        small = [j for j, i in enumerate(keep) if diag[j] <= tol * float(v[i].norm())]
        if not small:
            return (q * torch.sign(r.diagonal())).T
        keep.pop(small[0])  # a row dependent on the ones before it adds nothing
    raise SteerlensError("the vectors spanning the subspace are all zero")


def projector(basis: Float[Tensor, "k d"]) -> Float[Tensor, "d d"]:
    """Orthogonal projector `Q^T Q` onto the span of `basis` (orthonormalised first)."""
    q = orthonormal_basis(basis)
    return einsum(q, q, "k i, k j -> i j")


def subspace_component(
    v: Float[Tensor, "... d"], basis: Float[Tensor, "k d"]
) -> Float[Tensor, "... d"]:
    """The part of `v` inside span(basis)."""
    q = orthonormal_basis(basis)
    coeff = einsum(_f64(v), q, "... d, k d -> ... k")
    return einsum(coeff, q, "... k, k d -> ... d")


def orthogonalize_subspace(
    v: Float[Tensor, "... d"], basis: Float[Tensor, "k d"]
) -> Float[Tensor, "... d"]:
    """`v` with its span(basis) component removed: the k-D mitigation. Keeps v's dtype."""
    return (_f64(v) - subspace_component(v, basis)).to(v.dtype)


def fraction_in_subspace(
    v: Float[Tensor, "... d"], basis: Float[Tensor, "k d"]
) -> Float[Tensor, "..."]:
    """||P v|| / ||v||: how much of `v` lies in the subspace (1-D: |cosine|)."""
    return subspace_component(v, basis).norm(dim=-1) / _f64(v).norm(dim=-1).clamp_min(_EPS)


def principal_angles(
    a: Float[Tensor, "k d"], b: Float[Tensor, "m d"]
) -> Float[Tensor, "r"]:
    """Principal angles (radians, ascending) between span(a) and span(b) (scipy)."""
    from scipy.linalg import subspace_angles

    angles = subspace_angles(_f64(a).cpu().numpy().T, _f64(b).cpu().numpy().T)
    return torch.from_numpy(angles.copy()).flip(0)


def mean_difference(
    pos: Float[Tensor, "n ..."], neg: Float[Tensor, "m ..."]
) -> Float[Tensor, "..."]:
    """Difference in means along the first axis, in float32."""
    return pos.float().mean(0) - neg.float().mean(0)


def rescale(v: Float[Tensor, "... d"], norm: float | Tensor) -> Float[Tensor, "... d"]:
    """`v` scaled to the given norm (per row when `norm` broadcasts)."""
    n = torch.as_tensor(norm, dtype=torch.float64, device=v.device)
    return (unit(v) * n[..., None] if n.ndim else unit(v) * n).to(v.dtype)
