"""The vector-library study: why a steering vector weakens refusals, with the vector as the unit.

`python -m steerlens.audit.study --out DIR` runs, on one model:
1. `DIR/caa`: the `library` preset (20 behaviours' CAA vectors, +v at the audited dose on all
   100 JBB goals, label-shuffled / covariance / prompt-pair / random nulls generated, +v screened
   at three more doses);
2. `DIR/methods`: the `library-methods` preset (four more extraction methods on three
   behaviours; the refusal direction and every model-level cell come from the reuse store,
   exactly the first run's);
3. `DIR/layer_scan.json`: the layer-fragility scan, isotropic random directions at every layer
   screened at the first decode step (where is the model fragile?);
4. `DIR/library.json` and `DIR/library.md`: the analysis (`results.library`).

Each step is resumable (`--resume`): the audits continue their own runs, the scan and the
analysis are written atomically once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from steerlens.audit.config import audit_options
from steerlens.audit.flags import add_flags, config_of, opt
from steerlens.audit.log import log as _log
from steerlens.audit.options import EPILOG, OnceAction, Spec, check_values, normalise_fields
from steerlens.audit.run import run_audit
from steerlens.audit.settings import dosed, random_directions
from steerlens.audit.stages import instructions
from steerlens.core.activations import collect_resid
from steerlens.core.generation import next_token_logits_grid, refusal_log_odds
from steerlens.core.models import load_model
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import Steering, addition
from steerlens.datasets.loaders import load_jbb
from steerlens.errors import ArgumentParser, SteerlensError, cli_main
from steerlens.methods.refusal import refusal_token_ids
from steerlens.results.library import analyse, format_analysis, write_analysis
from steerlens.rundir import read_json, write_json
from steerlens.schema import CONFIG_FILE, LAYER_SCAN_FILE, STUDY_TIMINGS_FILE

RUNS = {"caa": "library", "methods": "library-methods"}


@dataclass(frozen=True)
class StudyConfig:
    """What the study computes (its two audits' presets are fixed: `RUNS`)."""

    model: str = opt("qwen2.5-coder-0.5b-instruct", "the model both audits and the scan run on")
    scan: bool = opt(True, "skip the layer-fragility scan", flag="--no-scan", action="store_false")
    balance: str = opt("polarity", "what both audits' vectors are balanced for (the audit's "
                       "--balance; the first library run used letter)",
                       choices=("polarity", "letter", "none"))
    mediation: bool = opt(False, "also run both audits' mediation stage (first-token shares "
                          "of every vector and generated null)", flag="--mediation",
                          action="store_true")

    def __post_init__(self) -> None:
        normalise_fields(self)  # every value by the rule of audit.options


def _audit(out: Path, preset: str, scfg: StudyConfig, resume: bool) -> float:
    """One of the study's audits, through the Python entry (its errors are the audit's)."""
    t = time.time()
    cfg, opts = audit_options(preset, out, model=scfg.model, balance=scfg.balance,
                              mediation=scfg.mediation, no_report=True,
                              resume=resume and out.exists())
    run_audit(cfg, opts)
    return time.time() - t


def layer_norms(model, prompts: list[str], layers: list[int], batch_size: int) -> list[float]:
    """Mean residual norm (resid_pre, last prompt token) of `prompts` at each layer: each
    layer's dose unit in the scan, as the audit's `resid` unit is at the steering layer."""
    acts = collect_resid(model, chat_prompts(model.tokenizer, prompts), layers,
                         batch_size=batch_size, desc=None)
    return [float(x) for x in acts[:, :, -1].norm(dim=-1).mean(0)]


def layer_scan(model, goals: list[str], harmful: list[str], n_dirs: int = 4, dose: float = 0.15,
               seed: int = 0, batch_size: int = 16) -> dict:
    """First-token refusal score (log-odds) of JBB goals with an isotropic random direction of
    `dose` x the layer's mean residual norm added from the end of the user's message on, at
    every layer; per layer the shift against the unsteered score, per direction."""
    layers = list(range(model.cfg.n_layers))
    norms = layer_norms(model, harmful, layers, batch_size)
    dirs = random_directions(n_dirs, model.cfg.d_model, seed)
    dev = model.cfg.device
    settings = {"unsteered": Steering()}
    for lay, norm in zip(layers, norms):
        settings.update({f"L{lay}_{i}": addition(dosed(x, dose, norm).to(dev), lay)
                         for i, x in enumerate(dirs)})
    logits = next_token_logits_grid(model, chat_prompts(model.tokenizer, goals), settings, batch_size)
    ids = refusal_token_ids(model.tokenizer)
    score = {k: refusal_log_odds(v, ids).cpu().double() for k, v in logits.items()}
    base = score.pop("unsteered")
    per_layer = {str(lay): [float((score[f"L{lay}_{i}"] - base).mean()) for i in range(n_dirs)]
                 for lay in layers}
    return {"dose": dose, "unit": "mean resid_pre norm of harmful train prompts at each layer",
            "n_directions": n_dirs, "n_goals": len(goals), "seed": seed, "resid_norms": norms,
            "baseline_refusal_score": float(base.mean()), "shift": per_layer}


def _scan(out: Path, model_name: str) -> None:
    """The scan on the model as the audits loaded it (their resolved device and dtype)."""
    path = out / LAYER_SCAN_FILE
    if path.exists():
        return
    _log("layer scan: isotropic random directions at every layer, first decode step")
    cfg = read_json(out / "caa" / CONFIG_FILE)["config"]
    model = load_model(model_name, device=cfg["device"], dtype=cfg["dtype"])
    torch.set_grad_enabled(False)
    goals = [b.goal for b in load_jbb("harmful")]
    write_json(path, layer_scan(model, goals, instructions("harmful_train", 32, 0),
                                batch_size=cfg["batch_size"]))


def run_study(out: str | Path, scfg: StudyConfig = StudyConfig(), resume: bool = False) -> dict:
    """Both audits, the scan and the analysis; seconds per step in `DIR/study_timings.json`."""
    if not isinstance(scfg, StudyConfig):
        raise SteerlensError(f"run_study takes a StudyConfig; got {type(scfg).__name__}",
                             fix="pass StudyConfig(model=...) or use steerlens.study")
    checked = check_values({"out": Spec("out"), "resume": Spec("resume", bool)},
                           {"out": out, "resume": resume})
    out, resume = Path(checked["out"]), checked["resume"]
    model, scan = scfg.model, scfg.scan
    if out.exists() and not resume:
        raise SteerlensError(f"{out} exists", fix="pass --resume to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    secs = {}
    for sub, preset in RUNS.items():
        secs[sub] = _audit(out / sub, preset, scfg, resume)
    if scan:
        t = time.time()
        _scan(out, model)
        secs["layer_scan"] = time.time() - t
    result = analyse([out / s for s in RUNS], out / LAYER_SCAN_FILE)
    write_analysis(out, result)
    write_json(out / STUDY_TIMINGS_FILE, {"seconds": secs, "total": sum(secs.values())})
    return result


def main(argv: list[str] | None = None) -> int:
    """`steerlens study`: flags generated from `StudyConfig`, then where the study goes."""
    p = ArgumentParser(prog="python -m steerlens.audit.study", epilog=EPILOG,
                       description=__doc__.split("\n")[0])
    add_flags(p, StudyConfig)
    p.add_argument("--out", default="runs/library", action=OnceAction, help="study directory")
    p.add_argument("--resume", action="store_true", help="continue the study in --out")
    args = p.parse_args(argv)
    return cli_main(lambda: run_study(Path(args.out), config_of(StudyConfig, vars(args)), args.resume),
                    format_analysis)


if __name__ == "__main__":
    sys.exit(main())
