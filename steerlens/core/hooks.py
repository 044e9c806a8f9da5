"""Hook names are the public contract (TransformerLens): residual sites and layer checks."""

from __future__ import annotations

from collections.abc import Sequence

from transformer_lens.utilities import get_act_name

from steerlens.errors import SteerlensError

SITES = ("resid_pre", "resid_mid", "resid_post")


def hook_name(layer: int, site: str = "resid_pre") -> str:
    """The TransformerLens hook name of a residual-stream site: `blocks.{layer}.hook_{site}`."""
    if site not in SITES:
        raise SteerlensError(f"unknown residual site {site!r}", fix=f"use one of {', '.join(SITES)}")
    return get_act_name(site, int(layer))


def check_layers(model, layers: Sequence[int]) -> list[int]:
    """Validate layer indices against the model and return them sorted and unique."""
    n = model.cfg.n_layers
    bad = [lay for lay in layers if not 0 <= int(lay) < n]
    if bad or not layers:
        raise SteerlensError(
            f"layer(s) {bad or 'none'} out of range for a model with {n} layers",
            fix=f"choose layers in 0..{n - 1}",
        )
    return sorted({int(lay) for lay in layers})


def stop_layer(model, layers: Sequence[int]) -> int | None:
    """`stop_at_layer` for a pass that reads residual sites of `layers`: stop after the deepest
    block read (None: run to the end; nothing is unembedded either way)."""
    stop = max(layers) + 1
    return None if stop >= model.cfg.n_layers else stop
