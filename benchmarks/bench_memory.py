"""Peak resident memory of loading and running the embedded model through steerlens (not a test).

    python benchmarks/bench_memory.py [--model KEY] [--n-act 32] [--n-gen 16] [--new 24]
    python benchmarks/bench_memory.py --n-act 2 --n-gen 2 --new 4  # smoke

Prints peak RSS after loading, after activation collection (every layer, the tail positions),
and after steered generation (baseline plus one addition), as multiples of the fp32 weight size
(target: about 1.3x, i.e. never two copies of the weights).
"""

from __future__ import annotations

import argparse
import json
import resource

import torch

from steerlens.core.activations import collect_resid
from steerlens.core.generation import generate_grid
from steerlens.core.models import load_model
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import Steering, addition
from steerlens.datasets.loaders import load_instructions, load_jbb


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n-act", type=int, default=32, help="instructions for activation collection")
    ap.add_argument("--n-gen", type=int, default=16, help="JBB goals for generation")
    ap.add_argument("--new", type=int, default=24, help="new tokens")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    m = load_model(args.model, device="cpu")
    weights = sum(p.numel() * p.element_size() for p in m.original_model.parameters()) / 1e9
    out = {"weights_gb": weights, "after_load": peak_gb()}
    tok = m.tokenizer
    harm = chat_prompts(tok, [x.instruction for x in load_instructions("harmful_train")[: args.n_act]])
    collect_resid(m, harm, list(range(m.cfg.n_layers)), harm.tail_positions(), desc=None)
    out["after_activations"] = peak_gb()
    goals = chat_prompts(tok, [g.goal for g in load_jbb("harmful")[: args.n_gen]])
    v = torch.randn(m.cfg.d_model)
    generate_grid(m, goals, {"base": Steering(), "add": addition(v / v.norm() * 4, 12, 1.0)},
                  max_new_tokens=args.new, desc=None)
    out["after_generation"] = peak_gb()
    out["ratio"] = out["after_generation"] / weights
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
