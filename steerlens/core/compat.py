"""Dependency compatibility: the KV-cache keyword shim and the cache self-check run at load.

Every cost lever (shared prefixes, forked caches, stacked decoding) hands a `transformers`
cache to the bridge and relies on each attention layer extending it. transformers 5.24
renamed the decoder layers' `past_key_values` keyword to `cache`, while TransformerLens 4.3's
attention bridges still read `past_key_values`: the cache was silently never extended and
every cached activation was wrong (off by ~1300 on a norm-22 residual of the 0.5B). The shim
renames the keyword on the way into each attention bridge; the self-check proves, per loaded
model, that the cached path equals a plain full forward, and stops with the fix otherwise.
"""

from __future__ import annotations

import warnings
from importlib import metadata

import torch

from steerlens.errors import ModelError

# transformers >= 5.24 warns on every top-level call that receives `past_key_values`, which the
# bridge still passes; the shim and the self-check make that keyword safe, so the warning would
# only mislead (it reads like the breakage it no longer is).
warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)

# Relative tolerance of the self-check by dtype: float rounding of a cached vs a full pass is
# ~1e-6 relative in fp32; a broken cache is off by O(1).
_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 5e-2, torch.float16: 2e-2}


def _rename_cache_kwarg(module, args, kwargs):
    """Forward pre-hook: hand the bridge the cache under the name it reads (`past_key_values`)."""
    if "cache" in kwargs and kwargs.get("past_key_values") is None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None


def install_cache_shim(bridge) -> int:
    """Register the keyword shim on every attention bridge of `bridge`; returns how many.

    A no-op on transformers versions that still pass `past_key_values` (the hook sees no
    `cache` keyword). Idempotent: a module is hooked once.
    """
    n = 0
    for module in bridge.modules():
        if hasattr(module, "_update_kv_cache") and not getattr(module, "_steerlens_shim", False):
            module.register_forward_pre_hook(_rename_cache_kwarg, with_kwargs=True)
            module._steerlens_shim = True
            n += 1
    return n


def versions() -> dict[str, str]:
    """Installed versions of the packages whose internals the cached paths rely on."""
    out = {}
    for pkg in ("transformers", "transformer-lens", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _probe_ids(model) -> tuple[list[int], list[list[int]], int]:
    """A shared prefix, two bodies of different lengths (row 0 is left-padded between prefix
    and body, the hard case) and a decode token, from the model's own vocabulary."""
    ids = model.tokenizer("The quick brown fox jumps over the lazy dog and runs away",
                          add_special_tokens=False)["input_ids"]
    if len(ids) < 8:
        ids = list(range(3, 15))
    return ids[:3], [ids[3:5], ids[3:6]], ids[7]


def _check_layer(model) -> int:
    """The residual read: after block n_layers // 2 (half the attention layers, both kinds of
    an alternating sliding/global model), so the check runs half the model and no unembedding."""
    return max(1, model.cfg.n_layers // 2)


@torch.no_grad()
def _resid(model, ids, *, at: slice, **kwargs) -> torch.Tensor:
    """`blocks.{L-1}.hook_resid_post` at positions `at` (float32), stopping after block L-1."""
    layer, out = _check_layer(model), {}

    def grab(x, hook):
        out["x"] = x[:, at].float()
        return x

    model.run_with_hooks(ids, fwd_hooks=[(f"blocks.{layer - 1}.hook_resid_post", grab)],
                         return_type=None, stop_at_layer=layer, **kwargs)
    return out["x"]


def _cached(model, prefix, bodies, nxt):
    """The residual after each body (last position) and after one decode step, cached path."""
    from steerlens.core.kvcache import build_prefix_cache, copy_cache
    from steerlens.core.prompts import left_pad, pad_id

    device = model.cfg.device
    pre = build_prefix_cache(model, prefix, stop_at_layer=_check_layer(model))
    ids, mask = left_pad(bodies, pad_id(model.tokenizer))
    mask = pre.full_mask(mask.to(device))
    cache = pre.fork(model, len(bodies))
    first = _resid(model, ids.to(device), at=slice(-1, None), attention_mask=mask,
                   past_key_values=cache)
    step = torch.full((len(bodies), 1), nxt, dtype=torch.long, device=device)
    mask = torch.cat([mask, torch.ones_like(step)], dim=1)
    second = _resid(model, step, at=slice(-1, None), attention_mask=mask,
                    past_key_values=copy_cache(cache))
    return torch.cat([first, second], dim=1)[0]  # row 0: the left-padded one


def _full(model, prefix, bodies, nxt):
    """The same from one plain forward of the padded row's whole text alone (no cache, no
    padding): causal attention gives both positions in one pass."""
    ids = torch.tensor([prefix + bodies[0] + [nxt]], device=model.cfg.device)
    return _resid(model, ids, at=slice(-2, None))[0]


def check_cache_path(model) -> float:
    """Compare the cached path with plain full forwards; raise ModelError beyond tolerance.

    Returns the largest relative difference seen. Costs four short passes through half the
    model (at most 6 tokens each).
    """
    prefix, bodies, nxt = _probe_ids(model)
    got, ref = _cached(model, prefix, bodies, nxt), _full(model, prefix, bodies, nxt)
    rel = float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-6))
    tol = _TOLERANCE.get(next(model.parameters()).dtype, 5e-2)
    if not rel <= tol:
        v = ", ".join(f"{k} {x}" for k, x in versions().items())
        raise ModelError(
            f"the KV-cache path of this model does not match a plain forward (relative "
            f"difference {rel:.3g} > {tol:g}) with {v}: every cached activation and "
            "generation would be wrong",
            fix="install the tested versions: pip install -c constraints.txt -e . "
            "(or: pip install 'transformers==5.23.0' 'transformer-lens==4.3.0')",
        )
    return rel
