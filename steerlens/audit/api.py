"""The audit as a Python call: `steerlens.audit(preset=..., out=..., **overrides)`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.errors import SteerlensError
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
    from steerlens.audit.config import build_parser, config_from_args
    from steerlens.audit.run import run_audit
    from steerlens.rundir import RunStore

    args = build_parser().parse_args(["--preset", preset, "--out", str(out)])
    unknown = sorted(set(overrides) - set(vars(args)))
    if unknown:
        raise SteerlensError(f"unknown audit option(s) {', '.join(unknown)}",
                             fix=f"use the CLI's option names with _ for -: {', '.join(sorted(vars(args)))}")
    for key, value in overrides.items():
        setattr(args, key, value)
    cfg, opts = config_from_args(args)
    summary = run_audit(cfg, opts)
    return AuditResult(Path(out), RunStore(out).read_json(CONFIG_FILE), summary)


def load_run(path: str | Path) -> AuditResult:
    """A finished run directory as an `AuditResult` (no model needed); harm labels added after
    the run (`rejudge --judge harm`) are in its summary."""
    from steerlens.results.summary import current_summary
    from steerlens.rundir import open_run

    store = open_run(path)
    return AuditResult(store.root, store.read_json(CONFIG_FILE), current_summary(store.root))
