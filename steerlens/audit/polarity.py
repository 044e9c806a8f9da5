"""The answer-polarity direction as a model-level artefact of the run, and each vector's cosine
with it (`methods.polarity`).

The direction is read at every layer (resid_pre) from the neutral questions of
`data/polarity/train.json`, once per model: `polarity_direction.safetensors`, taken from the
reuse store when an earlier run computed exactly the same thing (its key: the model, the data
file's sha256, the system prompt and the batch size). Every audited vector records its cosine
with it; a `--vector` file whose cosine at the steering layer reaches `WARN_COSINE` gets a
printed warning (its effect may be the answer word "Yes"/"No", not a behaviour).
"""

from __future__ import annotations

import torch

from steerlens.audit.config import AuditConfig
from steerlens.audit.log import log as _log
from steerlens.core.geometry import cosine
from steerlens.core.vectors import SteeringVector
from steerlens.rundir import RunStore
from steerlens.schema import POLARITY_TENSORS

POLARITY_FILE = POLARITY_TENSORS
POLARITY_DATA = "polarity/train.json"
WARN_COSINE = 0.5  # |cos| with the polarity direction at the steering layer that is warned about


def polarity_inputs(cfg: AuditConfig) -> dict:
    """What the direction depends on beyond the model and the environment."""
    from steerlens.audit.reuse import data_digests

    return {"config": {"system": cfg.system, "batch_size": cfg.batch_size},
            "data": data_digests(POLARITY_DATA)}


def _compute(model, cfg: AuditConfig) -> SteeringVector:
    from steerlens.methods.caa import polarity_direction

    return polarity_direction(model, list(range(model.cfg.n_layers)), system=cfg.system,
                              batch_size=cfg.batch_size)


def polarity_stage(store: RunStore, model, cfg: AuditConfig, reuse=None) -> SteeringVector:
    """The direction at every layer (from the reuse store when it holds it)."""
    _log("answer-polarity direction: neutral yes/no questions, both answer orders")
    compute = lambda: store.artefact(POLARITY_FILE, SteeringVector,  # noqa: E731
                                     lambda: _compute(model, cfg))
    if reuse is None:
        return compute()
    inputs = polarity_inputs(cfg)
    key = reuse.key("polarity", inputs)
    reuse.provide(store, "polarity", key, [POLARITY_FILE])
    value = compute()
    reuse.publish(store, key, [POLARITY_FILE], inputs)
    return value


def stored_polarity(store) -> SteeringVector | None:
    """The run's polarity direction, None for a run made before it was recorded."""
    return SteeringVector.load(store.path(POLARITY_FILE)) if store.exists(POLARITY_FILE) else None


def at_layers(pol: SteeringVector, layers) -> torch.Tensor:
    """The direction's rows at `layers` (resid_pre numbering)."""
    return torch.stack([pol.at(lay) for lay in layers])


def polarity_cosines(sv: SteeringVector, pol: SteeringVector) -> list[float]:
    """The vector's cosine with the polarity direction at each of its layers."""
    return [round(float(c), 6) for c in cosine(sv.vectors.float(), at_layers(pol, sv.layers).float())]


def polarity_cos(sv: SteeringVector, pol: SteeringVector, layer: int) -> float:
    return float(cosine(sv.at(layer).float(), pol.at(layer).float()))


def warn_files(files: dict[str, SteeringVector], pol: SteeringVector, layer: int) -> None:
    """A warning per `--vector` file that lies along the polarity direction at the layer."""
    for name, sv in files.items():
        c = polarity_cos(sv, pol, layer)
        if abs(c) >= WARN_COSINE:
            _log(f"WARNING: {name} has cosine {c:+.2f} with the answer-polarity direction "
                 f"(\"Yes\" minus \"No\") at layer {layer} (|cos| >= {WARN_COSINE}): its effect "
                 "may be the answer word, not a behaviour (docs/polarity.md)")
