"""A contrastive refusal subspace: every direction separates harmful from harmless prompts.

The paper models refusal as one direction and names that its main limitation. Here the first
basis row is always the difference in means (Arditi's direction); the others come from
contrasts of subsets of harmful prompts against the harmless mean:
- `category`: the difference in means of each harm category (from prompt sets that carry
  categories and do not overlap JailbreakBench: StrongREJECT, HarmBench);
- `cluster`: k-means clusters of the harmful activations, each cluster's mean minus the
  harmless mean (unsupervised, in the spirit of SOM directions, Piras et al. 2025, and
  refusal cones, Wollschläger et al. 2025);
- `stacked_subspace`: directions from several layers or positions.
Candidates are orthonormalised greedily (the one with the largest part outside the basis so
far comes next), so variance that no contrast owns never enters: a PCA of harmful activations
would return it first (tests/methods/test_subspace.py, planted example). The dimension k is chosen by
ablation effect on validation prompts (`choose_k_by_ablation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.geometry import fraction_in_subspace, orthonormal_basis, principal_angles, unit
from steerlens.errors import SteerlensError

METHODS = ("category", "cluster")


@dataclass
class RefusalSubspace:
    """Orthonormal rows (row 0: the difference in means) with the evidence for each row."""

    basis: Float[Tensor, "k d_model"]
    method: str
    evidence: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])

    def save(self, path) -> None:
        from steerlens.core.tensorfile import save_tensors

        save_tensors(path, {"basis": self.basis}, {"method": self.method, "evidence": self.evidence})

    @classmethod
    def load(cls, path) -> RefusalSubspace:
        from steerlens.core.tensorfile import load_tensors

        t, meta = load_tensors(path)
        return cls(t["basis"], meta["method"], meta["evidence"])


def _greedy_basis(first: Tensor, candidates: Tensor, labels: list[str], k: int | None,
                  tol: float) -> tuple[Tensor, list[dict]]:
    """Orthonormalise `first`, then repeatedly the candidate with the largest residual norm."""
    rows, info = [unit(first)], [{"label": "difference in means", "residual_norm": float(first.norm())}]
    left = list(range(candidates.shape[0]))
    while left and (k is None or len(rows) < k):
        q = torch.stack(rows)
        resid = candidates[left] - (candidates[left] @ q.T) @ q
        norms = resid.norm(dim=-1)
        j = int(norms.argmax())
        if float(norms[j]) <= tol * float(candidates[left[j]].norm()):
            break
        rows.append(resid[j] / norms[j])
        info.append({"label": labels[left[j]], "residual_norm": float(norms[j]),
                     "norm": float(candidates[left[j]].norm())})
        left.pop(j)
    return torch.stack(rows), info


def _category_means(harmful: Tensor, categories: Sequence[str], min_per_group: int
                    ) -> tuple[Tensor, list[str], dict[str, int]]:
    if categories is None or len(categories) != harmful.shape[0]:
        raise SteerlensError("the category method needs one category per harmful activation",
                             fix="pass categories=..., e.g. from data.load_categorized()")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        groups.setdefault(c, []).append(i)
    kept = {c: idx for c, idx in sorted(groups.items()) if c and len(idx) >= min_per_group}
    if not kept:
        raise SteerlensError("no harm category has enough prompts",
                             fix=f"need at least {min_per_group} prompts per category")
    means = torch.stack([harmful[idx].mean(0) for idx in kept.values()])
    return means, list(kept), {c: len(idx) for c, idx in kept.items()}


def _cluster_means(harmful: Tensor, n_clusters: int, min_per_group: int, seed: int
                   ) -> tuple[Tensor, list[str], dict[str, int]]:
    from sklearn.cluster import KMeans

    n_clusters = max(1, min(n_clusters, harmful.shape[0] // max(min_per_group, 1)))
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(harmful.numpy())
    labels = torch.from_numpy(km.labels_)
    kept = [c for c in range(n_clusters) if int((labels == c).sum()) >= min_per_group]
    means = torch.stack([harmful[labels == c].mean(0) for c in kept])
    return means, [f"cluster {c}" for c in kept], {f"cluster {c}": int((labels == c).sum())
                                                  for c in kept}


def refusal_subspace(
    harmful: Float[Tensor, "n d"],
    harmless: Float[Tensor, "m d"],
    k: int | None = None,
    categories: Sequence[str] | None = None,
    method: str = "category",
    n_clusters: int = 6,
    min_per_group: int = 4,
    seed: int = 0,
    tol: float = 1e-6,
    first: Float[Tensor, "d"] | None = None,
) -> RefusalSubspace:
    """A contrastive refusal subspace at one layer and position (see the module docstring).

    The first row is `first` (e.g. the selected refusal direction, so k = 1 is exactly the 1-D
    audit), else the difference in means of all harmful rows against the harmless mean. With
    `k=None` every contrast that adds a dimension is kept; choose k by ablation effect.
    """
    if method not in METHODS:
        raise SteerlensError(f"unknown subspace method {method!r}", fix=f"use one of {METHODS}")
    h, mu = harmful.detach().double().cpu(), harmless.detach().double().cpu().mean(0)
    if method == "category":
        means, labels, sizes = _category_means(h, categories, min_per_group)
    else:
        means, labels, sizes = _cluster_means(h, n_clusters, min_per_group, seed)
    lead = first.detach().double().cpu() if first is not None else h.mean(0) - mu
    basis, info = _greedy_basis(lead, means - mu, labels, k, tol)
    ev = {"method": method, "k_max": basis.shape[0], "rows": info, "group_sizes": sizes,
          "n_harmful": h.shape[0], "n_harmless": harmless.shape[0]}
    return RefusalSubspace(basis.float(), method, ev)


def stacked_subspace(directions: Float[Tensor, "n d"], labels: Sequence[str] = ()) -> RefusalSubspace:
    """Difference-in-means directions from several layers or positions, orthonormalised in
    order (the first stays first)."""
    basis = orthonormal_basis(directions.detach().double().cpu())
    return RefusalSubspace(basis.float(), "stacked", {"sources": list(labels), "k_max": basis.shape[0]})


def overlap_curves(
    vectors: Float[Tensor, "layer d"], bases: Sequence[Float[Tensor, "k d"]]
) -> dict[str, list[float]]:
    """Per layer: the fraction of the vector inside the layer's subspace and its principal angle."""
    frac, angle = [], []
    for v, q in zip(vectors, bases):
        frac.append(float(fraction_in_subspace(v, q)))
        angle.append(float(torch.rad2deg(principal_angles(v[None], q)[0])))
    return {"fraction_in_subspace": frac, "principal_angle_deg": angle}


def choose_k_by_ablation(scores: dict[int, float], baseline: float, share: float = 0.9) -> int:
    """Smallest k whose ablation achieves `share` of the largest drop in refusal score."""
    drops = {k: baseline - s for k, s in scores.items()}
    best = max(drops.values())
    if best <= 0:
        return min(scores)
    return min(k for k, d in drops.items() if d >= share * best)
