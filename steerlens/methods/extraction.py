"""Steering-vector extraction methods over the same cached pair activations.

Every method is a pure function of `pos` and `neg`, the activations of the positive (matching)
and negative (non-matching) text of each contrast pair at each layer: what
`methods.caa.pair_activations` computes (`acts.matching`, `acts.not_matching`), so switching
method needs no forward pass. Each returns one vector per layer, `Float[Tensor, "layer
d_model"]` (the rows of a `SteeringVector`); `extract(acts, layers, method)` wraps one.

Scale. `mean_difference`, `mean_centred` and `actadd` are differences of activations and keep
their own size. The direction methods (`pca_diff`, `pca_center`, `linear_probe`) find a unit
direction; by default (`scale="caa"`) it is multiplied by the per-layer norm of the CAA
(mean-difference) vector, so one multiplier is the same size of push under every method
(`scale="unit"` returns the unit direction, as repeng does). Where the CAA vector is zero
(balanced CAA at resid_pre of layer 0) the rescaled vector is zero too.

Sign. A direction is flipped, if need be, so that the mean projection of the positive
activations exceeds that of the negative ones (`mean(pos - neg) . v >= 0`). repeng instead
takes the majority vote over pairs of `pos_i . v > neg_i . v`; the two agree unless the pairs
disagree with their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from steerlens.core.vectors import SteeringVector
from steerlens.errors import SteerlensError
from steerlens.methods.caa import PairActivations

Acts = Float[Tensor, "pair layer d_model"]
PerLayer = Float[Tensor, "layer d_model"]
SCALES = ("caa", "unit")


def _check(pos: Acts, neg: Acts) -> None:
    if pos.shape != neg.shape or pos.ndim != 3 or pos.shape[0] == 0:
        raise SteerlensError(f"positive {tuple(pos.shape)} and negative {tuple(neg.shape)} "
                             "activations must both be (pair, layer, d_model) with pairs",
                             fix="pass acts.matching and acts.not_matching of pair_activations")


def mean_difference(pos: Acts, neg: Acts) -> PerLayer:
    """CAA (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition",
    arXiv:2312.06681): the mean over pairs of pos - neg. The same operations as `caa_vector`,
    so the two are equal bit for bit."""
    _check(pos, neg)
    return (pos - neg).mean(0)


def _aligned(direction: Float[Tensor, "layer d"], pos: Acts, neg: Acts) -> Float[Tensor, "layer d"]:
    """Flip each layer's direction so that mean(pos - neg) projects on it non-negatively."""
    along = einsum((pos - neg).to(direction.dtype).mean(0), direction, "layer d, layer d -> layer")
    return direction * torch.where(along < 0, -1.0, 1.0).to(direction.dtype)[:, None]


def _scaled(direction: Float[Tensor, "layer d"], pos: Acts, neg: Acts, scale: str) -> PerLayer:
    if scale not in SCALES:
        raise SteerlensError(f"unknown scale {scale!r}", fix=f"use one of: {', '.join(SCALES)}")
    direction = _aligned(direction, pos, neg)
    if scale == "caa":
        direction = direction * mean_difference(pos, neg).to(direction.dtype).norm(dim=-1, keepdim=True)
    return direction.to(pos.dtype)


def _first_component(rows: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer d"]:
    """Per layer, the first principal component of the rows (centred first, as sklearn's PCA
    does), float64; zero where the rows do not vary."""
    x = rows.to(torch.float64)
    x = x - x.mean(1, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:, 0] * (s[:, 0] > 0).to(x.dtype)[:, None]


def pca_diff(pos: Acts, neg: Acts, scale: str = "caa") -> PerLayer:
    """RepE / repeng `pca_diff` (Zou et al. 2023, "Representation Engineering",
    arXiv:2310.01405; repeng `extract.read_representations`): the first principal component of
    the paired differences pos_i - neg_i. sklearn's PCA, which repeng calls, centres its input,
    so this is the main axis along which the differences *vary* around their mean (the mean
    itself is `mean_difference`). Sign and scale: see the module docstring."""
    _check(pos, neg)
    return _scaled(_first_component(rearrange(pos - neg, "n layer d -> layer n d")), pos, neg, scale)


def pca_center(pos: Acts, neg: Acts, scale: str = "caa") -> PerLayer:
    """repeng `pca_center`: each pair's two activations minus the pair's mean, all 2n rows,
    then their first principal component. The rows are +-(pos_i - neg_i) / 2, so this is the
    top eigenvector of the *uncentred* second moment of the differences (their mean direction
    counts, unlike `pca_diff`). Sign and scale: see the module docstring."""
    _check(pos, neg)
    center = (pos + neg) / 2
    rows = rearrange([pos - center, neg - center], "two n layer d -> layer (n two) d")
    return _scaled(_first_component(rows), pos, neg, scale)


def linear_probe(pos: Acts, neg: Acts, scale: str = "caa", C: float = 1.0) -> PerLayer:
    """Linear-probe direction (Alain & Bengio 2016, "Understanding intermediate layers using
    linear classifier probes", arXiv:1610.01644; as a steering direction e.g. Li et al. 2023,
    "Inference-Time Intervention", arXiv:2306.03341): per layer, scikit-learn's
    `LogisticRegression(C=C)` (L2, lbfgs, intercept) fit on the positive (label 1) vs the
    negative (label 0) activations; its weight vector, unit-normalised, is the direction.
    Scale (default "caa"): times the per-layer norm of the CAA vector, so the probe's
    arbitrary weight size (set by C and the activations' scale) plays no part."""
    from sklearn.linear_model import LogisticRegression

    _check(pos, neg)
    labels = [1] * pos.shape[0] + [0] * neg.shape[0]
    rows = []
    for layer in range(pos.shape[1]):
        x = torch.cat([pos[:, layer], neg[:, layer]]).to(torch.float64).cpu().numpy()
        fit = LogisticRegression(C=C, max_iter=5000).fit(x, labels)
        w = torch.from_numpy(fit.coef_[0]).to(torch.float64)
        rows.append(w / w.norm() if float(w.norm()) > 0 else w)
    return _scaled(torch.stack(rows), pos, neg, scale)


def mean_centred(pos: Acts, neg: Acts, reference: Acts | None = None) -> PerLayer:
    """Mean-centring (Jorgensen et al. 2023, "Improving Activation Steering in Language Models
    with Mean-Centring", arXiv:2312.03813): the mean of the target activations minus the mean
    over a reference distribution. Target: the positive activations. Reference: `reference`
    if given (activations of other text at the same layers and site, e.g. `collect_last` over
    neutral prompts: the paper's "training distribution"); by default every activation of the
    pairs, positive and negative, i.e. the dataset's own mean. With that default the vector is
    mean(pos) - (mean(pos) + mean(neg)) / 2 = mean_difference / 2: no new information, but the
    right origin; a separate reference is what makes it differ from CAA."""
    _check(pos, neg)
    ref = torch.cat([pos, neg]) if reference is None else reference
    if ref.ndim != 3 or ref.shape[1:] != pos.shape[1:] or ref.shape[0] == 0:
        raise SteerlensError(f"reference activations {tuple(ref.shape)} do not match "
                             f"(n, {pos.shape[1]}, {pos.shape[2]})",
                             fix="collect them at the same layers and site as the pairs")
    return pos.mean(0) - ref.mean(0)


def actadd(pos: Acts, neg: Acts, pair: int = 0) -> PerLayer:
    """ActAdd (Turner et al. 2023, "Activation Addition: Steering Language Models Without
    Optimization", arXiv:2308.10248): the difference of one prompt pair's activations, here
    pair `pair` and its last token (the paper adds the whole prompt pair's activations,
    position by position, at the front of the prompt)."""
    _check(pos, neg)
    if not -pos.shape[0] <= pair < pos.shape[0]:
        raise SteerlensError(f"pair {pair} out of range for {pos.shape[0]} pairs",
                             fix=f"use 0..{pos.shape[0] - 1}")
    return pos[pair] - neg[pair]


METHODS: dict[str, Callable[..., PerLayer]] = {
    "mean_difference": mean_difference,
    "pca_diff": pca_diff,
    "pca_center": pca_center,
    "linear_probe": linear_probe,
    "mean_centred": mean_centred,
    "actadd": actadd,
}


def extract(acts: PairActivations, layers: Sequence[int], method: str = "mean_difference",
            site: str = "resid_pre", behaviour: str = "", **kwargs) -> SteeringVector:
    """A `SteeringVector` by `method` from pair activations read at `layers` and `site`
    (the arguments `pair_activations` was called with)."""
    if method not in METHODS:
        raise SteerlensError(f"unknown extraction method {method!r}",
                             fix=f"use one of: {', '.join(METHODS)}")
    if len(layers) != acts.matching.shape[1]:
        raise SteerlensError(f"{len(layers)} layers given for activations of "
                             f"{acts.matching.shape[1]}", fix="pass the layers the pairs were read at")
    vec = METHODS[method](acts.matching, acts.not_matching, **kwargs)
    meta = {"kind": method, "behaviour": behaviour, "n_pairs": int(acts.matching.shape[0]),
            **{k: v for k, v in kwargs.items() if isinstance(v, int | float | str)}}
    return SteeringVector(vec, list(layers), site, meta)
