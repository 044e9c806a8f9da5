"""Same-kind null directions: covariance draws and random prompt-pair differences."""

import pytest
import torch

from steerlens.errors import SteerlensError
from steerlens.methods.nulls import covariance_directions, pair_differences


def _acts(m=40, d=16, rank=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g))[0].T  # rank x d, orthonormal
    scales = torch.tensor([5.0, 2.0, 0.5])[:rank]
    return 3.0 + torch.randn(m, rank, generator=g) * scales @ basis, basis, scales


def test_covariance_draws_have_the_empirical_covariance():
    acts, basis, _ = _acts()
    x = covariance_directions(acts, 20_000, seed=1).double()
    cov = torch.cov(acts.double().T)
    emp = x.T @ x / len(x)
    assert torch.allclose(emp, cov, atol=0.05 * float(cov.abs().max()))


def test_covariance_draws_lie_in_the_activations_span():
    """A planted rank-3 cloud in 16 dimensions: the draws have no component outside it, where
    isotropic random directions have most of theirs."""
    acts, basis, _ = _acts()
    x = covariance_directions(acts, 50, seed=2)
    outside = x - (x @ basis.T) @ basis
    assert float(outside.norm() / x.norm()) < 1e-5
    iso = torch.randn(50, 16, generator=torch.Generator().manual_seed(3))
    assert float((iso - (iso @ basis.T) @ basis).norm() / iso.norm()) > 0.8


def test_pair_differences_are_row_differences():
    acts, _, _ = _acts(m=5)
    x = pair_differences(acts, 100, seed=0)
    diffs = torch.stack([acts[i] - acts[j] for i in range(5) for j in range(5) if i != j])
    gap = (x[:, None] - diffs[None]).abs().amax(-1).amin(-1)  # each row vs its nearest pair
    assert float(gap.max()) < 1e-5
    assert float(x.norm(dim=-1).min()) > 0  # never a prompt minus itself


def test_nulls_are_seeded_and_need_two_rows():
    acts, _, _ = _acts()
    for fn in (covariance_directions, pair_differences):
        assert torch.equal(fn(acts, 4, seed=7), fn(acts, 4, seed=7))
        assert not torch.equal(fn(acts, 4, seed=7), fn(acts, 4, seed=8))
        with pytest.raises(SteerlensError, match="at least 2"):
            fn(acts[:1], 3)
