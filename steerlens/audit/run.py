"""`python -m steerlens.audit`: does this steering vector weaken refusals, why, and what fixes it?

Stages, in order (each writes its artefact atomically and is skipped when it is there, so a
killed run resumes where it stopped and reaches the same bytes):
  config     validate the arguments, load the model, check layers and vector files, write config.json
  refusal    Arditi's filter, difference in means and selection     -> refusal_direction.safetensors
  subspace   contrastive refusal subspace, k by ablation effect     -> refusal_subspace.safetensors
  polarity   answer-polarity direction (neutral yes/no questions)   -> polarity_direction.safetensors
  vectors    balanced CAA vectors and label-shuffled nulls          -> vectors/*.safetensors
  dose       dose unit; behaviour effect of each vector per dose    -> dose.json
  overlap    cosine and subspace fraction per vector and layer      -> overlap.json
  settings   +v, -v, ⊥1, ⊥k, nulls, refusal validation              -> settings.json
  grid       JBB goals x attacks x settings: generated, judged, screened -> cells/*.json
  harm       the harm judge over every completion (second outcome)  -> judgements/harm.json
  mediation  (--mediation) share of each +v's and null's first-token effect through the
             refusal direction and subspace, by layer band           -> mediation.json
  generated  (--mediation-generated) each +v's share of its generated-outcome effects
             through the refusal direction and subspace (clamped cells)
                                                               -> mediation_generated.json
  summary    verdicts, null percentiles, power, BH over all tests   -> summary.json
  report     the dashboard                                           -> report.html

Model-level artefacts (refusal direction and dose unit, subspace, polarity direction, the
cells no audited vector touches, harm labels) come from the reuse store when an earlier run
computed exactly the same thing (`audit.reuse`; reuse.json says what was reused; --no-reuse recomputes).
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

from steerlens._version import __version__
from steerlens.audit.config import AuditConfig, RunOptions, audit_config, build_parser, run_options
from steerlens.audit.grid import grid_stage
from steerlens.audit.log import log as _log
from steerlens.audit.reuse import open_reuse
from steerlens.audit.validation import null_warnings, validate
from steerlens.errors import SteerlensError, cli_main
from steerlens.rundir import RunStore
from steerlens.schema import CONFIG_FILE, MANIFEST_FILE, REPORT_FILE, TIMINGS_FILE


def check_not_overwriting(opts: RunOptions) -> None:
    """Refuse to overwrite a finished or partial run unless asked to resume it."""
    if RunStore(opts.out).exists(CONFIG_FILE) and not opts.resume:
        raise SteerlensError(f"run directory {opts.out} already holds a run",
                             fix="pass --resume to continue it, or choose another --out")


def prepare_run_dir(cfg: AuditConfig, opts: RunOptions) -> RunStore:
    """Refuse to resume a run made with other settings (the resolved config is compared)."""
    store = RunStore(opts.out)
    check_not_overwriting(opts)
    if store.exists(CONFIG_FILE):
        old = store.read_json(CONFIG_FILE)
        if old.get("hash") != cfg.hash:
            diff = cfg.differs_from(old.get("config", {}))
            raise SteerlensError(f"--resume with a different configuration ({', '.join(diff)})",
                                 fix="resume with the original arguments or choose a new --out")
    return store


def load_checked(cfg: AuditConfig, opts: RunOptions):
    """Load the model, resolve device/dtype/batch size, and run every check that needs only the
    model's shape, before any forward pass."""
    from steerlens.audit.artefacts import load_vector_files
    from steerlens.core.hooks import check_layers
    from steerlens.core.memory import auto_batch_size
    from steerlens.core.models import default_device, load_model, parse_dtype

    device = opts.device or default_device()
    dtype = str(parse_dtype(opts.dtype, device)).removeprefix("torch.")
    _log(f"loading {cfg.model} ({device}, {dtype})")
    model = load_model(cfg.model, device=device, dtype=dtype)
    torch.set_grad_enabled(False)
    if cfg.layer is not None:
        check_layers(model, [cfg.layer])
    files = load_vector_files(cfg, model)
    bs = opts.batch_size or auto_batch_size(model, 640 + cfg.max_new_tokens,
                                            cap=64 if device.startswith("cuda") else 16)
    return model, cfg.resolved(device, dtype, bs), files


def manifest(cfg: AuditConfig, model) -> dict:
    import transformer_lens
    import transformers

    from steerlens.datasets.loaders import data_dir, file_sha256

    files = sorted(p for p in data_dir().rglob("*") if p.suffix in (".json", ".csv"))
    return {"steerlens": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "4.x"),
            "python": platform.python_version(), "model": cfg.model,
            "d_model": model.cfg.d_model, "n_layers": model.cfg.n_layers,
            "data_sha256": {str(p.relative_to(data_dir())): file_sha256(p) for p in files}}


def check_fixes(cfg: AuditConfig, fixes: tuple[str, ...]) -> None:
    """`--fixes`: known fix names, on an audit whose vectors act at one layer (before any model)."""
    if not fixes:
        return
    from steerlens.audit.fixes import MitigateConfig
    from steerlens.audit.mitigate import check_config

    check_config(MitigateConfig(mitigations=tuple(fixes)))
    if cfg.protocol == "deployed":
        raise SteerlensError("--fixes with --protocol deployed: the fixes act at one layer after "
                             "the instruction, a deployed file at every layer",
                             fix="audit the file under --protocol caa with --fixes, or drop --fixes")


class _Clock:
    """Seconds per stage of this session (timings.json; not a result: never compared)."""

    def __init__(self):
        self.t0, self.stages = time.time(), {}

    def __call__(self, name: str, fn):
        t = time.time()
        out = fn()
        self.stages[name] = round(time.time() - t, 2)
        return out

    def record(self, before: dict | None = None) -> dict:
        """This session's seconds; a resumed run keeps the earlier sessions' records."""
        rec = {"seconds_this_session": time.time() - self.t0, "stages": self.stages}
        if before:
            earlier = before.pop("earlier_sessions", [])
            rec["earlier_sessions"] = [*earlier, before]
        return rec


def run_audit(cfg: AuditConfig, opts: RunOptions) -> dict:
    """Run (or resume) the whole audit and return the summary."""
    from steerlens.audit import stages, vector_stages
    from steerlens.audit.polarity import polarity_stage

    validate(cfg)
    check_fixes(cfg, opts.fixes)
    for line in null_warnings(cfg):
        _log(line)
    check_not_overwriting(opts)
    model, cfg, files = load_checked(cfg, opts)
    store = prepare_run_dir(cfg, opts)
    store.write_json(CONFIG_FILE, {"hash": cfg.hash, "config": cfg.to_json()})
    clock = _Clock()
    torch.manual_seed(cfg.seed)
    reuse = clock("reuse key", lambda: open_reuse(model, cfg.device, cfg.dtype, opts.reuse))
    ref = clock("refusal", lambda: stages.refusal_stage(store, model, cfg, reuse))
    sub = clock("subspace", lambda: stages.subspace_stage(store, model, cfg, ref, reuse))
    pol = clock("polarity", lambda: polarity_stage(store, model, cfg, reuse))
    vectors = clock("vectors", lambda: vector_stages.vector_stage(store, model, cfg, ref, files, pol))
    dose = clock("dose", lambda: vector_stages.dose_stage(store, model, cfg, ref, vectors))
    vector_stages.overlap_stage(store, ref, sub, vectors, pol)
    settings = stages.settings_stage(store, model, cfg, ref, sub, vectors, dose["scale"])
    clock("grid", lambda: grid_stage(store, model, cfg, opts, settings,
                                     stages.readout(model, ref, sub), reuse, dose["scale"]))
    if opts.harm_judge:
        clock("harm", lambda: stages.harm_stage(store, model, reuse))
    if opts.mediation:
        from steerlens.audit.mediation import mediation_stage

        clock("mediation", lambda: mediation_stage(store, model, cfg, ref, sub, settings))
    if opts.mediation_generated:
        from steerlens.audit.generated import generated_stage

        clock("mediation (generated)", lambda: generated_stage(
            store, model, cfg, ref, sub, vectors, dose["scale"], opts.harm_judge))
    reuse.write_record(store)
    summary = stages.summary_stage(store)
    store.write_json(MANIFEST_FILE, manifest(cfg, model))
    if opts.fixes:
        from steerlens.audit.fixes import MitigateConfig
        from steerlens.audit.mitigate import run_mitigate

        clock("fixes", lambda: run_mitigate(store.root, MitigateConfig(mitigations=opts.fixes), model=model))
    before = store.read_json(TIMINGS_FILE) if store.exists(TIMINGS_FILE) else None
    store.write_json(TIMINGS_FILE, clock.record(before))
    if opts.report:
        from steerlens.results.report import write_report

        write_report(opts.out)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = run_options(**vars(args))
    return cli_main(lambda: run_audit(audit_config(**vars(args)), opts),
                    lambda summary: _answer(summary, opts),
                    interrupted="finished cells are saved, rerun with --resume")


def _answer(summary: dict, opts: RunOptions) -> str:
    """The answer, and where the run directory and its report are."""
    from steerlens.results.text import format_answer

    return (format_answer(summary) + f"\n\nrun directory: {opts.out}"
            + ("" if not opts.report else f"  (report: {Path(opts.out) / REPORT_FILE})"))


if __name__ == "__main__":
    sys.exit(main())
