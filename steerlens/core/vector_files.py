"""Writers of the files other libraries load steering vectors from, each in that library's own
layer numbering and units, with steerlens' provenance where the format has room for it.

A `SteeringVector` here is numbered `resid_pre` (the audit's convention) and holds exactly what
is added: the library's default application (coefficient 1, every position) adds each row as is.
- `gguf`: a repeng/llama.cpp control vector (architecture `controlvector`, tensors
  `direction.N`, as repeng's `ControlVector.export_gguf` writes it), added to the output of
  block N = `resid_pre` of N + 1; `resid_pre` 0 (the embeddings) has no block before it. The
  provenance is a JSON string under the GGUF key `steerlens.provenance`. llama.cpp rejects
  `direction.0` (its layer indices start at 1); repeng accepts it.
- `steering-vectors`: safetensors of per-layer tensors named by decoder layer (`"N"`), for
  `steering_vectors.SteeringVector(layer_activations={int(k): v ...}, layer_type=
  "decoder_block")`, which adds them to the output of decoder layer N; the provenance is JSON
  under the safetensors header key `steerlens` (with `site: resid_post`).
- `svec`: IBM activation-steering's JSON (`model_type`, `directions`, `explained_variances`,
  as its `SteeringVector.save` writes it); its LeashLayer adds `directions[N]` to the input of
  layer N = `resid_pre` of N. Explained variances are written as 1 (so
  `use_explained_variance=True` leaves the rows as they are); the provenance is the extra
  top-level key `steerlens`, which its `SteeringVector.load` ignores.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steerlens.core.vectors import SteeringVector
from steerlens.errors import SteerlensError

FORMATS = ("gguf", "steering-vectors", "svec")
SUFFIXES = {"gguf": ".gguf", "steering-vectors": ".safetensors", "svec": ".svec"}


def library_layers(sv: SteeringVector, fmt: str, n_layers: int) -> list[int]:
    """The layer index each row gets in the format's own numbering (module docstring)."""
    if fmt not in FORMATS:
        raise SteerlensError(f"unknown vector format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    pre = sv.as_resid_pre().layers
    if fmt == "svec":
        bad = [lay for lay in pre if not 0 <= lay < n_layers]
        if bad:
            raise SteerlensError(f"resid_pre layer(s) {bad} are no layer's input in a model with "
                                 f"{n_layers} layers", fix="export as gguf or steering-vectors")
        return pre
    bad = [lay for lay in pre if not 1 <= lay <= n_layers]
    if bad:
        raise SteerlensError(f"resid_pre layer(s) {bad} are no block's output (resid_pre 0 is "
                             "the embeddings)", fix="export as svec, which adds to a layer's input")
    return [lay - 1 for lay in pre]


def write_vector_file(sv: SteeringVector, path: str | Path, fmt: str, provenance: dict,
                      n_layers: int, model_hint: str = "") -> list[int]:
    """Write `sv` to `path` in format `fmt` (atomically); returns the layers in its numbering."""
    from steerlens.rundir import atomic_save_tensor

    layers = library_layers(sv, fmt, n_layers)
    rows = [r.detach().float().cpu().contiguous() for r in sv.as_resid_pre().vectors]
    writer = {"gguf": _write_gguf, "steering-vectors": _write_safetensors, "svec": _write_svec}[fmt]
    atomic_save_tensor(lambda tmp: writer(tmp, dict(zip(layers, rows)), provenance, model_hint),
                       Path(path))
    return layers


def _write_gguf(path: Path, rows: dict[int, torch.Tensor], prov: dict, hint: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", hint)
    w.add_uint32("controlvector.layer_count", len(rows))
    w.add_string("steerlens.provenance", json.dumps(prov, sort_keys=True))
    for layer, v in rows.items():
        w.add_tensor(f"direction.{layer}", v.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_safetensors(path: Path, rows: dict[int, torch.Tensor], prov: dict, hint: str) -> None:
    from safetensors.torch import save_file

    meta = {**prov, "site": "resid_post", "layers": list(rows), "model_hint": hint}
    save_file({str(k): v for k, v in rows.items()}, str(path),
              metadata={"steerlens": json.dumps(meta, sort_keys=True)})


def _write_svec(path: Path, rows: dict[int, torch.Tensor], prov: dict, hint: str) -> None:
    data = {"model_type": hint, "directions": {str(k): v.tolist() for k, v in rows.items()},
            "explained_variances": {str(k): 1.0 for k in rows}, "steerlens": prov}
    Path(path).write_text(json.dumps(data))


def read_provenance(path: str | Path) -> dict:
    """The provenance a steerlens-written file of any of the formats carries ({} if none)."""
    path = Path(path)
    if path.suffix == ".gguf":
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get("steerlens.provenance")
        return json.loads(bytes(field.parts[field.data[0]]).decode()) if field else {}
    if path.suffix == ".svec":
        return json.loads(path.read_text()).get("steerlens", {})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("steerlens", "{}"))
