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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from steerlens import __version__
from steerlens.errors import SteerlensError

DOSE_UNITS = ("resid", "paper")

PRESETS: dict[str, dict] = {
    # A verdict in about 10 minutes on a 2-core CPU. Every preset generates 20 null cells per
    # attack and dose (random + label-shuffled): the fewest with which a vector can be beyond
    # its null at p < 0.05 (1/21), so that a verdict can rest on the outcome itself.
    "quick": dict(behaviours=("corrigible-neutral-HHH",), attacks=("none",), n_goals=30,
                  n_benign=10, n_caa_items=48, n_behaviour_test=24, n_refusal_train=96,
                  n_refusal_val=48, refusal_layer_stride=3, refusal_positions="last",
                  doses=(0.15,), dose_sweep=(-0.15, 0.15), max_new_tokens=64,
                  n_null_screen=32, n_null_generate=14, n_shuffled=6, n_category=0),
    # All 100 JBB goals on the 0.5B in under an hour on 2 cores.
    "standard": dict(behaviours=("corrigible-neutral-HHH", "survival-instinct", "refusal"),
                     attacks=("none", "refusal_suppression"), n_goals=100, n_benign=30,
                     n_caa_items=96, n_behaviour_test=48, n_refusal_train=128,
                     n_refusal_val=64, refusal_layer_stride=2, refusal_positions="last",
                     doses=(0.15,), dose_sweep=(-0.3, -0.15, 0.15, 0.3), max_new_tokens=64,
                     n_null_screen=64, n_null_generate=14, n_shuffled=2, n_category=8),
    # The paper's grid, for GPUs.
    "paper": dict(behaviours=("coordinate-other-ais", "corrigible-neutral-HHH", "hallucination",
                              "myopic-reward", "survival-instinct", "sycophancy", "refusal"),
                  attacks=("none", "prefix_injection", "refusal_suppression", "aim",
                           "gptfuzzer-34"),
                  n_goals=100, n_benign=100, n_caa_items=1000, n_behaviour_test=50,
                  n_refusal_train=128, n_refusal_val=32, refusal_layer_stride=1,
                  refusal_positions="all", doses=(0.1, 0.2), dose_sweep=(-0.4, -0.2, -0.1, 0.1,
                                                                         0.2, 0.4),
                  max_new_tokens=128, n_null_screen=256, n_null_generate=16, n_shuffled=2,
                  n_category=16),
}


# Steering layers measured for the embedded models: where their CAA vectors move their own
# behaviour (benchmarks/caa_layer_scan.py; docs/caa_layer_scan*.json). Used when --layer is not
# given; any other model steers at its refusal direction's layer unless --layer says otherwise.
MEASURED_LAYERS = {"qwen2.5-coder-0.5b-instruct": 14, "qwen2.5-coder-1.5b-instruct": 18}


@dataclass(frozen=True)
class AuditConfig:
    """Every choice that changes an audit's results."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 16
    behaviours: tuple[str, ...] = ()
    vectors: tuple[str, ...] = ()  # vector files audited beside the CAA behaviours
    layer: int | None = None  # steering layer (None: the refusal direction's layer)
    attacks: tuple[str, ...] = ("none",)
    judge: str = "refusal_string"
    n_goals: int = 20
    n_benign: int = 10
    n_caa_items: int = 64
    n_behaviour_test: int = 24
    n_refusal_train: int = 32
    n_refusal_val: int = 16
    refusal_layer_stride: int = 2
    refusal_positions: str = "last"  # "last" post-instruction token, or "all" of them
    filter_refusal_prompts: bool = True
    dose_unit: str = "resid"
    doses: tuple[float, ...] = (0.15,)
    dose_sweep: tuple[float, ...] = (-0.15, 0.15)
    max_new_tokens: int = 32
    n_null_screen: int = 32
    n_null_generate: int = 2
    n_shuffled: int = 1  # label-shuffled CAA vectors per behaviour (the null "of the same kind")
    n_category: int = 0  # StrongREJECT prompts per category for the subspace (0: cluster method)
    k: int | None = None  # subspace dimension (None: chosen by ablation effect)
    seed: int = 0
    system: str | None = None
    preset: str = "quick"
    version: str = __version__

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> AuditConfig:
        """The config saved in a run's config.json (JSON lists back to tuples)."""
        names = {f.name for f in fields(cls)}
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
    extra: dict = field(default_factory=dict)


def _judge_names() -> list[str]:
    from steerlens.judges.registry import JUDGES

    return list(JUDGES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m steerlens.audit",
        description="Does this steering vector weaken the model's refusals, why, and does "
                    "orthogonalisation fix it? CAA vectors (or your own) against the refusal "
                    "direction and subspace, JailbreakBench ASR under template attacks, a null "
                    "of random directions, and the mitigations.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="sizes: quick (a verdict in ~5 min on 2 CPU cores), standard (all 100 "
                        "goals, < 1 h on 2 cores for the 0.5B), paper (the paper's grid, for GPUs)")
    p.add_argument("--model", default=AuditConfig.model,
                   help="embedded key, Hugging Face name, or local HF directory")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 "
                   "on CPU, bfloat16 on CUDA); geometry is always float32/float64")
    p.add_argument("--behaviours", nargs="+", help="CAA behaviours to audit")
    p.add_argument("--vector", dest="vectors", nargs="+", metavar="FILE",
                   help="also audit vectors from files: steerlens/per-layer safetensors "
                        "(per-layer files are read as decoder-layer outputs, steering-vectors' "
                        "convention) or repeng/llama.cpp GGUF control vectors")
    p.add_argument("--layer", type=int, default=None,
                   help="steering layer, resid_pre numbering (default: the measured one for the "
                        "embedded models, 14 for the 0.5B and 18 for the 1.5B; else the refusal "
                        "direction's layer)")
    p.add_argument("--dose-unit", choices=DOSE_UNITS,
                   help="resid: dose = fraction of the mean residual-stream norm at the steering "
                        "layer on harmful prompts (default); paper: multiplier on CAA vectors "
                        "rescaled to equal per-layer norm (Li et al.)")
    p.add_argument("--doses", nargs="+", type=float, help="audited doses (each as +d and -d)")
    p.add_argument("--dose-sweep", nargs="+", type=float,
                   help="signed doses at which each vector's behaviour effect is measured")
    p.add_argument("--attacks", nargs="+",
                   help="none, prefix_injection, refusal_suppression, aim, gptfuzzer-<id>")
    p.add_argument("--judge", help="judge of the completions, one of: " + ", ".join(_judge_names())
                   + " (see docs/judges.md)")
    for name, kind, text in (("n-goals", int, "JBB harmful goals, stratified over categories"),
                             ("n-benign", int, "JBB benign goals (false refusals)"),
                             ("n-caa-items", int, "CAA items per vector (each in both orders)"),
                             ("n-refusal-train", int, "Arditi train prompts per side"),
                             ("n-refusal-val", int, "Arditi validation prompts per side"),
                             ("refusal-layer-stride", int, "score every n-th layer as a candidate"),
                             ("n-category", int, "StrongREJECT prompts per category (subspace)"),
                             ("max-new-tokens", int, "generation length of judged cells"),
                             ("n-null-screen", int, "random directions screened"),
                             ("n-null-generate", int, "random directions generated"),
                             ("n-shuffled", int, "label-shuffled CAA vectors per behaviour "
                                                 "(generated)"),
                             ("k", int, "refusal-subspace dimension (default: by ablation)")):
        p.add_argument(f"--{name}", type=kind, help=text)
    _add_run_options(p)
    return p


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of how and where the audit runs (not of what it measures, except the filter)."""
    p.add_argument("--no-refusal-filter", dest="filter_refusal_prompts", action="store_false",
                   default=None, help="keep every refusal train/val prompt (Arditi keeps harmful "
                   "prompts the model refuses and harmless ones it answers; a model that never "
                   "refuses leaves none)")
    p.add_argument("--system", default=None, help="system prompt (default: the template's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=0,
                   help="prompts per batch (default 0: from free memory, at most 16 on CPU, 64 on CUDA)")
    p.add_argument("--out", default="runs/audit", help="run directory")
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
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="run evaluation cells here (default) or as Ray actors")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    p.add_argument("--ray-workers", type=int, default=None, help="Ray actors (default: one per GPU/CPU)")


def _check_judge(name: str) -> None:
    from steerlens.judges.registry import JUDGES

    if name not in JUDGES:
        raise SteerlensError(f"unknown judge {name!r}", fix=f"use one of: {', '.join(JUDGES)}")


_TUPLES = ("behaviours", "attacks", "doses", "dose_sweep")


def config_from_args(args: argparse.Namespace) -> tuple[AuditConfig, RunOptions]:
    """The preset, overridden by whatever the command line sets."""
    values = dict(PRESETS[args.preset])
    for f in fields(AuditConfig):
        given = getattr(args, f.name, None)
        if given is not None and f.name not in ("device", "dtype", "batch_size", "version"):
            values[f.name] = given
    values["vectors"] = tuple(str(Path(v)) for v in (args.vectors or ()))
    if values.get("layer") is None:
        values["layer"] = MEASURED_LAYERS.get(values.get("model", AuditConfig.model))
    values = {k: tuple(v) if k in _TUPLES else v for k, v in values.items()}
    cfg = AuditConfig(preset=args.preset, **{k: v for k, v in values.items() if k != "preset"})
    opts = RunOptions(Path(args.out), args.resume, not args.no_report, not args.no_harm_judge,
                      not args.no_reuse, args.backend, args.address, args.ray_workers,
                      args.device, args.dtype, args.batch_size)
    return cfg, opts


def validate(cfg: AuditConfig) -> None:
    """Fail before any model work on inputs that cannot be right."""
    from steerlens.datasets.attacks import get_attack
    from steerlens.datasets.loaders import CAA_BEHAVIOURS

    for b in cfg.behaviours:
        if b not in CAA_BEHAVIOURS:
            raise SteerlensError(f"unknown behaviour {b!r}", fix=f"choose from: {', '.join(CAA_BEHAVIOURS)}")
    for a in cfg.attacks:
        get_attack(a)
    _check_judge(cfg.judge)
    for v in cfg.vectors:
        if not Path(v).is_file():
            raise SteerlensError(f"--vector file {v} not found", fix="check the path")
    checks = [(1 <= cfg.n_goals <= 100, f"--n-goals {cfg.n_goals} out of range", "use 1..100"),
              (0 <= cfg.n_benign <= 100, f"--n-benign {cfg.n_benign} out of range", "use 0..100"),
              (cfg.max_new_tokens >= 1, "--max-new-tokens must be at least 1", "e.g. 64"),
              (bool(cfg.doses) and all(d > 0 for d in cfg.doses), "doses must be positive",
               "e.g. --doses 0.1 (each is audited as +d and -d)"),
              (cfg.dose_unit in DOSE_UNITS, f"unknown dose unit {cfg.dose_unit!r}", "resid or paper"),
              (bool(cfg.behaviours) or bool(cfg.vectors), "nothing to audit",
               "name --behaviours or --vector files"),
              (cfg.n_caa_items >= 2, "--n-caa-items must be at least 2", "e.g. 64"),
              (min(cfg.n_null_screen, cfg.n_null_generate, cfg.n_shuffled) >= 0,
               "null counts (--n-null-screen, --n-null-generate, --n-shuffled) must be 0 or more",
               "e.g. --n-shuffled 1")]
    for ok, problem, fix in checks:
        if not ok:
            raise SteerlensError(problem, fix=fix)
