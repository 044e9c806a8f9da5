"""Choose a batch size that fits the memory left on the model's device."""

from __future__ import annotations

import torch


def available_bytes(device: str | torch.device) -> int:
    """Free memory on a CUDA device, or MemAvailable of the host for the CPU."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 4 << 30  # unknown platform: assume 4 GiB


def bytes_per_sequence(cfg, seq_len: int, dtype_bytes: int = 4) -> int:
    """Peak bytes one sequence of `seq_len` tokens adds: KV cache, per-layer activations
    (residual copies, MLP hidden, eager attention scores) and one row of logits (float32)."""
    d_head = cfg.d_model // cfg.n_heads
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    kv = 2 * cfg.n_layers * n_kv * d_head * seq_len
    act = (6 * cfg.d_model + 3 * d_mlp) * seq_len + 2 * cfg.n_heads * seq_len * seq_len
    return (kv + act) * dtype_bytes + 2 * cfg.d_vocab * 4


def auto_batch_size(model, seq_len: int, cap: int = 32, fraction: float = 0.5,
                    available: int | None = None) -> int:
    """Largest batch (<= `cap`) whose working memory fits in `fraction` of what is free."""
    dtype_bytes = torch.finfo(next(model.original_model.parameters()).dtype).bits // 8
    free = available if available is not None else available_bytes(model.cfg.device)
    per = bytes_per_sequence(model.cfg, seq_len, dtype_bytes)
    return max(1, min(cap, int(free * fraction) // max(per, 1)))
