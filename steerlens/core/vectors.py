"""`SteeringVector`: per-layer vectors with their residual site, saved as safetensors.

Layer conventions of other tools (each loads to the site where that tool adds the vector):
- steerlens files record their site (`resid_pre` or `resid_post`) in the safetensors header;
- steering-vectors (`layer_type="decoder_block"`) and CAA's original code read and add at the
  *output* of decoder layer l: `resid_post` of l. A bare file of per-layer tensors (keys `12`
  or `layer.12`) is read with that convention unless `site=` says otherwise;
- repeng and llama.cpp control vectors (`.gguf`, tensors `direction.N`) are added to the
  output of block N: `resid_post` of N.
`resid_post` of l is the same point of the residual stream as `resid_pre` of l + 1;
`as_resid_pre()` renumbers to that convention, which the audit uses throughout.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from steerlens.core.hooks import SITES
from steerlens.core.steering import Positions, Steering, addition
from steerlens.errors import SteerlensError

_META_KEY = "steerlens"


@dataclass
class SteeringVector:
    """Per-layer steering vectors (row i belongs to `layers[i]`) at one residual `site`."""

    vectors: Float[Tensor, "layer d_model"]
    layers: list[int]
    site: str = "resid_pre"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.site not in ("resid_pre", "resid_post"):
            raise SteerlensError(f"unknown steering site {self.site!r}",
                                 fix="use resid_pre or resid_post")

    def at(self, layer: int) -> Float[Tensor, "d_model"]:
        if layer not in self.layers:
            raise SteerlensError(f"no vector for layer {layer}",
                                 fix=f"this vector has layers {self.layers}")
        return self.vectors[self.layers.index(layer)]

    def steering(self, layer: int, multiplier: float = 1.0,
                 positions: Positions = "after_instruction") -> Steering:
        """`multiplier * v` added at this vector's site of `layer`."""
        return addition(self.at(layer), layer, multiplier, site=self.site, positions=positions)

    @contextmanager
    def apply(self, model, layer: int, multiplier: float = 1.0):
        """`with vec.apply(model, layer, m): model.generate(...)`: adds `m * v` at every position
        of every call, as steering-vectors' `apply` does (use `steering()` and
        `steerlens.core.generation` for CAA's after-the-instruction rule)."""
        with self.steering(layer, multiplier, positions="all").apply(model):
            yield

    def as_resid_pre(self) -> SteeringVector:
        """The same vectors numbered as `resid_pre` (resid_post of l is resid_pre of l + 1)."""
        if self.site == "resid_pre":
            return self
        return replace(self, layers=[lay + 1 for lay in self.layers], site="resid_pre",
                       meta={**self.meta, "renumbered_from": "resid_post"})

    def save(self, path: str | Path) -> None:
        """safetensors tensor + JSON metadata (layers, site, provenance) in the header."""
        meta = {**self.meta, "layers": self.layers, "site": self.site}
        save_file({"vectors": self.vectors.detach().float().cpu().contiguous()}, str(path),
                  metadata={_META_KEY: json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str | Path, site: str | None = None) -> SteeringVector:
        """A steerlens or per-layer safetensors file, or a repeng/llama.cpp GGUF control vector."""
        path = Path(path)
        if not path.is_file():
            raise SteerlensError(f"vector file {path} not found", fix="check the path")
        vec = _load_gguf(path) if path.suffix == ".gguf" else _load_safetensors(path, site)
        if not torch.isfinite(vec.vectors).all():
            raise SteerlensError(f"vector in {path} contains NaN or inf", fix="rebuild the vector")
        # A zero row is legitimate (balanced CAA at layer 0); steering with it is what fails.
        return vec


def _read_safetensors(path: Path) -> tuple[dict, dict[str, Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return header, load_file(str(path))
    except Exception as e:  # safetensors raises several error types for a bad header
        raise SteerlensError(f"{path} is not a readable safetensors file: {e}",
                             fix="save vectors with SteeringVector.save") from e


def _load_safetensors(path: Path, site: str | None) -> SteeringVector:
    header, tensors = _read_safetensors(path)
    vecs = tensors.get("vectors")
    if vecs is None:
        # A bare file of per-layer tensors named by layer ("12" or "layer.12").
        items = sorted((int(k.split(".")[-1]), v) for k, v in tensors.items()
                       if k.split(".")[-1].isdigit())
        if not items:
            raise SteerlensError(f"{path} holds no 'vectors' tensor or per-layer tensors",
                                 fix="name tensors 'vectors' or by layer number")
        return SteeringVector(torch.stack([v.float().flatten() for _, v in items]),
                              [k for k, _ in items], site or "resid_post",
                              {"source": "per-layer tensors", "file": path.name})
    meta = json.loads(header.get(_META_KEY, "{}"))
    layers = meta.pop("layers", list(range(vecs.shape[0] if vecs.ndim == 2 else 1)))
    file_site = meta.pop("site", "resid_pre")
    if site is not None and site not in SITES:
        raise SteerlensError(f"unknown site {site!r}", fix="use resid_pre or resid_post")
    vecs = vecs[None] if vecs.ndim == 1 else vecs
    return SteeringVector(vecs.float(), [int(x) for x in layers], site or file_site, meta)


def _load_gguf(path: Path) -> SteeringVector:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise SteerlensError(f"{path} is not a readable GGUF file: {e}",
                             fix="export control vectors with repeng or llama.cpp") from e
    items = sorted((int(t.name.split(".")[1]), torch.tensor(t.data.astype("float32")).flatten())
                   for t in reader.tensors
                   if t.name.startswith("direction.") and t.name.split(".")[1].isdigit())
    if not items:
        raise SteerlensError(f"{path} holds no 'direction.N' tensors",
                             fix="a GGUF control vector names its tensors direction.<layer>")
    hint = reader.fields.get("controlvector.model_hint")
    model_hint = bytes(hint.parts[hint.data[0]]).decode() if hint is not None else ""
    # llama.cpp and repeng add direction.N to the output of block N: resid_post of N.
    return SteeringVector(torch.stack([v for _, v in items]), [n for n, _ in items], "resid_post",
                          {"kind": "gguf_control_vector", "model_hint": model_hint,
                           "source_layers": "direction.N -> resid_post of block N"})
