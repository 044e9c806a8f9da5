"""`python -m steerlens.audit`: does this steering vector weaken refusals, why, and what fixes it?

Pipeline: refusal direction (+ subspace) -> CAA vectors -> per-layer overlap -> evaluation grid
(JBB goals x attacks x steering settings, judged) -> statistics -> HTML report. Every stage
writes its result atomically into the run directory and is skipped when it is already
there, so a killed run resumes where it stopped and reaches the same final results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

from steerlens import __version__
from steerlens.errors import SteerlensError
from steerlens.store import atomic_save_tensor, read_json, write_json

PRESETS = {
    # Sized to finish in about 5 minutes on a 2-core CPU with the embedded 0.5B.
    "quick": dict(behaviours=["sycophancy", "survival-instinct", "corrigible-neutral-HHH"],
                  attacks=["none", "refusal_suppression"], multipliers=[8.0], n_goals=10,
                  n_benign=6, n_caa_items=24, n_refusal_train=24, n_refusal_val=8,
                  refusal_layer_stride=2, max_new_tokens=24, n_behaviour_test=12, k=None),
    # The paper's grid: meant for a GPU.
    "paper": dict(behaviours=["coordinate-other-ais", "corrigible-neutral-HHH", "hallucination",
                              "myopic-reward", "survival-instinct", "sycophancy", "refusal"],
                  attacks=["none", "prefix_injection", "refusal_suppression", "aim",
                           "gptfuzzer-34"],
                  multipliers=[4.0, 8.0], n_goals=100, n_benign=100, n_caa_items=300,
                  n_refusal_train=128, n_refusal_val=32, refusal_layer_stride=1,
                  max_new_tokens=64, n_behaviour_test=50, k=None),
}

# Keys whose value changes results: a resumed run must agree on all of them.
RESULT_KEYS = ("model", "dtype", "behaviours", "attacks", "multipliers", "n_goals", "n_benign",
               "n_caa_items", "n_refusal_train", "n_refusal_val", "refusal_layer_stride",
               "max_new_tokens", "n_behaviour_test", "k", "layer", "seed", "system", "vectors",
               "positions", "judge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m steerlens.audit",
        description="Audit CAA steering vectors for safety: overlap with the refusal direction "
                    "and subspace, jailbreak ASR under template attacks with and without "
                    "steering, and the orthogonalisation mitigations.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="sizes: quick (~5 min on a 2-core CPU) or paper (full grid, for a GPU)")
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                   help="embedded key, Hugging Face name, or local HF directory")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None,
                   help="float32 | bfloat16 | float16 (default: float32 on CPU, bfloat16 on CUDA); "
                        "geometry is always computed in float32/float64")
    p.add_argument("--behaviours", nargs="+", help="CAA behaviours to audit")
    p.add_argument("--vector", dest="vectors", nargs="+", default=[], metavar="FILE",
                   help="audit steering vectors from files in addition to the CAA behaviours: "
                        "safetensors (SteeringVector.save format or per-layer tensors) or "
                        "repeng/llama.cpp GGUF control vectors (.gguf)")
    p.add_argument("--layer", type=int, default=None,
                   help="steering layer (default: the selected refusal-direction layer)")
    p.add_argument("--multipliers", nargs="+", type=float, help="steering multipliers (m in ±m·v)")
    p.add_argument("--attacks", nargs="+",
                   help="none, prefix_injection, refusal_suppression, aim, gptfuzzer-<id>")
    p.add_argument("--judge", default="refusal_string", choices=["refusal_string"],
                   help="jailbreak judge (refusal-phrase matching on the response opening)")
    p.add_argument("--positions", default="after_instruction",
                   choices=["after_instruction", "all"], help="where steering vectors are added")
    p.add_argument("--n-goals", type=int, help="number of JBB harmful goals (max 100)")
    p.add_argument("--n-benign", type=int, help="JBB benign goals for the false-refusal rate")
    p.add_argument("--max-new-tokens", type=int, help="generation length (refusals show early)")
    p.add_argument("--k", type=int, default=None,
                   help="refusal-subspace dimension (default: chosen by explained variance)")
    p.add_argument("--system", default=None,
                   help="system prompt (default: the chat template's own default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=0,
                   help="prompts per forward batch (default 0: chosen from free memory, at most "
                        "16 on CPU and 64 on CUDA)")
    p.add_argument("--out", default="runs/audit", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (finished stages and cells are kept)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="run evaluation cells here (default) or as Ray actors")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--ray-workers", type=int, default=None,
                   help="Ray actors, each holding one model (default: one per GPU or CPU)")
    return p


def resolve_config(args: argparse.Namespace) -> dict:
    cfg = dict(PRESETS[args.preset])
    for key in ("behaviours", "multipliers", "attacks", "n_goals", "n_benign", "max_new_tokens"):
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    if args.k is not None:
        cfg["k"] = args.k
    cfg.update(preset=args.preset, model=args.model, device=args.device, dtype=args.dtype,
               vectors=[str(Path(v)) for v in args.vectors], layer=args.layer, seed=args.seed,
               system=args.system, out=args.out, batch_size=args.batch_size,
               positions=args.positions, judge=args.judge)
    return cfg


def validate_config(cfg: dict) -> None:
    """Fail before any model work on inputs that cannot be right."""
    from steerlens.attacks import get_attack
    from steerlens.data import CAA_BEHAVIOURS

    for b in cfg["behaviours"]:
        if b not in CAA_BEHAVIOURS:
            raise SteerlensError(f"unknown behaviour {b!r}",
                                 fix=f"choose from: {', '.join(CAA_BEHAVIOURS)}")
    for a in cfg["attacks"]:
        get_attack(a)
    for v in cfg["vectors"]:
        if not Path(v).is_file():
            raise SteerlensError(f"--vector file {v} not found", fix="check the path")
    if not 1 <= cfg["n_goals"] <= 100:
        raise SteerlensError(f"--n-goals {cfg['n_goals']} out of range", fix="use 1..100")
    if not 0 <= cfg["n_benign"] <= 100:
        raise SteerlensError(f"--n-benign {cfg['n_benign']} out of range", fix="use 0..100")
    if cfg["max_new_tokens"] < 1:
        raise SteerlensError("--max-new-tokens must be at least 1")
    if not cfg["multipliers"] or any(m == 0 for m in cfg["multipliers"]):
        raise SteerlensError("multipliers must be non-zero", fix="e.g. --multipliers 4 8")
    if not cfg["behaviours"] and not cfg["vectors"]:
        raise SteerlensError("nothing to audit", fix="name --behaviours or --vector files")


def config_hash(cfg: dict) -> str:
    sub = {k: cfg.get(k) for k in RESULT_KEYS}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:16]


def prepare_run_dir(cfg: dict, resume: bool) -> Path:
    out = Path(cfg["out"])
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = read_json(cfg_path)
        if not resume:
            raise SteerlensError(f"run directory {out} already holds a run",
                                 fix="pass --resume to continue it, or choose another --out")
        if old.get("config_hash") != config_hash(cfg):
            diff = [k for k in RESULT_KEYS if old.get(k) != cfg.get(k)]
            raise SteerlensError(f"--resume with a different configuration ({', '.join(diff)})",
                                 fix="resume with the original arguments or choose a new --out")
    write_json(cfg_path, {**cfg, "config_hash": config_hash(cfg)})
    return out


def _vector_names(cfg: dict) -> list[str]:
    return list(cfg["behaviours"]) + [f"file:{Path(v).stem}" for v in cfg["vectors"]]


def _stage(msg: str) -> None:
    print(f"[steerlens] {msg}", file=sys.stderr, flush=True)


def run_audit(cfg: dict, resume: bool = False, report: bool = True, backend: str = "local",
              address: str | None = None, workers: int | None = None) -> dict:
    """Run (or resume) the whole audit and return the summary."""
    from steerlens.attacks import get_attack
    from steerlens.data import load_caa, load_instructions, load_jbb
    from steerlens.directions import (
        RefusalDirection,
        SteeringVector,
        caa_vector,
        normalize_per_layer,
        select_refusal_direction,
    )
    from steerlens.evaluate import behaviour_effect, refusal_screen, steering_settings
    from steerlens.models import load_model
    from steerlens.steering import Steering
    from steerlens.summary import summarize

    validate_config(cfg)
    out = prepare_run_dir(cfg, resume)
    torch.manual_seed(cfg["seed"])
    t0 = time.time()
    _stage(f"loading {cfg['model']}")
    model = load_model(cfg["model"], device=cfg["device"], dtype=cfg["dtype"])
    torch.set_grad_enabled(False)
    n_layers = model.cfg.n_layers
    bs = cfg["batch_size"]
    if bs <= 0:
        from steerlens.memory import auto_batch_size

        cuda = str(model.cfg.device).startswith("cuda")
        bs = auto_batch_size(model, 640 + cfg["max_new_tokens"], cap=64 if cuda else 16)
        _stage(f"batch size {bs} (from free memory)")
    system = cfg["system"]

    # 1. Refusal direction (Arditi selection) on the Arditi train/val splits, never on JBB.
    rpath = out / "refusal_direction.safetensors"
    if rpath.exists():
        rd = RefusalDirection.load(rpath)
        rd.candidates = read_json(out / "refusal_candidates.json")
    else:
        _stage("refusal direction: difference in means + Arditi selection")
        nt, nv = cfg["n_refusal_train"], cfg["n_refusal_val"]
        hf = [x.instruction for x in load_instructions("harmful_train")[:nt]]
        hl = [x.instruction for x in load_instructions("harmless_train")[:nt]]
        hv = [x.instruction for x in load_instructions("harmful_val")[:nv]]
        lv = [x.instruction for x in load_instructions("harmless_val")[:nv]]
        stride = cfg["refusal_layer_stride"]
        layers = list(range(0, n_layers, stride))
        rd = select_refusal_direction(model, hf, hl, hv, lv, layers=layers,
                                      positions=None if stride == 1 else [-1], system=system,
                                      batch_size=bs)
        write_json(out / "refusal_candidates.json", rd.candidates)
        atomic_save_tensor(lambda p: rd.save(p, with_candidates=False), rpath)
    layer = cfg["layer"] if cfg["layer"] is not None else rd.layer
    if not 0 <= layer < n_layers:
        raise SteerlensError(f"--layer {layer} out of range", fix=f"use 0..{n_layers - 1}")
    refusal_at_layer = rd.at(layer) if layer in rd.layers else rd.direction
    _stage(f"refusal direction: layer {rd.layer}, position {rd.position}; steering layer {layer}")

    # 2. Refusal subspace at the steering layer (PCA of harmful acts centred on harmless mean).
    spath = out / "refusal_subspace.safetensors"
    if spath.exists():
        from safetensors.torch import load_file

        basis = load_file(str(spath))["basis"]
        sub_ev = read_json(out / "refusal_subspace.json")
    else:
        _stage("refusal subspace (PCA)")
        from steerlens.activations import collect_resid
        from steerlens.prompts import chat_token_rows, header_ids
        from steerlens.subspace import pca_subspace

        nt = cfg["n_refusal_train"]
        acts = {}
        for split in ("harmful_train", "harmless_train"):
            ins = [x.instruction for x in load_instructions(split)[:nt]]
            rows, _ = chat_token_rows(model.tokenizer, ins, system, include_header=False)
            acts[split] = collect_resid(model, rows, [layer], [rd.position],
                                        prefix=header_ids(model.tokenizer, system),
                                        batch_size=bs, desc=None)[:, 0, 0]
        sub = pca_subspace(acts["harmful_train"], acts["harmless_train"], k=cfg["k"])
        basis, sub_ev = sub.basis, sub.evidence
        write_json(out / "refusal_subspace.json", sub_ev)
        from safetensors.torch import save_file

        atomic_save_tensor(lambda p: save_file({"basis": basis.contiguous()}, p), spath)

    # 3. Steering vectors: CAA per behaviour (normalised to equal norm per layer) + files.
    names = _vector_names(cfg)
    caa_layers = sorted(set(rd.layers) | {layer})
    vecs: dict[str, SteeringVector] = {}
    raw: dict[str, SteeringVector] = {}
    for b in cfg["behaviours"]:
        vpath = out / "vectors" / f"{b}.raw.safetensors"
        if vpath.exists():
            raw[b] = SteeringVector.load(vpath)
        else:
            _stage(f"CAA vector: {b}")
            items = load_caa(b, "generate")[: cfg["n_caa_items"]]
            raw[b] = caa_vector(model, items, caa_layers, b, system=system, batch_size=bs)
            atomic_save_tensor(raw[b].save, vpath)
    vecs.update(normalize_per_layer(raw) if len(raw) > 1 else raw)
    for v in cfg["vectors"]:
        sv = SteeringVector.load(v)
        from steerlens.geometry import check_vector

        check_vector(sv.vectors, model.cfg.d_model, name=f"vector {v}")
        if layer not in sv.layers:
            raise SteerlensError(f"vector {v} has no layer {layer} (it has {sv.layers})",
                                 fix="pass --layer with one of the vector's layers")
        vecs[f"file:{Path(v).stem}"] = sv

    # 4. Overlap table: cosine with the refusal direction per layer; subspace fraction at layer.
    from steerlens.geometry import cosine, fraction_in_subspace

    overlap = {}
    for n in names:
        sv = vecs[n]
        per_layer = {str(lay): float(cosine(sv.at(lay), rd.at(lay))) for lay in sv.layers
                     if lay in rd.layers}
        overlap[n] = {"cosine_per_layer": per_layer,
                      "cosine": float(cosine(sv.at(layer), refusal_at_layer)),
                      "fraction_in_subspace": float(fraction_in_subspace(sv.at(layer), basis)),
                      "norm": float(sv.at(layer).norm())}
    write_json(out / "overlap.json", overlap)

    # 5. Settings, evaluation grid (cells written as they finish), screening, behaviour effect.
    device = model.cfg.device
    r_dev = refusal_at_layer.to(device)
    b_dev = basis.to(device)
    settings: dict[str, Steering] = {"baseline": Steering()}
    setting_meta = {"baseline": {"vector": None, "multiplier": 0.0, "kind": "baseline"}}
    for i, n in enumerate(names):
        for m in cfg["multipliers"]:
            tag = f"{n}@{m:g}"
            s = steering_settings(vecs[n].at(layer).to(device), layer, m, r_dev, b_dev,
                                  seed=cfg["seed"] + i, prefix=tag, positions=cfg["positions"])
            settings.update(s)
            for sname in s:
                setting_meta[sname] = {"vector": n, "multiplier": m,
                                       "kind": sname[len(tag):] or "+"}
    write_json(out / "settings.json", setting_meta)

    goals = load_jbb("harmful")[: cfg["n_goals"]]
    cells_dir = out / "cells"
    from steerlens.backends import Job, run_local, run_ray

    jobs: list[Job] = []
    kw = dict(max_new_tokens=cfg["max_new_tokens"], batch_size=bs, system=system)
    for a in cfg["attacks"]:
        get_attack(a)
        todo = [n for n in settings if not (cells_dir / f"{a}__{n}.json").exists()]
        # Chunks of settings, so finished cells land on disk early (and spread over workers).
        for i in range(0, len(todo), 4):
            jobs.append(Job(a, goals, {n: settings[n] for n in todo[i : i + 4]}, **kw))
    if cfg["n_benign"]:
        benign = load_jbb("benign")[: cfg["n_benign"]]
        todo = [n for n in settings if setting_meta[n]["kind"] in ("baseline", "+")
                and not (cells_dir / f"benign__{n}.json").exists()]
        if todo:
            jobs.append(Job("benign", benign, {n: settings[n] for n in todo}, **kw))
    if jobs:
        _stage(f"evaluation grid: {len(jobs)} jobs on the {backend} backend")
        if backend == "ray":
            runner = run_ray(jobs, cfg["model"], cfg["device"], cfg["dtype"],
                             address=address, workers=workers)
        else:
            runner = run_local(model, jobs)
        for job, res in runner:
            for n, r in res.items():
                write_json(cells_dir / f"{job.attack}__{n}.json",
                           {"attack": job.attack, "setting": n, **setting_meta[n],
                            "goals": [g.goal for g in job.goals],
                            "categories": [g.category for g in job.goals], **r})

    screen_path = out / "screen.json"
    if not screen_path.exists():
        _stage("logit refusal screening (no generation)")
        t = time.time()
        sc = refusal_screen(model, get_attack(cfg["attacks"][0]), goals, settings, bs, system)
        write_json(screen_path, {"attack": cfg["attacks"][0], "scores": sc})
        # Timings vary run to run, so they stay out of the results files.
        write_json(out / "timings.json", {"screen_seconds": time.time() - t})

    eff_path = out / "behaviour_effect.json"
    if not eff_path.exists() and cfg["behaviours"]:
        _stage("behaviour effect on the CAA A/B test sets")
        eff = {}
        for n in cfg["behaviours"]:
            items = load_caa(n, "test")[: cfg["n_behaviour_test"]]
            sub = {k: v for k, v in settings.items()
                   if k == "baseline" or (setting_meta[k]["vector"] == n
                                          and setting_meta[k]["kind"] in ("+", "-"))}
            eff[n] = behaviour_effect(model, items, sub, bs, system)
        write_json(eff_path, eff)

    summary = summarize(out)
    summary["seconds_this_session"] = time.time() - t0
    write_json(out / "manifest.json", {**manifest(cfg, model), "batch_size": bs})
    if report:
        from steerlens.report import write_report

        write_report(out)
    return summary


def manifest(cfg: dict, model) -> dict:
    import transformer_lens
    import transformers

    from steerlens.data import data_dir, file_sha256

    files = sorted(p for p in data_dir().rglob("*.json") if "caa" in p.parts or
                   "refusal_direction" in p.parts) + sorted(data_dir().rglob("*.csv"))
    return {"steerlens": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "4.x"),
            "python": platform.python_version(), "model": cfg["model"],
            "d_model": model.cfg.d_model, "n_layers": model.cfg.n_layers,
            "data_sha256": {str(p.relative_to(data_dir())): file_sha256(p) for p in files}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    print(json.dumps({k: v for k, v in cfg.items()}, indent=1), file=sys.stderr)
    try:
        summary = run_audit(cfg, resume=args.resume, report=not args.no_report,
                            backend=args.backend, address=args.address, workers=args.ray_workers)
    except SteerlensError as e:
        print(f"steerlens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("steerlens: interrupted; finished cells are saved, rerun with --resume",
              file=sys.stderr)
        return 130
    from steerlens.summary import format_table

    print(format_table(summary))
    print(f"\nrun directory: {cfg['out']}"
          + ("" if args.no_report else f"  (report: {Path(cfg['out']) / 'report.html'})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
