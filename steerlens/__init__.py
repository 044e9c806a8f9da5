"""steerlens: audit activation steering vectors for safety.

Does a steering vector weaken the model's refusals, why (overlap with the refusal direction
and subspace, and how far it moves the residual stream along them), and what fixes it?

The public names below are imported lazily (PEP 562), so `import steerlens` and the torch-free
results layer (`steerlens.results`) do not import torch.
"""

from __future__ import annotations

import importlib

from steerlens._version import __version__  # noqa: F401 (re-exported)

_PUBLIC = {
    "load_model": "steerlens.core.models",
    "SteeringVector": "steerlens.core.vectors",
    "Steering": "steerlens.core.steering",
    "cosine": "steerlens.core.geometry",
    "orthogonalize": "steerlens.core.geometry",
    "orthogonalize_subspace": "steerlens.core.geometry",
    "caa_vector": "steerlens.methods.caa",
    "select_refusal_direction": "steerlens.methods.refusal",
    "get_judge": "steerlens.judges.registry",
    "load_caa": "steerlens.datasets.loaders",
    "load_jbb": "steerlens.datasets.loaders",
    "load_instructions": "steerlens.datasets.loaders",
    "AuditResult": "steerlens.audit.api",
    "load_run": "steerlens.audit.api",
    "mitigate": "steerlens.audit.api",
    "study": "steerlens.audit.api",
    "SteerlensError": "steerlens.errors",
}

__all__ = sorted([*_PUBLIC, "audit"])


def __getattr__(name: str):
    if name == "audit":  # the callable subpackage: steerlens.audit(preset=..., out=...)
        return importlib.import_module("steerlens.audit")
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'steerlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
