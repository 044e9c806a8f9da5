"""The audit as a Python call: `steerlens.audit(preset=..., out=..., **overrides)`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.errors import SteerlensError


@dataclass(frozen=True)
class AuditResult:
    """A finished audit: its run directory, resolved config and summary (as saved)."""

    out: Path
    config: dict
    summary: dict

    @property
    def report(self) -> Path:
        return self.out / "report.html"

    def answer(self) -> str:
        """The answer text the CLI prints."""
        from steerlens.results.text import format_answer

        return format_answer(self.summary)


def audit(preset: str = "quick", out: str | Path = "runs/audit", **overrides: Any) -> AuditResult:
    """Run (or, with `resume=True`, continue) an audit; overrides are the CLI's options by their
    dest names (`behaviours=["refusal"]`, `n_goals=30`, `vectors=["v.safetensors"]`, ...), checked
    by the rule of `audit.options` (one string where a list is allowed) before any model loads."""
    from steerlens.audit.config import build_parser, config_from_args
    from steerlens.audit.options import check_values, normalise_value, specs_from_parser
    from steerlens.audit.run import run_audit
    from steerlens.rundir import RunStore

    parser = build_parser()
    specs = specs_from_parser(parser)
    preset = normalise_value(specs["preset"], preset)
    out = normalise_value(specs["out"], out)
    args = parser.parse_args(["--preset", preset, "--out", out])
    unknown = sorted(set(overrides) - set(vars(args)))
    if unknown:
        raise SteerlensError(f"unknown audit option(s) {', '.join(unknown)}",
                             fix=f"use the CLI's option names with _ for -: {', '.join(sorted(vars(args)))}")
    for key, value in check_values(specs, overrides).items():
        setattr(args, key, value)
    cfg, opts = config_from_args(args)
    summary = run_audit(cfg, opts)
    return AuditResult(Path(out), RunStore(out).read_json("config.json"), summary)


def load_run(path: str | Path) -> AuditResult:
    """A finished run directory as an `AuditResult` (no model needed); harm labels added after
    the run (`rejudge --judge harm`) are in its summary."""
    from steerlens.rundir import RunStore

    store = RunStore(path)
    if not store.exists("summary.json"):
        raise SteerlensError(f"{path} holds no finished audit (no summary.json)",
                             fix="run the audit first, or pass --resume to finish it")
    from steerlens.results.summary import current_summary

    return AuditResult(Path(path), store.read_json("config.json"), current_summary(path))
