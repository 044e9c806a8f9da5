import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerlens.core.geometry import (
    cosine,
    fraction_in_subspace,
    orthogonalize,
    orthogonalize_subspace,
    orthonormal_basis,
    principal_angles,
    projector,
    scalar_projection,
)

D = 16


def vec(seed, n=None):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((D,) if n is None else (n, D), generator=g, dtype=torch.float64)


seeds = st.integers(0, 2**31 - 1)
scales = st.floats(0.01, 100.0)


@settings(max_examples=60, deadline=None)
@given(seeds, seeds, scales, st.booleans())
def test_orthogonalize_removes_overlap_and_is_invariant(s1, s2, scale, flip):
    v, r = vec(s1), vec(s2)
    out = orthogonalize(v, r)
    assert abs(float(scalar_projection(out, r))) <= 1e-6 * float(v.norm())
    # Idempotent, and invariant to the direction's sign and scale.
    assert torch.allclose(orthogonalize(out, r), out, atol=1e-9)
    r2 = r * scale * (-1 if flip else 1)
    assert torch.allclose(orthogonalize(v, r2), out, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(seeds, seeds)
def test_cosine_bounds_and_symmetry(s1, s2):
    a, b = vec(s1), vec(s2)
    c = float(cosine(a, b))
    assert -1 - 1e-12 <= c <= 1 + 1e-12
    assert abs(c - float(cosine(b, a))) < 1e-12
    assert abs(float(cosine(a, a)) - 1) < 1e-12


def test_float32_and_bf16_inputs_use_float64_geometry():
    v = vec(0).to(torch.bfloat16)
    r = vec(1).to(torch.bfloat16)
    out = orthogonalize(v.float(), r)
    assert abs(float(scalar_projection(out, r))) < 1e-5 * float(v.float().norm())


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(1, 6))
def test_projector_symmetric_idempotent_rank_k(seed, k):
    basis = vec(seed, k)
    p = projector(basis)
    assert torch.allclose(p, p.T, atol=1e-10)
    assert torch.allclose(p @ p, p, atol=1e-10)
    assert torch.linalg.matrix_rank(p).item() == k
    assert abs(float(torch.trace(p)) - k) < 1e-8


@settings(max_examples=40, deadline=None)
@given(seeds, seeds)
def test_k1_subspace_agrees_with_1d(s1, s2):
    v, r = vec(s1), vec(s2)
    assert torch.allclose(orthogonalize_subspace(v, r[None]), orthogonalize(v, r), atol=1e-9)
    assert abs(float(fraction_in_subspace(v, r[None])) - abs(float(cosine(v, r)))) < 1e-9


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 5))
def test_subspace_orthogonalisation_leaves_no_component(seed, k):
    basis, v = vec(seed, k), vec(seed + 1)
    out = orthogonalize_subspace(v, basis)
    assert float(fraction_in_subspace(out, basis)) < 1e-8


def test_principal_angles():
    e = torch.eye(D, dtype=torch.float64)
    assert torch.allclose(principal_angles(e[:2], e[:2]), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    ang = principal_angles(e[:1], e[1:2])
    assert abs(float(ang[0]) - torch.pi / 2) < 1e-6
    q = orthonormal_basis(vec(3, 4))
    assert torch.allclose(q @ q.T, torch.eye(4, dtype=torch.float64), atol=1e-10)
