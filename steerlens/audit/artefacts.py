"""The audit's artefacts, each saving and loading itself (one safetensors file with its
metadata, `core.tensorfile`): the refusal direction with what later stages reuse, a
behaviour's CAA vector with its label-shuffled nulls, the audited vectors, and the user's
vector files read and checked against the model."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from steerlens.audit.config import AuditConfig, file_vector_name
from steerlens.core.geometry import check_vector
from steerlens.core.tensorfile import load_tensors, save_tensors
from steerlens.core.vectors import SteeringVector
from steerlens.errors import SteerlensError
from steerlens.methods.refusal import RefusalDirection


@dataclass
class Refusal:
    """The selected direction, the steering layer, and what later stages reuse."""

    direction: RefusalDirection
    layer: int  # the steering layer
    harmful: torch.Tensor  # train activations at (layer, direction's position)
    harmless: torch.Tensor
    resid_norm: float  # mean residual norm of harmful prompts at the steering layer (tail)
    val_harmful: list[str]  # validation prompts kept by the filter

    def save(self, path) -> None:
        rd = self.direction
        meta = {**rd.meta, "layer": rd.layer, "position": rd.position, "positions": rd.positions,
                "layers": rd.layers, "steering_layer": self.layer, "resid_norm": self.resid_norm,
                "candidates": rd.candidates}
        save_tensors(path, {"direction": rd.direction, "means": rd.means, "harmful": self.harmful,
                            "harmless": self.harmless}, meta)

    @classmethod
    def load(cls, path) -> Refusal:
        t, meta = load_tensors(path)
        rd = RefusalDirection(t["direction"], meta.pop("layer"), meta.pop("position"),
                              meta.pop("candidates"), t["means"], meta.pop("positions"),
                              meta.pop("layers"), meta)
        layer, norm = meta.pop("steering_layer"), meta.pop("resid_norm")
        return cls(rd, layer, t["harmful"], t["harmless"], norm, meta.get("val_harmful", []))


@dataclass
class CAAVector:
    """A behaviour's CAA vector and its label-shuffled nulls at the steering layer."""

    vector: SteeringVector
    null: torch.Tensor

    def save(self, path) -> None:
        save_tensors(path, {"vectors": self.vector.vectors, "null": self.null},
                     self.vector.header())

    @classmethod
    def load(cls, path) -> CAAVector:
        return cls(SteeringVector.load(path), load_tensors(path)[0]["null"])


@dataclass
class Vectors:
    """The audited vectors (resid_pre numbering) and their label-shuffled nulls."""

    vectors: dict[str, SteeringVector]
    nulls: dict[str, torch.Tensor]

    def subset(self, names) -> Vectors:
        """Only the vectors named (all of them when `names` is empty)."""
        if not names:
            return self
        return Vectors({k: v for k, v in self.vectors.items() if k in names}, self.nulls)


def load_vector_files(cfg: AuditConfig, model) -> dict[str, SteeringVector]:
    """The --vector files, checked against the model before any forward pass."""
    out = {}
    for path in cfg.vectors:
        sv = SteeringVector.load(path).as_resid_pre()
        sv.meta.setdefault("file", str(path))
        check_vector(sv.vectors[sv.vectors.norm(dim=-1) > 0], model.cfg.d_model, f"vector {path}")
        if sv.meta.get("site_assumed"):
            print(f"[steerlens] WARNING: {path} does not record where it is added; read as "
                  f"{sv.meta['site_assumed']} (vectors/files.json records it)", file=sys.stderr,
                  flush=True)
        if cfg.layer is None or cfg.layer not in sv.layers:
            raise SteerlensError(f"vector {path} needs a steering layer it has (resid_pre layers "
                                 f"{sv.layers})", fix="pass --layer with one of them (under "
                                 "--protocol deployed: the layer its geometry is read at)")
        if not all(0 <= lay <= model.cfg.n_layers for lay in sv.layers):
            raise SteerlensError(f"vector {path} has layers {sv.layers} (resid_pre) beyond the "
                                 f"model's {model.cfg.n_layers}", fix="use a vector for this model")
        out[file_vector_name(path)] = sv  # unique: validation.validate
    return out
