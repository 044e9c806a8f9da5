"""The CPU budget of the pre-registered round-2 findings runs, from their AuditConfig (no model).

Per run: the generated cells (per attack: baseline, each vector's settings and label-shuffled
nulls, the model's generated nulls; the refusal validation under the first attack; benign:
baseline, +v, -v), the tokens generated at most (cells x goals x max_new_tokens: the stop rule
ends refusals sooner, so this is an upper bound), and the wall time that implies
(a) at HF `generate`'s rate on this 2-core CPU (one row at a time, the naive way), and
(b) at the audit's own throughput measured on a committed run of the same model (its tokens at
most over its whole wall time, every stage included: the realistic figure). With --mediation,
the first-token mediation passes are added at the per-setting cost measured on the 0.5B
(docs/mediation_0.5b.json; x the model's throughput ratio for the 1.5B); with
--mediation-generated, the clamped cells at the measured clamp-to-plain decode ratio.
The cell count is checked against the committed runs' cells (tests/test_findings_budget.py).

    python benchmarks/findings_budget.py [--json docs/findings_budget.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steerlens.audit.config import AuditConfig, build_parser, config_from_args  # noqa: E402

MODELS = {"0.5b": "qwen2.5-coder-0.5b-instruct", "1.5b": "qwen2.5-coder-1.5b-instruct"}
# HF generate, new tokens per second on this 2-core CPU. 0.5B: measured in this session
# (2026-12-05; earlier days 20.9 and 22.4, benchmarks/results_presets.json, results_study.json).
# 1.5B: no HF rate is recorded in benchmarks/results_*.json; taken as 3x slower (the ratio of
# the audit's measured throughputs below is 3.1).
HF_TOK_S = {"0.5b": 17.5, "1.5b": 17.5 / 3}
# The audit's measured wall time on committed runs (2 cores): run directory, seconds, source.
MEASURED = {"0.5b": ("results/findings-0.5b-resid", 2153.4,
                     "benchmarks/results_presets.json, preset standard (2026-12-01)"),
            "1.5b": ("results/findings-1.5b-resid-100", 4375.1,
                     "its timings.json, seconds_this_session (2 cores, beside nothing)")}
MEDIATION_FILE = "docs/mediation_0.5b.json"
# --mediation-generated decodes each +v's clamped cells beside an unsteered twin (2 rows per
# step): their cost per cell against a plain +v cell, measured by `mitigate`'s decode timing
# on the 0.5B (8 goals, the clamp run of the committed 0.5B findings run).
CLAMP_DECODE_FILE = "results/findings-0.5b-resid/mitigations-clamp/mitigations.json"
# `audit.mitigate` on round 1 (docs/findings_commands.sh: all five fixes under one attack, the
# fixes' calibration, capability and behaviour costs included): seconds per mitigated vector.
MITIGATE_S = {"0.5b": 55 * 60 / 2, "1.5b": 50 * 60 / 1}

# The round-2 runs (docs/findings_commands.sh, "Round 2"): the audit's arguments.
ROUND2 = {
    "r2-0.5b-resid": "--preset standard --mediation --mediation-generated",
    "r2-0.5b-paper": "--preset standard --mediation --dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5",
    "r2-1.5b-resid": "--preset standard --mediation --mediation-generated "
                     "--model qwen2.5-coder-1.5b-instruct",
    "r2-1.5b-paper": "--preset standard --mediation --model qwen2.5-coder-1.5b-instruct "
                     "--dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5",
}


# The round-2 mitigations: the two audited vectors that are not the refusal vector, under the
# template attack, on each model's resid-dose run (as round 1 chose by CPU time).
MITIGATE = {"r2-0.5b-resid": ("0.5b", ("corrigible-neutral-HHH", "survival-instinct")),
            "r2-1.5b-resid": ("1.5b", ("corrigible-neutral-HHH", "survival-instinct"))}


def config(args: str) -> tuple[AuditConfig, bool]:
    """The AuditConfig (and whether --mediation is on) that the audit's command line gives."""
    cfg, opts = config_from_args(build_parser().parse_args(shlex.split(args)))
    return cfg, opts.mediation


def generated_on(args: str) -> bool:
    """Whether the command runs --mediation-generated."""
    return config_from_args(build_parser().parse_args(shlex.split(args)))[1].mediation_generated


def clamp_ratio() -> float:
    """A clamped cell's decode time over a plain +v cell's (the larger of the two clamps)."""
    dec = json.loads((ROOT / CLAMP_DECODE_FILE).read_text())["decode_seconds"]
    return max(r for v in dec.values() for r in v["ratio_to_plus"].values())


def clamped_cells(cfg: AuditConfig) -> int:
    """--mediation-generated: clamp1 and clampk of each +v per attack and dose (an upper
    bound: a one-row refusal subspace decodes clamp1 only)."""
    return 2 * len(cfg.attacks) * len(cfg.doses) * _vectors(cfg)


def generated_seconds(cfg: AuditConfig, model: str) -> float:
    """The clamped cells' wall time: goals x new tokens at the audit's throughput, times the
    measured clamp-to-plain decode ratio."""
    return clamped_cells(cfg) * cfg.n_goals * cfg.max_new_tokens / throughput(model) * clamp_ratio()


def _vectors(cfg: AuditConfig) -> int:
    return len(cfg.behaviours) * len(cfg.methods)


def _shuffled(cfg: AuditConfig) -> int:
    """Label-shuffled nulls per dose: per behaviour, of its CAA (mean-difference) vector only."""
    return cfg.n_shuffled * len(cfg.behaviours) if "mean_difference" in cfg.methods else 0


def nulls_per_attack_dose(cfg: AuditConfig) -> int:
    """Generated null cells per attack and dose (the presets' rule: at least 20)."""
    return cfg.n_null_generate + _shuffled(cfg) + cfg.n_null_covariance + cfg.n_null_pairs


def cells(cfg: AuditConfig) -> dict[str, int]:
    """Generated cells by attack (and "benign"), as `audit.settings.build_settings` and
    `audit.grid.blocks` plan them for CAA vectors."""
    per_dose = _vectors(cfg) * len(cfg.vector_settings) + nulls_per_attack_dose(cfg)
    harmful = 1 + len(cfg.doses) * per_dose
    out = {a: harmful + (3 if i == 0 else 0) for i, a in enumerate(cfg.attacks)}
    signed = sum(k in cfg.vector_settings for k in ("plus", "minus"))
    if cfg.n_benign and 1 + len(cfg.doses) * _vectors(cfg) * signed > 0:
        out["benign"] = 1 + len(cfg.doses) * _vectors(cfg) * signed
    return out


def tokens(cfg: AuditConfig) -> int:
    """New tokens generated at most: cells x goals x max_new_tokens."""
    return sum(n * (cfg.n_benign if a == "benign" else cfg.n_goals) * cfg.max_new_tokens
               for a, n in cells(cfg).items())


def throughput(model: str) -> float:
    """The audit's tokens at most per wall second on its measured committed run."""
    run, wall, _ = MEASURED[model]
    saved = json.loads((ROOT / run / "config.json").read_text())["config"]
    return tokens(AuditConfig.from_json(saved)) / wall


def mediation_seconds(cfg: AuditConfig, model: str) -> float:
    """--mediation: per attack the unsteered pass and each mediated setting's arms (+v and
    the generated nulls), at the 0.5B's measured seconds per goal, scaled by goals and, for the
    1.5B, by the audit's throughput ratio."""
    m = json.loads((ROOT / MEDIATION_FILE).read_text())
    per = [s / m["n_goals"] for a in m["seconds"].values() for s in a["per_setting"].values()]
    base = [a["unsteered_pass"] / m["n_goals"] for a in m["seconds"].values()]
    settings = len(cfg.doses) * (len(cfg.behaviours) * len(cfg.methods) + nulls_per_attack_dose(cfg))
    sec = len(cfg.attacks) * cfg.n_goals * (sum(base) / len(base) + settings * sum(per) / len(per))
    return sec * throughput("0.5b") / throughput(model)


def budget(name: str, args: str) -> dict:
    cfg, mediation = config(args)
    model = next(k for k, v in MODELS.items() if v == cfg.model)
    n = tokens(cfg)
    med = mediation_seconds(cfg, model) if mediation else 0.0
    gen = generated_seconds(cfg, model) if generated_on(args) else 0.0
    med += gen
    return {"run": name, "command": f"python -m steerlens.audit {args}", "model": cfg.model,
            "cells": cells(cfg), "nulls_per_attack_dose": nulls_per_attack_dose(cfg),
            "n_goals": cfg.n_goals, "n_benign": cfg.n_benign, "max_new_tokens": cfg.max_new_tokens,
            "tokens_at_most": n, "hf_tok_s": HF_TOK_S[model],
            "hours_at_hf_rate": (n / HF_TOK_S[model] + med) / 3600,
            "audit_tok_s": throughput(model), "hours_at_audit_rate": (n / throughput(model) + med) / 3600,
            "mediation_hours": med / 3600, "clamped_cells": clamped_cells(cfg) if gen else 0,
            "generated_mediation_hours": gen / 3600}


def mitigate_hours() -> dict[str, float]:
    """Each round-2 mitigation's hours at round 1's measured seconds per vector."""
    return {run: MITIGATE_S[m] * len(v) / 3600 for run, (m, v) in MITIGATE.items()}


def report(rows: list[dict]) -> str:
    head = (f"{'run':<15} {'cells':>5} {'nulls':>5} {'tokens ≤':>9} {'h @ HF':>7} {'h @ audit':>9} "
            f"{'of which mediation':>18}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['run']:<15} {sum(r['cells'].values()):>5} {r['nulls_per_attack_dose']:>5} "
                     f"{r['tokens_at_most']:>9,} {r['hours_at_hf_rate']:>7.1f} "
                     f"{r['hours_at_audit_rate']:>9.1f} {r['mediation_hours']:>18.1f}")
    lines.append(f"{'total':<15} {'':>5} {'':>5} {sum(r['tokens_at_most'] for r in rows):>9,} "
                 f"{sum(r['hours_at_hf_rate'] for r in rows):>7.1f} "
                 f"{sum(r['hours_at_audit_rate'] for r in rows):>9.1f}")
    rates = "; ".join(f"{m}: HF {HF_TOK_S[m]:.1f} tok/s, audit {throughput(m):.1f} tok/s "
                      f"({MEASURED[m][0]}, {MEASURED[m][1]:.0f} s, {MEASURED[m][2]})" for m in MODELS)
    mit = mitigate_hours()
    return "\n".join(lines + ["", "mitigations (round 1's seconds per vector): " + ", ".join(
        f"{r} {h:.1f} h" for r, h in mit.items()) + f"; all runs at the audit's rate "
        f"{sum(r['hours_at_audit_rate'] for r in rows) + sum(mit.values()):.1f} h", "",
        f"rates: {rates}"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    a = ap.parse_args(argv)
    rows = [budget(name, args) for name, args in ROUND2.items()]
    print(report(rows))
    if a.json:
        a.json.write_text(json.dumps({"runs": rows, "mitigate_hours": mitigate_hours(), "hf_tok_s": HF_TOK_S,
                                      "measured": MEASURED}, indent=1) + "\n")


if __name__ == "__main__":
    main()
