"""The one tensor-file format of steerlens' artefacts: safetensors (float32, contiguous) with
their metadata as sorted JSON under the header key "steerlens". Never pickles."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

META_KEY = "steerlens"


def save_tensors(path: str | Path, tensors: dict[str, Tensor], meta: dict) -> None:
    """Write `tensors` (as float32) and `meta` to one safetensors file."""
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """The tensors and metadata `save_tensors` wrote (metadata {} when the header has none)."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    return load_file(str(path)), json.loads(header.get(META_KEY, "{}"))
