"""The audit as a Python call: `steerlens.audit(preset=..., out=..., **overrides)`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.schema import CONFIG_FILE, REPORT_FILE


@dataclass(frozen=True)
class AuditResult:
    """A finished audit: its run directory, resolved config and summary (as saved)."""

    out: Path
    config: dict
    summary: dict

    @property
    def report(self) -> Path:
        return self.out / REPORT_FILE

    def answer(self) -> str:
        """The answer text the CLI prints."""
        from steerlens.results.text import format_answer

        return format_answer(self.summary)


def audit(preset: str = "quick", out: str | Path = "runs/audit", **overrides: Any) -> AuditResult:
    """Run (or, with `resume=True`, continue) an audit; overrides are the CLI's options by their
    dest names (`behaviours=["refusal"]`, `n_goals=30`, `vectors=["v.safetensors"]`, ...)."""
    from steerlens.audit.config import audit_options
    from steerlens.audit.run import run_audit
    from steerlens.rundir import RunStore

    cfg, opts = audit_options(preset, out, **overrides)
    summary = run_audit(cfg, opts)
    return AuditResult(Path(out), RunStore(out).read_json(CONFIG_FILE), summary)


def mitigate(run: str | Path, into: str = "mitigations", **overrides: Any) -> dict:
    """What fixes a finished audit's vectors, at what cost (`steerlens mitigate RUN`), into
    RUN/mitigations/ (`into="mitigations-NAME"`: a mitigation run with other settings beside
    it); overrides are `MitigateConfig` fields (`mitigations=["gate"]`, ...). Returns the
    mitigation summary (RUN/<into>/mitigations.json)."""
    from steerlens.audit.fixes import MitigateConfig
    from steerlens.audit.flags import config_of
    from steerlens.audit.mitigate import run_mitigate

    return run_mitigate(run, config_of(MitigateConfig, overrides, "mitigate"), into)


def study(out: str | Path = "runs/library", resume: bool = False, **overrides: Any) -> dict:
    """The vector-library study (`steerlens study`): two audits, the layer scan, the analysis;
    overrides are `StudyConfig` fields (`model=...`, `scan=False`). Returns the analysis."""
    from steerlens.audit.flags import config_of
    from steerlens.audit.study import StudyConfig, run_study

    return run_study(out, config_of(StudyConfig, overrides, "study"), resume)


def load_run(path: str | Path) -> AuditResult:
    """A finished run directory as an `AuditResult` (no model needed); harm labels added after
    the run (`rejudge --judge harm`) are in its summary."""
    from steerlens.results.summary import current_summary
    from steerlens.rundir import open_run

    store = open_run(path)
    return AuditResult(store.root, store.read_json(CONFIG_FILE), current_summary(store.root))
