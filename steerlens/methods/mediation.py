"""How much of a steering vector's effect on the first-token refusal score runs through the
refusal direction (or subspace, or any direction): directional activation patching.

Method: causal mediation analysis (Vig et al. 2020, "Investigating Gender Bias in Language
Models Using Causal Mediation Analysis": the indirect effect of a treatment through a
mediator, read by setting the mediator to its value under the control), with the mediator a
component of the residual stream, as in activation and path patching (Meng et al. 2022,
"Locating and Editing Factual Associations in GPT"; Wang et al. 2022, "Interpretability in
the Wild"; Goldowsky-Dill et al. 2023, "Localizing Model Behavior with Path Patching").
For each prompt, the steered run (treatment) and the unsteered run (control): at every layer
of a band from the steering layer on, the steered residual's component in span(B) on the
steered positions is held at the unsteered run's component there (`core.patching`).

    effect        = score(steered) - score(unsteered)            per goal
    held effect   = score(steered, B held) - score(unsteered)    per goal
    mediated share = (mean effect - mean held effect) / mean effect

Arditi et al.'s directional ablation (2024) *zeroes* the component along r; this holds it at
the unsteered value, so it removes only what the steering changed there (a zeroed component
would also remove the prompt's own refusal signal: an effect of its own).

Interval: a paired percentile bootstrap over goals (each resample keeps a goal's effect and
held effect together, so their correlation enters; scipy.stats.bootstrap). A ratio interval
from the delta method or Fieller's theorem assumes normal means and gives unbounded sets as
the denominator nears 0; here the share is reported only when the total effect's t-interval
excludes 0 ("undefined" otherwise), which also keeps the bootstrap's denominators away from 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats
from torch import Tensor

from steerlens.core.geometry import orthonormal_basis, unit
from steerlens.core.patching import Arm, TailPatcher
from steerlens.core.steering import Steering
from steerlens.errors import SteerlensError

UNDEFINED = "undefined: the total effect's 95% interval includes 0"


def direction_layer(computed: Sequence[int], layer: int) -> int:
    """The layer whose direction stands for `layer`: the deepest computed one at or below it
    (the audit computes directions every few layers)."""
    below = [c for c in computed if c <= layer]
    if not below:
        raise SteerlensError(f"no refusal direction at or below layer {layer}",
                             fix=f"compute directions at layers up to it (have {list(computed)})")
    return max(below)


def per_layer_bases(directions: dict[int, Tensor], layers: Sequence[int],
                    extra: Float[Tensor, "m d"] | None = None) -> Float[Tensor, "layer k d"]:
    """Per layer, an orthonormal basis of [unit direction of that layer; `extra` rows] (the
    subspace's other rows, which the audit has at the steering layer only)."""
    rows = []
    for lay in layers:
        r = unit(directions[direction_layer(sorted(directions), lay)])[None]
        rows.append(orthonormal_basis(r if extra is None else torch.cat([r, extra.double()])))
    k = max(b.shape[0] for b in rows)
    padded = [torch.cat([b, b.new_zeros(k - b.shape[0], b.shape[1])]) for b in rows]
    return torch.stack(padded).float()


def layer_bands(steering_layer: int, n_layers: int, n_bands: int = 3) -> dict[str, list[int]]:
    """Every layer from the steering layer on, then that range cut into `n_bands` contiguous
    bands ("14-23", "14-16", ...)."""
    every = list(range(steering_layer, n_layers))
    cuts = np.array_split(np.array(every), min(n_bands, len(every)))
    name = lambda b: f"{b[0]}-{b[-1]}" if len(b) > 1 else f"{b[0]}"  # noqa: E731
    out = {name(every): every}
    for c in cuts:
        out.setdefault(name(list(c)), [int(x) for x in c])
    return out


def stack_bases(bases: dict[str, Tensor]) -> tuple[Tensor, dict[str, tuple[int, ...]]]:
    """One reader basis per layer (every group's rows side by side) and each group's columns."""
    cols, start = {}, 0
    for name, b in bases.items():
        cols[name] = tuple(range(start, start + b.shape[1]))
        start += b.shape[1]
    return torch.cat(list(bases.values()), dim=1), cols


def arms(steering: Steering, cols: dict[str, tuple[int, ...]],
         bands: dict[str, list[int]]) -> dict[tuple[str, str] | None, Arm]:
    """The plain steered arm (key None) and one per (basis, band) with the basis held."""
    out: dict = {None: Arm(steering)}
    for b, c in cols.items():
        for band, layers in bands.items():
            out[(b, band)] = Arm(steering, c, frozenset(layers))
    return out


def mediation_scores(patcher: TailPatcher, steering: Steering, cols: dict[str, tuple[int, ...]],
                     bands: dict[str, list[int]]) -> dict:
    """One setting's first-token scores: steered, and with each basis held in each band."""
    named = arms(steering, cols, bands)
    got = patcher.run(list(named.values()))
    out = {"steered": got[0].tolist(), "held": {b: {} for b in cols}}
    for j, key in enumerate(named):
        if key is not None:
            out["held"][key[0]][key[1]] = got[j].tolist()
    return out


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float, float, float]:
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / len(x) ** 0.5)
    return m, m - half, m + half


def mediated_share(effect: Sequence[float], held: Sequence[float], n_resamples: int = 2000,
                   seed: int = 0, confidence: float = 0.95) -> dict:
    """(mean effect - mean held effect) / mean effect over goals, with a paired percentile
    bootstrap interval; "undefined" when the total effect's t-interval includes 0."""
    e, h = np.asarray(effect, dtype=np.float64), np.asarray(held, dtype=np.float64)
    if e.shape != h.shape or e.ndim != 1 or len(e) < 2:
        raise SteerlensError("mediation needs paired per-goal effects (two or more goals)")
    m, lo, hi = _t_interval(e, confidence)
    hm, hlo, hhi = _t_interval(h, confidence)
    out = {"effect": m, "effect_ci": [lo, hi], "held_effect": hm, "held_effect_ci": [hlo, hhi],
           "n": int(len(e))}
    if not lo * hi > 0:
        return {**out, "share": None, "share_ci": [None, None], "undefined": UNDEFINED}

    def share(a, b, axis=-1):
        return 1.0 - b.mean(axis=axis) / a.mean(axis=axis)

    with np.errstate(divide="ignore", invalid="ignore"):
        boot = stats.bootstrap((e, h), share, paired=True, vectorized=True,
                               n_resamples=n_resamples, confidence_level=confidence,
                               method="percentile", random_state=np.random.default_rng(seed))
    lo_s, hi_s, n_undefined = share_interval(boot.bootstrap_distribution, confidence)
    return {**out, "share": float(share(e, h)), "share_ci": [lo_s, hi_s],
            "resamples_undefined": n_undefined}


def share_interval(dist: np.ndarray, confidence: float) -> tuple[float, float, int]:
    """The percentile interval of bootstrap shares, over the resamples where the share is
    defined: one whose effect and held effect both average 0 (0/0) has none and is left out
    (counted), one whose effect alone averages 0 is ±inf and kept; a constant share (every
    resample equal) gives a zero-width interval rather than scipy's NaN."""
    ok = dist[~np.isnan(dist)]
    if not len(ok):
        return float("nan"), float("nan"), int(len(dist))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    if np.isnan(lo):  # interpolated between -inf and a finite share: the infinite one
        lo = np.quantile(ok, alpha, method="lower")
    if np.isnan(hi):
        hi = np.quantile(ok, 1 - alpha, method="higher")
    return float(lo), float(hi), int(len(dist) - len(ok))


def shares(scores: dict, baseline: Sequence[float], seed: int = 0) -> dict:
    """Per basis and band, the mediated share of one setting's `mediation_scores`."""
    base = np.asarray(baseline, dtype=np.float64)
    effect = np.asarray(scores["steered"]) - base
    return {b: {band: mediated_share(effect, np.asarray(s) - base, seed=seed)
                for band, s in per.items()} for b, per in scores["held"].items()}
