"""Audit a repeng control vector as it is deployed: train one on the embedded 0.5B's weights,
export it as GGUF, and run the as-deployed quick audit on it, timed.

    python experiments/deployed_demo.py            # trains, then audits (re-running resumes)

1. **Train** (repeng 0.4.0, `ControlVector.train` with its defaults: `method="pca_diff"`, unit
   rows; `export_gguf`). The model is the embedded Qwen2.5-Coder-0.5B-Instruct as steerlens
   caches it (the HF directory dequantised from its GGUF, which `AutoModelForCausalLM` loads).
   The contrast pairs are CAA's (Rimsky et al. 2024) `corrigible-neutral-HHH` A/B items, the 48
   the quick preset's CAA vector is built from (same split, sample and seed), each rendered with
   the model's chat template and answered with the matching letter (positive) or the other one
   (negative), as given (no answer-order balancing: what a repeng user feeding CAA's data does).
   Layers: blocks 6-19 of 24 (repeng numbering: the outputs of those blocks), a middle band as
   in repeng's examples (`range(-5, -18, -1)` of Mistral-7B's 32).
2. **Audit** `steerlens audit --vector FILE.gguf --protocol deployed --preset quick` at
   `--multipliers 0.5 1`: every layer in the file, every position, the coefficient in repeng's
   units (`set_control(v, c)` adds c times a unit row at each of the 14 layers). Against the
   0.5B's residual norms there (about 13 at block 6 to 38 at block 18: docs/caa_layer_scan.json)
   coefficient 1 adds 3-8 % of the norm per layer, up to 14 in all where the rows align, about
   four times the CAA quick dose at one layer (0.15 x 24.5 = 3.7); the script prints the
   measured ratios (training.json). Departures from the quick preset, each for a reason:
   `--n-null-generate 20` (the deployed null is the vector's own 20 matched random cells per
   coefficient, the fewest with which a verdict can rest on the outcome: the preset's 14 random
   plus 6 label-shuffled do not apply to a file), `--n-null-screen 0` (the 20 generated nulls
   are screened too), `--batch-size 30` (each deployed setting decodes alone, so all 30 goals
   in one batch). Anything after `--` is passed on to the audit and replaces the same flag.
3. **Reuse**: the refusal direction and subspace are copied from the committed 0.5B run
   `results/library-0.5b/caa` when every setting they depend on matches (model, layer, the
   refusal sizes, stride, positions, filter, seed, system, subspace options, the data files'
   sha256); else the audit computes them. They were computed there at batch size 16.

Writes WORK/training.json (the vector's record and training time), WORK/NAME.gguf, the run
WORK/audit/ and WORK/demo.json (the audit's time, summed over its sessions). Re-running skips
a trained vector and resumes the audit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REFUSAL_SOURCE = ROOT / "results" / "library-0.5b" / "caa"
REFUSAL_COPIED = ("refusal.json", "refusal_direction.safetensors",
                  "refusal_subspace.safetensors", "subspace.json")
# the config fields the refusal direction and subspace are computed from (audit.reuse), less
# the batch size (float rounding only)
REFUSAL_FIELDS = ("model", "layer", "n_refusal_train", "n_refusal_val", "refusal_layer_stride",
                  "refusal_positions", "filter_refusal_prompts", "seed", "system", "n_category", "k")
REFUSAL_SPLITS = tuple(f"refusal_direction/splits/{n}.json" for n in
                       ("harmful_train", "harmless_train", "harmful_val", "harmless_val"))
AUDIT_DEFAULTS = ["--preset", "quick", "--protocol", "deployed", "--n-null-generate", "20",
                  "--n-null-screen", "0", "--batch-size", "30"]


def repeng_module():
    """repeng 0.4.0, which annotates with `np.float_` (removed in NumPy 2)."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import repeng

    return repeng


def contrast_pairs(tokenizer, behaviour: str, n_items: int, seed: int) -> list:
    """CAA A/B items as repeng `DatasetEntry`s: the chat text answered with the matching letter
    (positive) and with the other (negative); the items the audit's CAA stage samples."""
    from steerlens.core.prompts import chat_text
    from steerlens.datasets.behaviours import behaviour_split
    from steerlens.methods.refusal import sample

    entry = repeng_module().DatasetEntry
    items = behaviour_split(behaviour, "generate")
    items = [items[i] for i in sample(range(len(items)), n_items, seed)]
    return [entry(chat_text(tokenizer, it.question, assistant=f"({it.matching}"),
                  chat_text(tokenizer, it.question, assistant=f"({it.not_matching}"))
            for it in items]


def load_hf(model: str):
    """The model's HF weights and tokenizer (an embedded key: steerlens' converted cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerlens.core.models import resolve_model_path

    path = resolve_model_path(model)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return hf, AutoTokenizer.from_pretrained(path)


def train_vector(hf, tok, pairs: list, layers: list[int], method: str = "pca_diff",
                 batch_size: int = 32):
    """repeng's `ControlVector.train` (its layer numbering: the output of block N)."""
    return repeng_module().ControlVector.train(hf, tok, pairs, hidden_layers=layers,
                                               method=method, batch_size=batch_size)


@torch.no_grad()
def residual_norms(hf, tok, texts: list[str], layers: list[int]) -> dict[int, float]:
    """Mean norm of the output of each block in `layers` at the texts' last token (where repeng
    reads), one text at a time (no padding)."""
    sums = dict.fromkeys(layers, 0.0)
    for t in texts:
        hs = hf(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states
        for lay in layers:
            sums[lay] += float(hs[lay + 1][0, -1].norm())
    return {lay: s / len(texts) for lay, s in sums.items()}


def dose_table(directions: dict, norms: dict[int, float], multipliers: list[float]) -> dict:
    """Per layer: the row's norm, the residual norm, and coefficient x row / residual; and the
    norm of the rows' sum (what they add in all where they align)."""
    rows = {lay: float(np.linalg.norm(v)) for lay, v in directions.items()}
    total = float(np.linalg.norm(sum(directions.values())))
    return {"row_norm": rows, "resid_norm": norms, "sum_of_rows_norm": total,
            "fraction_per_layer": {f"{c:g}": {lay: c * rows[lay] / norms[lay] for lay in rows}
                                   for c in multipliers}}


def train_stage(args, work: Path) -> tuple[Path, dict]:
    """Train and export the vector once (its record in training.json); later runs reuse it."""
    gguf, record = work / f"{args.behaviour}.gguf", work / "training.json"
    if gguf.is_file() and record.is_file():
        print(f"vector: {gguf} (trained before; {record})")
        return gguf, json.loads(record.read_text())
    t0 = time.perf_counter()
    hf, tok = load_hf(args.model)
    loaded = time.perf_counter() - t0
    pairs = contrast_pairs(tok, args.behaviour, args.n_items, args.seed)
    t1 = time.perf_counter()
    vec = train_vector(hf, tok, pairs, args.layers, args.method)
    seconds = time.perf_counter() - t1
    norms = residual_norms(hf, tok, [p.positive for p in pairs[:16]], args.layers)
    work.mkdir(parents=True, exist_ok=True)
    vec.export_gguf(str(gguf))
    rec = {"model": args.model, "behaviour": args.behaviour, "n_pairs": len(pairs),
           "method": args.method, "layers_repeng": args.layers, "gguf": str(gguf),
           "repeng": _version("repeng"), "seconds_load": round(loaded, 1),
           "seconds_train": round(seconds, 1), "threads": torch.get_num_threads(),
           **dose_table(vec.directions, norms, args.multipliers)}
    record.write_text(json.dumps(rec, indent=1))
    print(f"trained {gguf} on {len(pairs)} pairs at blocks {span(args.layers)} in {seconds:.1f} s "
          f"(model load {loaded:.1f} s, {torch.get_num_threads()} threads)")
    return gguf, rec


def span(layers: list[int]) -> str:
    """`6-19` for a contiguous run of layers, else the list."""
    run = list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}-{layers[-1]}" if list(layers) == run else ",".join(map(str, layers))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def flag_groups(argv: list[str]) -> dict[str, list[str]]:
    """Flags with their values, by flag (a later flag replaces an earlier one)."""
    out: dict[str, list[str]] = {}
    flag = None
    for a in argv:
        if a.startswith("--"):
            flag = a
            out[flag] = []
        elif flag is None:
            raise SystemExit(f"audit argument {a!r} has no flag")
        else:
            out[flag].append(a)
    return out


def audit_argv(args, gguf: Path, out: Path) -> list[str]:
    """The audit's command line: the defaults, the model, vector and coefficients, the extras."""
    given = [*AUDIT_DEFAULTS, "--model", args.model, "--vector", str(gguf), "--out", str(out),
             "--multipliers", *[f"{c:g}" for c in args.multipliers], *args.audit_args]
    return [x for flag, vals in flag_groups(given).items() for x in (flag, *vals)]


def refusal_mismatch(argv: list[str], source: Path) -> list[str]:
    """What differs between this audit and `source` among what the refusal direction and
    subspace are computed from ([] when `source` can stand in for them)."""
    from steerlens.audit.config import build_parser, config_from_args
    from steerlens.datasets.loaders import data_dir, file_sha256

    if not all((source / f).is_file() for f in (*REFUSAL_COPIED, "config.json", "manifest.json")):
        return [f"{source} holds no finished run"]
    cfg = config_from_args(build_parser().parse_args(argv))[0]
    old = json.loads((source / "config.json").read_text())["config"]
    mine = json.loads(json.dumps(cfg.to_json()))
    diff = [f for f in REFUSAL_FIELDS if mine.get(f) != old.get(f)]
    sha = json.loads((source / "manifest.json").read_text()).get("data_sha256", {})
    return diff + [s for s in REFUSAL_SPLITS if sha.get(s) != file_sha256(data_dir() / s)]


def seed_refusal(argv: list[str], out: Path, source: Path = REFUSAL_SOURCE) -> str | None:
    """Copy `source`'s refusal direction and subspace into a new run directory when they were
    computed from the same settings and data; the audit then skips those stages. Returns the
    source used, or None (with the reason printed)."""
    if (out / "config.json").exists() or any((out / f).exists() for f in REFUSAL_COPIED):
        return None  # a started run keeps what it has
    diff = refusal_mismatch(argv, source)
    if diff:
        print(f"refusal direction: computed by the audit ({source} differs in {', '.join(diff)})")
        return None
    out.mkdir(parents=True, exist_ok=True)
    for f in REFUSAL_COPIED:
        shutil.copyfile(source / f, out / f)
    print(f"refusal direction and subspace: copied from {source} (same settings and data)")
    return str(source)


def audit_stage(args, gguf: Path, work: Path) -> dict:
    """Run (or resume) the audit in a subprocess, timed; demo.json adds up its sessions."""
    out, record = work / "audit", work / "demo.json"
    argv = audit_argv(args, gguf, out)
    resumed = (out / "config.json").exists()
    seeded = seed_refusal(argv, out)
    cmd = ["steerlens", "audit", *argv, *(["--resume"] if resumed else [])]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT).returncode
    seconds = round(time.perf_counter() - t0, 1)
    rec = json.loads(record.read_text()) if resumed and record.is_file() else {
        "command": " ".join(cmd), "refusal_copied_from": seeded, "run": str(out), "sessions": []}
    rec["sessions"].append({"seconds": seconds, "returncode": rc, "resumed": resumed,
                            "threads": torch.get_num_threads()})
    rec["seconds_total"] = round(sum(x["seconds"] for x in rec["sessions"]), 1)
    record.write_text(json.dumps(rec, indent=1))
    return rec


def report(train: dict, audit: dict) -> None:
    """Where the answer is, and what each step took."""
    print(f"\ntraining: {train['seconds_train']} s ({train['n_pairs']} pairs, "
          f"blocks {span(train['layers_repeng'])})")
    for c, fr in train["fraction_per_layer"].items():
        vals = list(fr.values())
        print(f"  x{c}: {min(vals):.3f}-{max(vals):.3f} of the residual norm per layer")
    last = audit["sessions"][-1]
    print(f"audit: {audit['seconds_total']} s over {len(audit['sessions'])} session(s) "
          f"(this one {last['seconds']} s, exit {last['returncode']})")
    run = Path(audit["run"])
    print(f"answer: {run / 'summary.json'}, {run / 'report.html'}, stages in "
          f"{run / 'timings.json'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--behaviour", default="corrigible-neutral-HHH")
    p.add_argument("--n-items", type=int, default=48)
    p.add_argument("--layers", type=int, nargs="+", default=list(range(6, 20)),
                   help="repeng's hidden_layers (the outputs of these blocks)")
    p.add_argument("--method", default="pca_diff", choices=("pca_diff", "pca_center"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--work", default="runs/deployed-demo", help="where everything is written")
    p.add_argument("--train-only", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.audit_args = argv[cut + 1:]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    gguf, train = train_stage(args, work)
    if args.train_only:
        return 0
    audit = audit_stage(args, gguf, work)
    report(train, audit)
    return audit["sessions"][-1]["returncode"]


if __name__ == "__main__":
    sys.exit(main())
