import torch

from steerlens.geometry import principal_angles
from steerlens.subspace import (
    category_subspace,
    choose_k_by_variance,
    overlap_curves,
    pca_subspace,
    stacked_subspace,
)

D = 32


def planted(k=3, n=200, seed=0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(D, k, generator=g, dtype=torch.float64))[0].T
    harmless = torch.randn(n, D, generator=g, dtype=torch.float64) * noise
    coeff = torch.randn(n, k, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.5][:k])
    harmful = coeff @ basis + torch.randn(n, D, generator=g, dtype=torch.float64) * noise
    return basis, harmful, harmless


def test_pca_recovers_planted_subspace():
    basis, harmful, harmless = planted()
    sub = pca_subspace(harmful, harmless, include_mean=False, variance_threshold=0.95)
    assert sub.k == 3
    assert principal_angles(sub.basis.double(), basis).max() < 0.1


def test_pca_first_vector_is_mean_difference():
    basis, harmful, harmless = planted()
    harmful = harmful + 5 * basis[0]
    sub = pca_subspace(harmful, harmless, k=1)
    md = harmful.mean(0) - harmless.mean(0)
    assert torch.allclose(sub.basis[0].double(), md / md.norm(), atol=1e-5)


def test_category_estimator_recovers_planted_directions():
    g = torch.Generator().manual_seed(1)
    dirs = torch.linalg.qr(torch.randn(D, 3, generator=g, dtype=torch.float64))[0].T
    cats, rows = [], []
    for c in range(3):
        for _ in range(20):
            rows.append(4 * dirs[c] + 0.05 * torch.randn(D, generator=g, dtype=torch.float64))
            cats.append(f"cat{c}")
    harmless = 0.05 * torch.randn(50, D, generator=g, dtype=torch.float64)
    sub = category_subspace(torch.stack(rows), cats, harmless)
    assert sub.k == 3
    assert principal_angles(sub.basis.double(), dirs).max() < 0.1


def test_stacked_estimator_and_curves():
    basis, _, _ = planted(k=2)
    sub = stacked_subspace(torch.cat([basis, basis[:1] * 2]))
    assert sub.k == 2
    assert principal_angles(sub.basis.double(), basis).max() < 1e-5
    v = torch.stack([basis[0], basis[0] + basis[1]])
    curves = overlap_curves(v, [sub.basis, sub.basis])
    assert all(abs(f - 1) < 1e-5 for f in curves["fraction_in_subspace"])


def test_choose_k_by_ablation():
    from steerlens.subspace import choose_k_by_ablation

    assert choose_k_by_ablation({1: -2.0, 2: -3.9, 3: -4.0}, baseline=0.0) == 2
    assert choose_k_by_ablation({1: 0.5, 2: 0.7}, baseline=0.0) == 1


def test_choose_k():
    assert choose_k_by_variance([0.6, 0.3, 0.1], 0.5) == 1
    assert choose_k_by_variance([0.3, 0.3, 0.4], 0.9) == 3


def test_mitigation_experiment_on_tiny_model(tiny_model):
    from steerlens.data import load_instructions
    from steerlens.subspace import mitigation_experiment

    g = torch.Generator().manual_seed(3)
    d = tiny_model.cfg.d_model
    r = torch.randn(d, generator=g)
    v = 2 * r + torch.randn(d, generator=g)
    other = torch.randn(d, generator=g)
    sub = stacked_subspace(torch.stack([r, v - 2 * r, other]))
    harmful = [x.instruction for x in load_instructions("harmful_val")[:4]]
    res = mitigation_experiment(tiny_model, {"v": v * 3}, 1, 2.0, r, sub, harmful, ks=[1, 2])
    rec = res["vectors"]["v"]
    assert set(rec) >= {"raw", "perp1", "perpk1", "perpk2", "restored_fraction"}
    # k=1 spans r only: identical to the 1-D mitigation; k=2 spans v entirely: full restoration.
    assert abs(rec["perpk1"] - rec["perp1"]) < 1e-4
    assert abs(rec["perpk2"] - res["baseline"]) < 1e-6
    assert rec["restored_fraction"]["perpk2"] == 1.0
    assert set(res["ablation_by_k"]) == {1, 2} and res["k_by_ablation"] in (1, 2)
