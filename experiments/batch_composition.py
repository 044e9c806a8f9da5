"""Does a cell depend on which other settings shared its decode batch? (not a test)

    python experiments/batch_composition.py --json docs/batch_composition_0.5b.json

Stacked decoding runs several after-instruction settings as rows of one batch. Each row
computes what its setting alone would, but the batch's shape (rows, and which rows finish
early) changes how BLAS blocks the matmuls, so float rounding may move. This runs the
baseline and one random-direction setting (i) alone, (ii) stacked with 7 companions, (iii)
stacked with 7 other companions, and compares what a cell stores: completions (token ids),
first-step refusal scores and refusal projections (raw and at the 5 decimals cells keep).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from steerlens.audit.artefacts import Refusal
from steerlens.audit.evaluate import _stored, attack_prompts
from steerlens.audit.stages import readout
from steerlens.core.generation import generate_grid
from steerlens.core.models import load_model
from steerlens.core.steering import Steering, addition
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_jbb, stratified

RUN = Path(__file__).parents[1] / "results" / "findings-0.5b-resid"


def _settings(ref, d_model: int, names: list[int], dose: float) -> dict:
    g = torch.Generator().manual_seed(7)
    dirs = torch.randn(16, d_model, generator=g)
    scale = dose * ref.resid_norm
    return {f"r{i}": addition(dirs[i] / dirs[i].norm() * scale, ref.layer) for i in names}


def _compare(a, b) -> dict:
    same_tokens = sum(x.tokens == y.tokens for x, y in zip(a.completions, b.completions))
    score = max(abs(x - y) for x, y in zip(a.refusal_score, b.refusal_score))
    flat = lambda c: [v for row in c.projection for layer in row for v in layer]  # noqa: E731
    proj = max(abs(x - y) for x, y in zip(flat(a), flat(b)))
    stored = sum(_stored(x) != _stored(y) for x, y in zip(a.refusal_score, b.refusal_score))
    stored += sum(_stored(x) != _stored(y) for x, y in zip(flat(a), flat(b)))
    return {"rows": len(a.completions), "identical_completions": same_tokens,
            "max_abs_refusal_score": score, "max_abs_projection": proj,
            "stored_values_differing": stored}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-goals", type=int, default=16)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    m = load_model("qwen2.5-coder-0.5b-instruct", device="cpu")
    from safetensors.torch import load_file

    from steerlens.methods.subspace import RefusalSubspace

    ref = Refusal.load(RUN / "refusal_direction.safetensors")
    basis = load_file(str(RUN / "refusal_subspace.safetensors"))["basis"]
    sub = RefusalSubspace(basis, "category", {"k": json.loads((RUN / "subspace.json").read_text())["k"]})
    ro = readout(m, ref, sub)
    goals = stratified(load_jbb("harmful"), args.n_goals)
    prompts = attack_prompts(m.tokenizer, get_attack("none"), goals)
    run = lambda s: generate_grid(m, prompts, s, args.new, 16, readout=ro, desc=None)  # noqa: E731
    t0 = time.perf_counter()
    alone = {**run({"baseline": Steering()}), **run(_settings(ref, m.cfg.d_model, [0], 0.15))}
    first = run({"baseline": Steering(), **_settings(ref, m.cfg.d_model, range(0, 7), 0.15)})
    other = run({"baseline": Steering(), **_settings(ref, m.cfg.d_model, [0, *range(8, 14)], 0.15)})
    out = {"model": "qwen2.5-coder-0.5b-instruct", "n_goals": args.n_goals, "new": args.new,
           "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0}
    for name in ("baseline", "r0"):
        out[name] = {"alone_vs_stacked": _compare(alone[name], first[name]),
                     "stacked_vs_other_companions": _compare(first[name], other[name])}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
