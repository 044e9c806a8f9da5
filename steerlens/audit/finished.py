"""A finished audit run, opened one way: read-only (`rundir.open_run`: its files checked first,
nothing computed or written), its artefacts loaded from their files for the model it was
audited on. `replay` and `mitigate` open runs here; `load_run` and the report, which need no
model, through `rundir.open_run` itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steerlens.audit.artefacts import Refusal, Vectors, load_vector_files
from steerlens.audit.config import AuditConfig
from steerlens.audit.stages import refusal_stage, subspace_stage
from steerlens.audit.vector_stages import vector_stage
from steerlens.errors import SteerlensError
from steerlens.methods.subspace import RefusalSubspace
from steerlens.rundir import ReadOnlyStore, open_run
from steerlens.schema import (
    CONFIG_FILE,
    DOSE_FILE,
    REFUSAL_TENSORS,
    SETTINGS_FILE,
    SUBSPACE_TENSORS,
    SUMMARY_FILE,
)

# what replaying or mitigating a run reads
AUDITED = (CONFIG_FILE, REFUSAL_TENSORS, SUBSPACE_TENSORS, DOSE_FILE, SETTINGS_FILE, SUMMARY_FILE)


def run_config(store: ReadOnlyStore) -> AuditConfig:
    """The run's resolved config (config.json)."""
    return AuditConfig.from_json(store.read_json(CONFIG_FILE)["config"])


@dataclass
class FinishedRun:
    """A run's config and artefacts, loaded for a model (never recomputed)."""

    store: ReadOnlyStore
    config: AuditConfig
    refusal: Refusal
    subspace: RefusalSubspace
    vectors: Vectors
    dose: dict

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def scale(self) -> float:
        """The norm of a dose-1 vector at the steering layer (dose.json)."""
        return self.dose["scale"]


def open_audited(run: str | Path, model, need: tuple[str, ...] = AUDITED) -> FinishedRun:
    """The finished run at `run`, its artefacts loaded for `model` (the run's model)."""
    store = open_run(run, need)
    cfg = run_config(store)
    saved = store.load(REFUSAL_TENSORS, Refusal).direction.direction
    if model.cfg.d_model != saved.shape[-1]:
        raise SteerlensError(f"{store.root} was audited on {cfg.model}, not on this model",
                             fix=f"load_model({cfg.model!r})")
    ref = refusal_stage(store, model, cfg)
    sub = subspace_stage(store, model, cfg, ref)
    vectors = vector_stage(store, model, cfg, ref, load_vector_files(cfg, model))
    return FinishedRun(store, cfg, ref, sub, vectors, store.read_json(DOSE_FILE))
