"""A k-dimensional refusal subspace: estimators, choice of k, and geometry of vectors against it.

The paper models refusal as one direction and names that its main limitation. Three
estimators give an orthonormal basis (rows) at one layer/position:
(a) `pca_subspace`: PCA (scikit-learn) of harmful activations centred on the harmless mean,
    or of paired differences;
(b) `category_subspace`: one difference-in-means direction per harm category, orthonormalised;
(c) `stacked_subspace`: directions from several layers/positions, stacked and orthonormalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from sklearn.decomposition import PCA
from torch import Tensor

from steerlens.errors import SteerlensError
from steerlens.geometry import (
    fraction_in_subspace,
    orthonormal_basis,
    principal_angles,
    unit,
)


@dataclass
class Subspace:
    """Orthonormal rows spanning the subspace, with the evidence for its dimension."""

    basis: Float[Tensor, "k d_model"]
    method: str
    evidence: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])

    def truncate(self, k: int) -> Subspace:
        return Subspace(self.basis[:k], self.method, {**self.evidence, "k": k})


def choose_k_by_variance(ratios: Sequence[float], threshold: float = 0.5) -> int:
    """Smallest k whose cumulative explained-variance ratio reaches `threshold`."""
    cum = np.cumsum(np.asarray(ratios, dtype=float))
    hit = np.nonzero(cum >= threshold)[0]
    return int(hit[0] + 1) if hit.size else len(ratios)


def pca_subspace(
    harmful: Float[Tensor, "n d"],
    harmless: Float[Tensor, "m d"],
    k: int | None = None,
    variance_threshold: float = 0.5,
    paired: bool = False,
    include_mean: bool = True,
) -> Subspace:
    """PCA of harmful activations centred on the harmless mean (or of paired differences).

    PCA centres its input, so the mean difference itself (the 1-D refusal direction) is not
    a principal component; with `include_mean` it is the first basis vector and the PCs
    follow, orthonormalised against it, so k = 1 is exactly the difference-in-means direction.
    """
    h = harmful.detach().double().cpu()
    b = harmless.detach().double().cpu()
    if paired:
        if h.shape != b.shape:
            raise SteerlensError("paired PCA needs equal-size harmful and harmless sets")
        x = h - b
    else:
        x = h - b.mean(0)
    n_comp = min(x.shape[0] - 1, x.shape[1], 32)
    if n_comp < 1:
        raise SteerlensError("PCA needs at least two harmful activations", fix="pass more prompts")
    pca = PCA(n_components=n_comp, svd_solver="full").fit(x.numpy())
    ratios = pca.explained_variance_ratio_.tolist()
    k_var = choose_k_by_variance(ratios, variance_threshold)
    comps = torch.from_numpy(pca.components_)
    rows = torch.cat([unit(x.mean(0))[None], comps]) if include_mean else comps
    basis = orthonormal_basis(rows)
    k_final = k if k is not None else k_var + int(include_mean)
    k_final = max(1, min(k_final, basis.shape[0]))
    ev = {"explained_variance_ratio": ratios, "k_by_variance": k_var,
          "variance_threshold": variance_threshold, "k": k_final, "include_mean": include_mean,
          "paired": paired}
    return Subspace(basis[:k_final].float(), "pca", ev)


def category_subspace(
    harmful: Float[Tensor, "n d"],
    categories: Sequence[str],
    harmless: Float[Tensor, "m d"],
    min_per_category: int = 2,
) -> Subspace:
    """One difference-in-means direction per harm category (vs the harmless mean), orthonormalised."""
    if len(categories) != harmful.shape[0]:
        raise SteerlensError("one category per harmful activation is needed")
    h, mu = harmful.detach().double().cpu(), harmless.detach().double().cpu().mean(0)
    names = sorted({c for c in categories if c})
    dirs, used = [], []
    for name in names:
        idx = [i for i, c in enumerate(categories) if c == name]
        if len(idx) >= min_per_category:
            dirs.append(h[idx].mean(0) - mu)
            used.append(name)
    if not dirs:
        raise SteerlensError("no harm category has enough prompts",
                             fix=f"need at least {min_per_category} prompts per category")
    stacked = torch.stack(dirs)
    # Order by norm so truncating to k keeps the strongest category directions.
    order = torch.argsort(stacked.norm(dim=-1), descending=True)
    basis = orthonormal_basis(stacked[order])
    return Subspace(basis.float(), "category",
                    {"categories": [used[i] for i in order.tolist()], "k": basis.shape[0]})


def stacked_subspace(directions: Float[Tensor, "n d"], labels: Sequence[str] = ()) -> Subspace:
    """Directions from several layers or positions, stacked and orthonormalised."""
    basis = orthonormal_basis(directions.detach().double().cpu())
    return Subspace(basis.float(), "stacked", {"sources": list(labels), "k": basis.shape[0]})


def overlap_curves(
    vectors: Float[Tensor, "layer d"], bases: Sequence[Float[Tensor, "k d"]]
) -> dict[str, list[float]]:
    """Per layer: the fraction of the vector inside the layer's subspace and its principal angle."""
    frac, angle = [], []
    for v, q in zip(vectors, bases):
        frac.append(float(fraction_in_subspace(v, q)))
        angle.append(float(torch.rad2deg(principal_angles(v[None], q)[0])))
    return {"fraction_in_subspace": frac, "principal_angle_deg": angle}


def mitigation_experiment(
    model,
    vectors: dict[str, Tensor],
    layer: int,
    multiplier: float,
    refusal_dir: Tensor,
    subspace: Subspace,
    harmful: Sequence[str],
    ks: Sequence[int] | None = None,
    system: str | None = None,
    batch_size: int = 16,
) -> dict:
    """Does k-D orthogonalisation restore baseline refusal where the 1-D projection does not?

    For each behaviour vector: the mean logit refusal score on harmful prompts (no generation)
    under baseline, raw `+m·v`, 1-D orthogonalised and k-D orthogonalised steering for every k
    in `ks`. `restored_fraction` = 1 - |shift after mitigation| / |raw shift| (1 = fully restored).
    Also returns the ablation effect of each k (harmful refusal score with the first k basis
    directions ablated), the ablation-based evidence for choosing k.
    """
    from steerlens.generation import next_token_logits
    from steerlens.geometry import orthogonalize, orthogonalize_subspace
    from steerlens.judges import refusal_score, refusal_token_ids
    from steerlens.prompts import chat_template, header_ids
    from steerlens.steering import Steering, ablation, addition

    tok = model.tokenizer
    ks = list(ks) if ks is not None else list(range(1, subspace.k + 1))
    hdr = header_ids(tok, system)
    suffix = tok(chat_template(tok, system).suffix, add_special_tokens=False)["input_ids"]
    bodies = [tok(s, add_special_tokens=False)["input_ids"] for s in harmful]
    ids = refusal_token_ids(tok)
    dev = model.cfg.device

    def steer(vec: Tensor) -> Steering:
        # A vector orthogonalised to nothing is no steering at all (not an error).
        if float(vec.norm()) <= 1e-6 * float(v.norm()):
            return Steering()
        return addition(vec, layer, multiplier)

    def score(steering: Steering) -> float:
        logits = next_token_logits(model, hdr, bodies, suffix, steering, batch_size)
        return float(refusal_score(logits, ids).mean())

    base = score(Steering())
    out: dict = {"baseline": base, "layer": layer, "multiplier": multiplier, "ks": ks,
                 "vectors": {}}
    for name, v in vectors.items():
        v = v.float().to(dev)
        rec = {"raw": score(steer(v)), "perp1": score(steer(orthogonalize(v, refusal_dir.to(dev))))}
        for k in ks:
            rec[f"perpk{k}"] = score(steer(orthogonalize_subspace(v, subspace.basis[:k].to(dev))))
        shift = rec["raw"] - base
        rec["restored_fraction"] = {
            key: (1 - abs(rec[key] - base) / abs(shift)) if abs(shift) > 1e-9 else None
            for key in rec if key != "raw"}
        out["vectors"][name] = rec
    out["ablation_by_k"] = {k: score(ablation(subspace.basis[:k].to(dev), model.cfg.n_layers))
                            for k in ks}
    out["k_by_ablation"] = choose_k_by_ablation(out["ablation_by_k"], base)
    return out


def choose_k_by_ablation(scores: dict[int, float], baseline: float, share: float = 0.9) -> int:
    """Smallest k whose ablation achieves `share` of the largest drop in refusal score."""
    drops = {k: baseline - s for k, s in scores.items()}
    best = max(drops.values())
    if best <= 0:
        return min(scores)
    return min(k for k, d in drops.items() if d >= share * best)
