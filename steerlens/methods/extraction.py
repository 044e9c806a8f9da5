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

Answer polarity (`balance`, default "polarity"; `methods.polarity`). "letter" (and "none")
use every pair with weight 1, as before. "polarity": for `mean_difference`, `mean_centred`
and `linear_probe` the pairs whose matching answer is Yes-like and No-like weigh equally
(`polarity.pair_weights`), so a polarity component cancels as letter balance cancels the letter;
`pca_diff`, `pca_center` and `actadd` cannot be weighted so that it cancels (a principal
component of the differences *is* the polarity axis when Yes and No pairs are mixed; one pair
has one polarity). For every method on a set with Yes/No answers, the neutral polarity
direction is then projected out of the pair activations at each layer before the method runs,
and out of the result (`polarity=` gives it); on a set with too few items of one polarity the
projection is all there is.
The vector's metadata records which, and the counts.

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
from steerlens.methods.polarity import BalancePlan, balance_plan, project_out, weighted_mean

Acts = Float[Tensor, "pair layer d_model"]
PerLayer = Float[Tensor, "layer d_model"]
Weights = Float[Tensor, "pair"]
SCALES = ("caa", "unit")


def _check(pos: Acts, neg: Acts) -> None:
    if pos.shape != neg.shape or pos.ndim != 3 or pos.shape[0] == 0:
        raise SteerlensError(f"positive {tuple(pos.shape)} and negative {tuple(neg.shape)} "
                             "activations must both be (pair, layer, d_model) with pairs",
                             fix="pass acts.matching and acts.not_matching of pair_activations")


def mean_difference(pos: Acts, neg: Acts, weights: Weights | None = None) -> PerLayer:
    """CAA (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition",
    arXiv:2312.06681): the mean over pairs of pos - neg (weighted by `weights`, if given). The
    same operations as `caa_vector`, so the two are equal bit for bit."""
    _check(pos, neg)
    return weighted_mean(pos - neg, weights)


def _aligned(direction: Float[Tensor, "layer d"], pos: Acts, neg: Acts,
             weights: Weights | None = None) -> Float[Tensor, "layer d"]:
    """Flip each layer's direction so that mean(pos - neg) projects on it non-negatively."""
    mean = weighted_mean((pos - neg).to(direction.dtype), weights)
    along = einsum(mean, direction, "layer d, layer d -> layer")
    return direction * torch.where(along < 0, -1.0, 1.0).to(direction.dtype)[:, None]


def _scaled(direction: Float[Tensor, "layer d"], pos: Acts, neg: Acts, scale: str,
            weights: Weights | None = None) -> PerLayer:
    if scale not in SCALES:
        raise SteerlensError(f"unknown scale {scale!r}", fix=f"use one of: {', '.join(SCALES)}")
    direction = _aligned(direction, pos, neg, weights)
    if scale == "caa":
        size = mean_difference(pos, neg, weights).to(direction.dtype).norm(dim=-1, keepdim=True)
        direction = direction * size
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


def linear_probe(pos: Acts, neg: Acts, scale: str = "caa", C: float = 1.0,
                 weights: Weights | None = None) -> PerLayer:
    """Linear-probe direction (Alain & Bengio 2016, "Understanding intermediate layers using
    linear classifier probes", arXiv:1610.01644; as a steering direction e.g. Li et al. 2023,
    "Inference-Time Intervention", arXiv:2306.03341): per layer, scikit-learn's
    `LogisticRegression(C=C)` (L2, lbfgs, intercept) fit on the positive (label 1) vs the
    negative (label 0) activations; its weight vector, unit-normalised, is the direction.
    Scale (default "caa"): times the per-layer norm of the CAA vector, so the probe's
    arbitrary weight size (set by C and the activations' scale) plays no part. `weights`:
    per pair, given to both its rows as `sample_weight`."""
    from sklearn.linear_model import LogisticRegression

    _check(pos, neg)
    labels = [1] * pos.shape[0] + [0] * neg.shape[0]
    sample = None if weights is None else torch.cat([weights, weights]).double().numpy()
    rows = []
    for layer in range(pos.shape[1]):
        x = torch.cat([pos[:, layer], neg[:, layer]]).to(torch.float64).cpu().numpy()
        fit = LogisticRegression(C=C, max_iter=5000).fit(x, labels, sample_weight=sample)
        w = torch.from_numpy(fit.coef_[0]).to(torch.float64)
        rows.append(w / w.norm() if float(w.norm()) > 0 else w)
    return _scaled(torch.stack(rows), pos, neg, scale, weights)


def mean_centred(pos: Acts, neg: Acts, reference: Acts | None = None,
                 weights: Weights | None = None) -> PerLayer:
    """Mean-centring (Jorgensen et al. 2023, "Improving Activation Steering in Language Models
    with Mean-Centring", arXiv:2312.03813): the mean of the target activations minus the mean
    over a reference distribution. Target: the positive activations. Reference: `reference`
    if given (activations of other text at the same layers and site, e.g. `collect_last` over
    neutral prompts: the paper's "training distribution"); by default every activation of the
    pairs, positive and negative, i.e. the dataset's own mean. With that default the vector is
    mean(pos) - (mean(pos) + mean(neg)) / 2 = mean_difference / 2: no new information, but the
    right origin; a separate reference is what makes it differ from CAA. `weights` (per pair)
    weigh the positive mean and the default reference's pairs."""
    _check(pos, neg)
    ref = torch.cat([pos, neg]) if reference is None else reference
    if ref.ndim != 3 or ref.shape[1:] != pos.shape[1:] or ref.shape[0] == 0:
        raise SteerlensError(f"reference activations {tuple(ref.shape)} do not match "
                             f"(n, {pos.shape[1]}, {pos.shape[2]})",
                             fix="collect them at the same layers and site as the pairs")
    if weights is None:
        return pos.mean(0) - ref.mean(0)
    ref_w = torch.cat([weights, weights]) if reference is None else None
    return weighted_mean(pos, weights) - weighted_mean(ref, ref_w)


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


WEIGHTED = ("mean_difference", "linear_probe", "mean_centred")  # polarity by weights


def _polarity_plan(acts: PairActivations, method: str, balance: str) -> BalancePlan:
    """The set's plan (`polarity.balance_plan`), with projection for methods that cannot
    be weighted."""
    plan = balance_plan(acts.items, balance)
    if plan.method == "weights+projection" and method not in WEIGHTED:
        return BalancePlan(balance, "projection", plan.counts)
    return plan


def extract(acts: PairActivations, layers: Sequence[int], method: str = "mean_difference",
            site: str = "resid_pre", behaviour: str = "", balance: str = "polarity",
            polarity: PerLayer | None = None, **kwargs) -> SteeringVector:
    """A `SteeringVector` by `method` from pair activations read at `layers` and `site`
    (the arguments `pair_activations` was called with), balanced for answer polarity by
    `balance` (module docstring); `polarity`: the neutral polarity direction at `layers`,
    needed when the plan projects it out."""
    if method not in METHODS:
        raise SteerlensError(f"unknown extraction method {method!r}",
                             fix=f"use one of: {', '.join(METHODS)}")
    if len(layers) != acts.matching.shape[1]:
        raise SteerlensError(f"{len(layers)} layers given for activations of "
                             f"{acts.matching.shape[1]}", fix="pass the layers the pairs were read at")
    plan = _polarity_plan(acts, method, balance)
    pos, neg = acts.matching, acts.not_matching
    if plan.weights is not None:
        kwargs["weights"] = plan.weights
    if plan.method != "none":  # from the activations, so no method can find it again
        pol = _need_polarity(polarity, pos[0])
        pos, neg = project_out(pos, pol), project_out(neg, pol)
    vec = METHODS[method](pos, neg, **kwargs)
    if plan.method != "none":
        vec = project_out(vec, pol)
    meta = {"kind": method, "behaviour": behaviour, "n_pairs": int(acts.matching.shape[0]),
            **{k: v for k, v in kwargs.items() if isinstance(v, int | float | str)}}
    meta.update(plan.meta())
    return SteeringVector(vec, list(layers), site, meta)


def _need_polarity(polarity: PerLayer | None, vec: PerLayer) -> PerLayer:
    if polarity is None or polarity.shape != vec.shape:
        raise SteerlensError("this set's polarity balance projects out the neutral polarity "
                             "direction, and none was given at these layers",
                             fix="pass polarity=polarity_direction(model, layers).vectors, or "
                                 "balance='letter'")
    return polarity.to(vec.dtype)
