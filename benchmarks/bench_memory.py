"""Peak resident memory of loading and running the embedded model through steerlens (not a test).

    python benchmarks/bench_memory.py [--model KEY]

Prints peak RSS after loading, after activation collection, and after steered generation,
as multiples of the fp32 weight size (target: about 1.3x, i.e. never two copies of the weights).
"""

from __future__ import annotations

import argparse
import json
import resource

import torch


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    args = ap.parse_args()

    from steerlens.activations import collect_resid
    from steerlens.data import load_instructions, load_jbb
    from steerlens.generation import generate_grid
    from steerlens.models import load_model
    from steerlens.prompts import chat_token_rows, header_ids
    from steerlens.steering import Steering, addition

    torch.set_grad_enabled(False)
    m = load_model(args.model, device="cpu")
    weights = sum(p.numel() * p.element_size() for p in m.original_model.parameters()) / 1e9
    out = {"weights_gb": weights, "after_load": peak_gb()}
    tok = m.tokenizer
    harm = [x.instruction for x in load_instructions("harmful_train")[:32]]
    rows, ns = chat_token_rows(tok, harm, include_header=False)
    collect_resid(m, rows, list(range(m.cfg.n_layers)), list(range(-ns, 0)),
                  prefix=header_ids(tok), desc=None)
    out["after_activations"] = peak_gb()
    goals = [g.goal for g in load_jbb("harmful")[:16]]
    rows, ns = chat_token_rows(tok, goals, include_header=False)
    v = torch.randn(m.cfg.d_model)
    generate_grid(m, header_ids(tok), [r[:-ns] for r in rows], rows[0][-ns:],
                  {"base": Steering(), "add": addition(v / v.norm() * 4, 12, 1.0)},
                  max_new_tokens=24, desc=None)
    out["after_generation"] = peak_gb()
    out["ratio"] = out["after_generation"] / weights
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
