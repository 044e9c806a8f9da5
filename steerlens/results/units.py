"""Which vectors of a library are independent units: their directions at the steering layer.

Many "behaviour" vectors can be one direction repeated (issue 40: 14 of 20 CAA vectors share
one Yes/No polarity axis). Before a regression across vectors treats them as units, this module
measures the set's geometry from the saved vectors (numpy only, no torch):
- the effective number of directions: the participation ratio (Σλ)² / Σλ² of the Gram matrix of
  the unit vectors (Recanatesi et al. 2022's dimensionality measure; 1 for one direction
  repeated, n for n orthogonal ones);
- duplicates: vectors with cos > DUPLICATE_COS (the split-half cosines of the most stable CAA
  vectors at the steering layer are 0.99–0.998: such vectors are the same intervention up to
  estimation noise, since the dose fixes the norm), merged into one unit (their records averaged) before any
  regression. A vector and its near-negative are not duplicates (+v of one is −v of the other):
  they stay two units in one axis;
- clusters: average-linkage hierarchical clustering (scipy) cut at distance CLUSTER_DISTANCE,
  on 1 − |cos| ("axes": a direction and its negative together) and on 1 − cos ("poles":
  near-copies of one intervention with the same sign).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

from steerlens.errors import SteerlensError
from steerlens.schema import vector_file as run_vector_file

DUPLICATE_COS = 0.99
CLUSTER_DISTANCE = 0.5  # average linkage: members' mean |cos| (axes) or cos (poles) above 0.5
LINKAGE = "average"


def vector_file(run: Path, name: str) -> Path:
    """Where an audit saves a vector: `behaviour` (CAA) or `behaviour:method`."""
    beh, _, method = name.partition(":")
    return Path(run) / run_vector_file(beh, method or "mean_difference")


def _metadata(path: Path) -> dict:
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("steerlens", "{}"))


def layer_vector(path: Path, layer: int) -> np.ndarray | None:
    """A saved steering vector's row at `layer` (None if the file or the layer is missing)."""
    if not Path(path).exists():
        return None
    layers = _metadata(path).get("layers", [])
    if layer not in layers:
        return None
    return np.asarray(load_file(str(path))["vectors"][layers.index(layer)], float)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length."""
    v = np.asarray(vectors, float)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def participation_ratio(vectors: np.ndarray) -> float:
    """(Σλ)² / Σλ² over the eigenvalues λ of the Gram matrix of the unit vectors."""
    u = unit_rows(vectors)
    lam = np.clip(np.linalg.eigvalsh(u @ u.T), 0, None)
    return float(lam.sum() ** 2 / (lam ** 2).sum())


def duplicate_groups(vectors: np.ndarray, threshold: float = DUPLICATE_COS) -> np.ndarray:
    """A group label per vector: connected components of the graph cos > threshold."""
    u = unit_rows(vectors)
    return connected_components(u @ u.T > threshold, directed=False)[1]


def clusters(vectors: np.ndarray, signed: bool = False,
             threshold: float = CLUSTER_DISTANCE) -> np.ndarray:
    """Average-linkage clusters on 1 − |cos| (axes) or 1 − cos (signed: poles), cut at
    `threshold`; labels 0..k−1."""
    u = unit_rows(vectors)
    if len(u) == 1:
        return np.zeros(1, int)
    c = u @ u.T
    d = np.clip(1 - (c if signed else np.abs(c)), 0, None)
    np.fill_diagonal(d, 0)
    lab = fcluster(linkage(squareform(d, checks=False), LINKAGE), threshold, "distance")
    return np.unique(lab, return_inverse=True)[1]


def merge_records(records: list[dict], groups: np.ndarray, keys: tuple[str, ...]) -> list[dict]:
    """One record per duplicate group: the members' names, and each numeric key averaged."""
    out = []
    for g in dict.fromkeys(groups.tolist()):
        members = [r for r, k in zip(records, groups) if k == g]
        rec = {"vector": " = ".join(m["vector"] for m in members),
               "members": [m["vector"] for m in members],
               "steers": all(m.get("steers", False) for m in members)}
        for k in keys:
            vals = [m.get(k) for m in members]
            rec[k] = (float(np.mean(vals)) if vals and all(v is not None and np.isfinite(v) for v in vals)
                      else None)
        out.append(rec)
    return out


def geometry(names: list[str], vectors: np.ndarray) -> dict:
    """Effective number of directions, duplicates and clusters of one set of vectors."""
    dup = duplicate_groups(vectors)
    firsts = list(dict.fromkeys(dup.tolist()))
    merged = np.array([unit_rows(vectors)[dup == g].mean(0) for g in firsts])
    axes, poles = clusters(merged), clusters(merged, signed=True)
    return {"n_vectors": len(names), "participation_ratio": participation_ratio(vectors),
            "participation_ratio_units": participation_ratio(merged),
            "duplicates": [[n for n, k in zip(names, dup) if k == g] for g in firsts
                           if (dup == g).sum() > 1],
            "n_units": len(firsts), "n_axes": int(axes.max() + 1), "n_poles": int(poles.max() + 1),
            "duplicate_cos": DUPLICATE_COS, "cluster_distance": CLUSTER_DISTANCE, "linkage": LINKAGE,
            "_groups": dup, "_axes": axes, "_poles": poles}


def polarity_direction(path: Path, layer: int) -> np.ndarray:
    """An answer-polarity direction from a safetensors file: a 1-D `direction` (taken as the
    steering layer's), or a 2-D `directions`/`vectors` with a `layers` list in its metadata."""
    t = load_file(str(path))
    if "direction" in t and t["direction"].ndim == 1:
        return np.asarray(t["direction"], float)
    key = next((k for k in ("directions", "vectors") if k in t), None)
    layers = _metadata(path).get("layers", [])
    if key is None or layer not in layers:
        raise SteerlensError(f"{path}: no polarity direction at layer {layer}",
                             fix="save a 1-D 'direction', or 'directions' with metadata "
                                 "{'steerlens': {'layers': [...]}} that includes the steering layer")
    return np.asarray(t[key][layers.index(layer)], float)


def fill_polarity(units: list[dict], vectors: dict[str, np.ndarray], direction: np.ndarray) -> None:
    """Set each unit's `polarity_cos` (cosine of its steering-layer vector with the polarity
    direction) where the record has none and its vector is known."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    for u in units:
        v = vectors.get(u["vector"])
        if u.get("polarity_cos") is None and v is not None:
            u["polarity_cos"] = float(v @ d / np.linalg.norm(v))
