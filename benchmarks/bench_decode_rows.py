"""New tokens per second of stacked decoding against rows per decode step (not a test).

    python benchmarks/bench_decode_rows.py --json docs/decode_rows_0.5b.json

Rows = prompts per batch (16) x settings stacked. Every row decodes the same number of steps
(stop tokens are switched off), and the time of a 1-token run (prefill and first step) is
subtracted, so the rate is the decode steps' own. The grid's default is at most
`generation.STACK_ROWS` rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from steerlens.audit.evaluate import attack_prompts
from steerlens.core import generation
from steerlens.core.models import load_model
from steerlens.core.steering import addition
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_jbb, stratified


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[16, 64, 128, 256, 512])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    m = load_model("qwen2.5-coder-0.5b-instruct", device="cpu")
    generation.stop_token_ids = lambda tok: set()  # every row runs every step
    goals = stratified(load_jbb("harmful"), 16)
    prompts = attack_prompts(m.tokenizer, get_attack("none"), goals)
    g = torch.Generator().manual_seed(0)
    out = {"model": "qwen2.5-coder-0.5b-instruct", "prompts": 16, "steps": args.steps,
           "torch_threads": torch.get_num_threads(), "by_rows": []}
    for rows in args.rows:
        k = rows // 16
        settings = {f"s{i}": addition(torch.randn(m.cfg.d_model, generator=g), 14)
                    for i in range(k)}
        run = lambda n: generation.generate_grid(m, prompts, settings, n, 16, desc=None,  # noqa: E731
                                                 stack=k)
        first = _timed(lambda: run(1))
        full = _timed(lambda: run(args.steps + 1))
        rate = rows * args.steps / (full - first)
        rec = {"rows": rows, "decode_s": full - first, "new_tok_s": rate,
               "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
        print(rec, flush=True)
        out["by_rows"].append(rec)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
