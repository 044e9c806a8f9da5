"""The audit's inputs checked before any model work: names that exist, numbers in range,
vector files that exist and are audited under names of their own; every message names the
flag whose value failed."""

from __future__ import annotations

import math
from pathlib import Path

from steerlens.audit.config import (
    BALANCES,
    DOSE_UNITS,
    VECTOR_SETTINGS,
    AuditConfig,
    file_vector_name,
    flag_of,
)
from steerlens.errors import SteerlensError

# Bounds of the integer options (None: no upper bound); --layer's upper bound needs the model.
RANGES = {"n_goals": (1, 100), "n_benign": (0, 100), "n_caa_items": (2, None),
          "n_behaviour_test": (1, None), "n_refusal_train": (1, None), "n_refusal_val": (1, None),
          "refusal_layer_stride": (1, None), "max_new_tokens": (1, None), "n_null_screen": (0, None),
          "n_null_generate": (0, None), "n_shuffled": (0, None), "n_category": (0, None),
          "k": (1, None), "seed": (0, None), "layer": (0, None), "n_null_covariance": (0, None),
          "n_null_pairs": (0, None)}


def _named(flag: str, check) -> None:
    """Run `check`, its error prefixed with the flag whose value failed it."""
    try:
        check()
    except SteerlensError as e:
        raise SteerlensError(f"{flag}: {e.problem}", fix=e.fix) from None


def _check_in(flag: str, values, known, what: str, fix: str) -> None:
    for v in values:
        if v not in known:
            raise SteerlensError(f"{flag}: unknown {what} {v!r}", fix=f"{fix}: {', '.join(known)}")


def _check_names(cfg: AuditConfig) -> None:
    """Behaviours, attacks, judge, methods and vector settings that exist."""
    from steerlens.datasets.attacks import get_attack
    from steerlens.datasets.behaviours import BEHAVIOURS
    from steerlens.judges.registry import JUDGES
    from steerlens.methods.extraction import METHODS

    _check_in("--behaviours", cfg.behaviours, list(BEHAVIOURS), "behaviour", "choose from")
    for a in cfg.attacks:
        _named("--attacks", lambda a=a: get_attack(a))
    _check_in("--judge", [cfg.judge], list(JUDGES), "judge", "use one of")
    _check_in("--methods", cfg.methods, list(METHODS), "extraction method", "use one of")
    _check_in("--vector-settings", cfg.vector_settings, VECTOR_SETTINGS, "vector setting",
              "use some of")
    if "plus" not in cfg.vector_settings:
        raise SteerlensError("--vector-settings must include plus (every verdict rests on +v)",
                             fix="e.g. --vector-settings plus")


def _check_numbers(cfg: AuditConfig) -> None:
    """Integer options within their bounds; doses finite, audited and screened ones positive."""
    for name, (lo, hi) in RANGES.items():
        v = getattr(cfg, name)
        if v is not None and not (lo <= v and (hi is None or v <= hi)):
            raise SteerlensError(f"{flag_of(name)} {v} out of range",
                                 fix=f"use {lo}..{hi}" if hi is not None else f"use {lo} or more")
    doses = [("--doses", cfg.doses, "positive", "e.g. --doses 0.1 (each is audited as +d and -d)"),
             ("--dose-sweep", cfg.dose_sweep, "non-zero", "e.g. --dose-sweep -0.15 0.15"),
             ("--screen-doses", cfg.screen_doses, "positive", "e.g. --screen-doses 0.05 0.3")]
    for flag, values, sign, fix in doses:
        if not all(math.isfinite(d) and (d > 0 if sign == "positive" else d != 0) for d in values):
            raise SteerlensError(f"{flag.removeprefix('--')} must be {sign} and finite "
                                 f"({flag} {' '.join(f'{d:g}' for d in values)})", fix=fix)
    if not cfg.doses:
        raise SteerlensError("doses must be positive: none given", fix=doses[0][3])


def _check_vector_files(cfg: AuditConfig) -> None:
    """Files that exist, each audited under its own name."""
    names: dict[str, str] = {}
    for v in cfg.vectors:
        if not Path(v).is_file():
            raise SteerlensError(f"--vector file {v} not found", fix="check the path")
        name = file_vector_name(v)
        if name in names:
            raise SteerlensError(f"--vector files {names[name]} and {v} would both be audited as "
                                 f"{name}", fix="rename one of them (a vector is named after its file)")
        names[name] = v


def validate(cfg: AuditConfig) -> None:
    """Fail before any model work on inputs that cannot be right; each message names the flag."""
    _check_names(cfg)
    _check_vector_files(cfg)
    _check_numbers(cfg)
    if cfg.dose_unit not in DOSE_UNITS:
        raise SteerlensError(f"--dose-unit: unknown dose unit {cfg.dose_unit!r}", fix="resid or paper")
    if cfg.balance not in BALANCES:
        raise SteerlensError(f"--balance: unknown balance {cfg.balance!r}",
                             fix=f"use one of: {', '.join(BALANCES)}")
    if not (cfg.behaviours or cfg.vectors):
        raise SteerlensError("nothing to audit", fix="name --behaviours or --vector files")
    if cfg.protocol == "deployed" and not cfg.vectors:
        raise SteerlensError("--protocol deployed audits --vector files, and none is given",
                             fix="pass --vector FILE (or drop --protocol)")
    if cfg.protocol == "deployed" and not (cfg.multipliers and all(cfg.multipliers)):
        raise SteerlensError("--multipliers must be non-zero", fix="e.g. --multipliers 0.5 1 1.5")


MIN_NULL_CELLS = 20  # generated null cells before a vector can be beyond its null at p < 0.05 (1/21)


def null_warnings(cfg: AuditConfig) -> list[str]:
    """Before any model work: vectors whose verdict cannot be reached with the nulls this config
    generates: random, covariance and prompt-pair nulls for every vector, and every behaviour's
    label-shuffled nulls for CAA vectors (as the presets count them; files have none)."""
    out = []
    shared = cfg.n_null_generate + cfg.n_null_covariance + cfg.n_null_pairs
    shuffled = cfg.n_shuffled * len(cfg.behaviours)
    for who, n in (("CAA vectors", shared + shuffled if cfg.behaviours else None),
                   ("--vector files", shared if cfg.vectors else None)):
        if n is not None and n < MIN_NULL_CELLS:
            enough = MIN_NULL_CELLS - n + cfg.n_null_generate
            out.append(f"warning: {who} get {n} generated null cells per attack and dose; no "
                       f"vector can be beyond its null at p < 0.05 with fewer than "
                       f"{MIN_NULL_CELLS} (fix: --n-null-generate {enough})")
    return out

