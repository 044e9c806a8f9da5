"""The cache self-check at load: a broken KV-cache path stops before any work (issue: exactness)."""

from __future__ import annotations

import pytest
import torch
from conftest import audit_args

from steerlens.core import compat, models
from steerlens.errors import ModelError


def _drop_cache(module, args, kwargs):
    """The transformers-5.24 failure mode on any version: attention never sees the cache."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "cache")}
    return args, kwargs


def _broken_shim(bridge) -> int:
    n = 0
    for module in bridge.modules():
        if hasattr(module, "_update_kv_cache"):
            module.register_forward_pre_hook(_drop_cache, with_kwargs=True)
            n += 1
    assert n > 0
    return n


def test_shim_renames_the_cache_keyword():
    cache = object()
    args, kwargs = compat._rename_cache_kwarg(None, (), {"cache": cache, "hidden_states": 1})
    assert kwargs == {"past_key_values": cache, "hidden_states": 1}
    assert compat._rename_cache_kwarg(None, (), {"past_key_values": cache}) is None


def test_loaded_model_passes_the_check(tiny_model):
    assert 0 <= tiny_model.steerlens_cache_check < 1e-3


def test_shim_is_idempotent(tiny_model):
    assert compat.install_cache_shim(tiny_model) == 0


def test_broken_cache_path_raises_at_load(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(models, "install_cache_shim", _broken_shim)
    with pytest.raises(ModelError) as e:
        models.load_model(tiny_model_dir, device="cpu")
    msg = str(e.value)
    assert "transformers" in msg and "transformer-lens" in msg and "constraints.txt" in msg


def test_broken_cache_path_stops_the_audit_before_any_stage(tiny_model_dir, tmp_path, monkeypatch,
                                                              capsys):
    from steerlens.audit.run import main

    monkeypatch.setattr(models, "install_cache_shim", _broken_shim)
    out = tmp_path / "run"
    assert main(audit_args(tiny_model_dir, out)) == 2
    assert "KV-cache path" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.embedded
def test_embedded_check_is_tight(embedded_model):
    """fp32 on CPU: the cached path equals the plain forward to float rounding (the check's
    cost, 0.27 s on the 0.5B, is measured in README, not asserted: no timed tests)."""
    rel = compat.check_cache_path(embedded_model)
    assert rel < 1e-4 and next(embedded_model.parameters()).dtype == torch.float32
