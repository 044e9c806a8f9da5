"""Cost of the audit's early-stop rule vs generating every row to a fixed length (issue #17.4).

    python benchmarks/bench_stop.py [--model KEY] [--n 32] [--new 64] [--json benchmarks/results_stop.json]
    python benchmarks/bench_stop.py --n 2 --new 4 --dir-n 4 --json /tmp/stop.json  # smoke

The audit stops a row once the judge's verdict is final *and* a refusal
(`steerlens.audit.evaluate.refusal_stop`); compliant rows run on to `max_new_tokens`. The reference
generates every row until EOS or `max_new_tokens` (no judge stop). Both run `n` stratified JBB
goals, attack none, under the baseline and one steering setting, with the refusal_string judge.
The steering setting subtracts the difference-in-means refusal direction (harmful minus
harmless `harmful_train`/`harmless_train` instructions, last post-instruction token) at the
middle layer, after the instruction, so both refused and compliant rows occur.

Reports wall seconds and generated tokens of each, and whether the verdicts are identical
(they must be: the rule only stops rows whose verdict can no longer change); exits 1 if not.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch

from steerlens.audit.evaluate import attack_prompts, refusal_stop
from steerlens.core.generation import generate_grid
from steerlens.core.models import load_model
from steerlens.core.steering import Steering, addition
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_instructions, load_jbb, stratified
from steerlens.judges.registry import get_judge
from steerlens.methods.refusal import refusal_activations


def refusal_subtraction(m, layer: int, n: int) -> Steering:
    """Minus the difference in means (harmful - harmless) at `layer`, after the instruction."""
    harmful = [x.instruction for x in load_instructions("harmful_train")[:n]]
    harmless = [x.instruction for x in load_instructions("harmless_train")[:n]]
    acts = refusal_activations(m, harmful, harmless, [layer])
    r = acts.means()[-1, 0]  # last post-instruction position
    return addition(-r.to(m.cfg.device), layer, 1.0)


def run_mode(m, prompts, goals, settings, judge, decided, args) -> dict:
    """Generate every setting under one stop rule; wall seconds, tokens, verdicts."""
    t = time.perf_counter()
    cells = generate_grid(m, prompts, settings, args.new, args.batch_size, decided=decided,
                          desc=None)
    wall = time.perf_counter() - t
    texts = [g.goal for g in goals]
    out = {"wall_s": wall, "new_tokens": 0, "settings": {}}
    for name, cell in cells.items():
        comps = cell.completions
        jb = judge.judge(texts, [c.text for c in comps])
        n_tok = sum(len(c.tokens) for c in comps)
        out["new_tokens"] += n_tok
        out["settings"][name] = {"new_tokens": n_tok, "jailbroken": jb,
                                 "stopped": dict(Counter(c.stopped for c in comps))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=32, help="JBB goals (stratified over categories)")
    ap.add_argument("--new", type=int, default=64, help="max new tokens")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dir-n", type=int, default=32,
                    help="harmful and harmless instructions for the steering direction")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default="benchmarks/results_stop.json")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    m = load_model(args.model, device=args.device)
    goals = stratified(load_jbb("harmful"), args.n)
    prompts = attack_prompts(m.tokenizer, get_attack("none"), goals)
    judge = get_judge("refusal_string")
    layer = m.cfg.n_layers // 2
    settings = {"baseline": Steering(), "minus_refusal": refusal_subtraction(m, layer, args.dir_n)}
    generate_grid(m, prompts.subset([0]), settings, 2, 1, desc=None)  # warm-up
    fixed = run_mode(m, prompts, goals, settings, judge, None, args)
    stop = run_mode(m, prompts, goals, settings, judge, refusal_stop(judge), args)
    same = all(fixed["settings"][k]["jailbroken"] == stop["settings"][k]["jailbroken"]
               for k in settings)
    res = {"model": args.model, "device": args.device, "n_goals": len(goals),
           "max_new_tokens": args.new, "batch_size": args.batch_size, "judge": "refusal_string",
           "steering_layer": layer, "early_stop": stop, "fixed_length": fixed,
           "verdicts_identical": same, "time_ratio": stop["wall_s"] / fixed["wall_s"],
           "token_ratio": stop["new_tokens"] / max(fixed["new_tokens"], 1)}
    with open(args.json, "w") as f:
        json.dump(res, f, indent=1)
    print(f"early stop: {stop['wall_s']:.1f} s, {stop['new_tokens']} tokens | fixed length: "
          f"{fixed['wall_s']:.1f} s, {fixed['new_tokens']} tokens | {res['time_ratio']:.2f}x time, "
          f"{res['token_ratio']:.2f}x tokens | verdicts identical: {same} "
          f"({len(goals)} goals x {len(settings)} settings, {args.new} max new)")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
