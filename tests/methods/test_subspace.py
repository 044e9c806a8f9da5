import pytest
import torch

from steerlens.core.geometry import fraction_in_subspace, principal_angles
from steerlens.errors import SteerlensError
from steerlens.methods.subspace import (
    choose_k_by_ablation,
    overlap_curves,
    refusal_subspace,
    stacked_subspace,
)

D = 32


def planted(n_per=400, seed=0, shift=4.0, variance_sd=3.0, noise=0.05):
    """Three categories shifted along their own directions, plus a larger harmful-only
    variance direction that no category owns (sd 3 > the categories' sd of about 1.9)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(D, 4, generator=g, dtype=torch.float64))[0].T
    dirs, var_dir = q[:3], q[3]
    rows, cats = [], []
    for c in range(3):
        z = torch.randn(n_per, 1, generator=g, dtype=torch.float64) * variance_sd
        rows.append(shift * dirs[c] + z * var_dir
                    + noise * torch.randn(n_per, D, generator=g, dtype=torch.float64))
        cats += [f"cat{c}"] * n_per
    harmless = noise * torch.randn(3 * n_per, D, generator=g, dtype=torch.float64)
    return dirs, var_dir, torch.cat(rows), cats, harmless


def test_category_subspace_recovers_planted_span_and_excludes_variance():
    dirs, var_dir, harmful, cats, harmless = planted()
    sub = refusal_subspace(harmful, harmless, categories=cats, method="category")
    assert sub.k == 3
    assert torch.rad2deg(principal_angles(sub.basis.double(), dirs)).max() < 5
    assert float(fraction_in_subspace(var_dir, sub.basis)) < 0.1
    md = harmful.mean(0) - harmless.mean(0)
    assert torch.allclose(sub.basis[0].double(), md / md.norm(), atol=1e-5)
    assert torch.allclose(sub.basis @ sub.basis.T, torch.eye(3), atol=1e-5)


def test_pca_of_harmful_activations_would_fail_the_planted_test():
    """The estimator this replaces: PCA of harmful activations finds the variance direction."""
    dirs, var_dir, harmful, _, _ = planted()
    x = harmful - harmful.mean(0)
    top = torch.linalg.svd(x, full_matrices=False).Vh[0]
    assert torch.rad2deg(principal_angles(top[None], dirs)).min() > 80
    assert abs(float(top @ var_dir)) > 0.99


def test_truncated_subspace_keeps_the_strongest_contrasts():
    dirs, _, harmful, cats, harmless = planted()
    sub = refusal_subspace(harmful, harmless, k=2, categories=cats)
    assert sub.k == 2 and len(sub.evidence["rows"]) == 2
    assert sub.evidence["rows"][0]["label"] == "difference in means"


def test_cluster_subspace_is_contrastive():
    """Without labels, clusters of well-separated categories recover the planted span."""
    dirs, _, harmful, _, harmless = planted(variance_sd=0.3)
    sub = refusal_subspace(harmful, harmless, method="cluster", n_clusters=3)
    assert sub.k == 3
    assert torch.rad2deg(principal_angles(sub.basis.double(), dirs)).max() < 5


def test_bad_inputs():
    _, _, harmful, cats, harmless = planted(n_per=10)
    with pytest.raises(SteerlensError, match="one category per"):
        refusal_subspace(harmful, harmless, categories=cats[:-1])
    with pytest.raises(SteerlensError, match="unknown subspace method"):
        refusal_subspace(harmful, harmless, method="pca")
    with pytest.raises(SteerlensError, match="enough prompts"):
        refusal_subspace(harmful, harmless, categories=cats, min_per_group=50)


def test_stacked_estimator_and_curves():
    dirs, _, _, _, _ = planted(n_per=2)
    sub = stacked_subspace(torch.cat([dirs[:2], dirs[:1] * 2]))
    assert sub.k == 2
    assert principal_angles(sub.basis.double(), dirs[:2]).max() < 1e-5
    v = torch.stack([dirs[0], dirs[0] + dirs[1], dirs[2]])
    curves = overlap_curves(v, [sub.basis] * 3)
    assert [round(f, 6) for f in curves["fraction_in_subspace"]] == [1.0, 1.0, 0.0]
    assert abs(curves["principal_angle_deg"][2] - 90) < 1e-4


def test_choose_k_by_ablation():
    assert choose_k_by_ablation({1: -2.0, 2: -3.9, 3: -4.0}, baseline=0.0) == 2
    assert choose_k_by_ablation({1: -1.0, 2: -1.0, 3: -4.0}, baseline=0.0) == 3
    assert choose_k_by_ablation({1: 0.5, 2: 0.7}, baseline=0.0) == 1
