"""Benchmarks of steerlens' cost levers on the embedded model (not a test; prints a markdown table).

    python benchmarks/bench_core.py [--model KEY] [--n 8] [--new 24] [--json out.json]
    python benchmarks/bench_core.py --n 2 --new 4 --cell-new 2 --attacks refusal_suppression  # smoke

1. steered generation (ours, KV cache, hooks) vs HF `generate` unsteered: new tokens/s;
2. activation collection (prefix reuse, early stop) vs HF forward over the same prompts: tok/s;
3. a template-attack cell (1 and 4 settings) with prefix + prompt-cache reuse vs without;
4. logit screening vs generated ASR: Spearman over settings, and the cost ratio;
5. 8 after-instruction settings decoded together (`stack=8`) vs one at a time (`stack=1`),
   with the completions compared.

The screen is the audit's first-step refusal score (log-odds of `steerlens.methods.refusal`'s refusal
tokens, from `next_token_logits_grid`); the generated ASR is the audit's `evaluate_job` with the
refusal_string judge (rows stop once refused; compliant rows run to `--new` tokens).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from scipy.stats import spearmanr

from steerlens.audit.evaluate import attack_prompts, evaluate_job
from steerlens.audit.settings import Kind, Setting
from steerlens.core.activations import collect_resid
from steerlens.core.generation import generate_grid, next_token_logits_grid, refusal_log_odds, stop_token_ids
from steerlens.core.models import load_model
from steerlens.core.prompts import PromptSet, chat_prompts, full_batch, pad_id
from steerlens.core.steering import Steering, addition
from steerlens.datasets.attacks import get_attack
from steerlens.datasets.loaders import load_instructions, load_jbb
from steerlens.judges.registry import get_judge
from steerlens.methods.refusal import refusal_token_ids


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _unstopped(rows: list[list[int]], stops: set[int]) -> int:
    """New tokens of HF `generate` rows up to (not counting) the first stop token."""
    n = 0
    for row in rows:
        for t in row:
            if t in stops:
                break
            n += 1
    return n


def bench_generation(m, goals, v, args) -> dict:
    """1. Our steered generation vs HF `generate` unsteered, same prompts and batch."""
    tok = m.tokenizer
    prompts = chat_prompts(tok, [g.goal for g in goals])
    b = full_batch(prompts, tok)
    hf_out, hf_s = _timed(lambda: m.original_model.generate(
        b.input_ids, attention_mask=b.attention_mask, max_new_tokens=args.new, do_sample=False,
        pad_token_id=pad_id(tok)))
    hf_new = _unstopped(hf_out[:, b.input_ids.shape[1]:].tolist(), stop_token_ids(tok))
    steer = {"steered": addition(v, m.cfg.n_layers // 2, 1.0)}
    ours, ours_s = _timed(lambda: generate_grid(m, prompts, steer, args.new, batch_size=args.n,
                                                desc=None))
    ours_new = sum(len(c.tokens) for c in ours["steered"].completions)
    return {"hf_tok_s": hf_new / hf_s, "ours_tok_s": ours_new / ours_s,
            "ratio": (ours_new / ours_s) / (hf_new / hf_s)}


def bench_activations(m, layer: int, args) -> dict:
    """2. Activation collection at the tail vs HF forward (tokens counted without padding)."""
    tok = m.tokenizer
    harm = [x.instruction for x in load_instructions("harmful_train")[: 4 * args.n]]
    prompts = chat_prompts(tok, harm)
    b = full_batch(prompts, tok)
    n_tok = int(b.attention_mask.sum())
    _, hf_s = _timed(lambda: [m.original_model(b.input_ids[i: i + args.n],
                                               attention_mask=b.attention_mask[i: i + args.n])
                              for i in range(0, len(harm), args.n)])
    _, ours_s = _timed(lambda: collect_resid(m, prompts, [layer], prompts.tail_positions(),
                                             batch_size=args.n, desc=None))
    return {"hf_tok_s": n_tok / hf_s, "ours_tok_s": n_tok / ours_s, "ratio": hf_s / ours_s,
            "layer": layer}


def _unshared(prompts: PromptSet) -> PromptSet:
    """The same rows with no shared prefix: every row runs its whole text."""
    return PromptSet([], [prompts.full(i) for i in range(len(prompts))], prompts.n_tail,
                     prompts.texts)


def bench_attack_cell(m, goals, v, layer: int, attack_name: str, n_set: int, args) -> dict:
    """3. One attack cell: shared prefix + one prompt cache for all settings, vs naive (no
    prefix, one call per setting, so nothing is shared)."""
    prompts = attack_prompts(m.tokenizer, get_attack(attack_name), goals)
    settings = {f"s{i}": addition(v * (i + 1), layer, 1.0) for i in range(n_set - 1)}
    settings["baseline"] = Steering()
    _, shared_s = _timed(lambda: generate_grid(m, prompts, settings, args.cell_new, args.n,
                                               desc=None))
    plain = _unshared(prompts)

    def naive():
        for name, s in settings.items():
            generate_grid(m, plain, {name: s}, args.cell_new, args.n, desc=None)

    _, naive_s = _timed(naive)
    return {"shared_s": shared_s, "naive_s": naive_s, "ratio": shared_s / naive_s,
            "prompt_tokens": len(prompts.prefix) + max(map(len, prompts.rows))}


def bench_screening(m, goals, v, layer: int, args) -> dict:
    """4. Logit screening vs generated ASR over settings (attack none)."""
    prompts = attack_prompts(m.tokenizer, get_attack("none"), goals)
    settings = [Setting("baseline", Kind.BASELINE)]
    for mult in (-8, -4, 4, 8, 12):
        settings.append(Setting(f"m{mult}", Kind.PLUS if mult > 0 else Kind.MINUS,
                                addition(v, layer, float(mult) / 4), dose=mult / 4))
    grid = {s.name: s.steering for s in settings}
    ids = refusal_token_ids(m.tokenizer)
    scr, scr_s = _timed(lambda: {k: refusal_log_odds(x, ids).tolist() for k, x in
                                 next_token_logits_grid(m, prompts, grid, args.n).items()})
    gen, gen_s = _timed(lambda: evaluate_job(m, prompts, goals, settings, get_judge("refusal_string"),
                                         args.new, args.n, None))
    neg_score = [-sum(scr[k]) / len(scr[k]) for k in grid]
    asr = [sum(gen[k]["jailbroken"]) / len(goals) for k in grid]
    rho = spearmanr(neg_score, asr).statistic
    return {"spearman": float(rho), "screen_s": scr_s, "generate_s": gen_s,
            "cost_ratio": scr_s / gen_s, "asr": asr}


def bench_stacking(m, goals, v, layer: int, args) -> dict:
    """5. A grid of 8 after-instruction settings: decoded together vs one setting at a time."""
    prompts = attack_prompts(m.tokenizer, get_attack("none"), goals)
    settings = {"baseline": Steering(), **{f"s{m:+g}": addition(v * m, layer, 1.0)
                                           for m in (-2, -1.5, -1, -0.5, 0.5, 1, 1.5)}}
    run = lambda k: generate_grid(m, prompts, settings, args.new, args.n, desc=None, stack=k)  # noqa: E731
    together, together_s = _timed(lambda: run(8))
    alone, alone_s = _timed(lambda: run(1))
    same = all([c.tokens for c in together[k].completions] == [c.tokens for c in alone[k].completions]
               for k in settings)
    return {"stacked_s": together_s, "alone_s": alone_s, "ratio": together_s / alone_s,
            "identical_completions": same, "settings": len(settings)}


def print_table(rows: dict, args) -> None:
    print("| benchmark | ours | reference | ratio |\n|---|---|---|---|")
    g, a, s = rows["generation"], rows["activations"], rows["screening"]
    print(f"| steered generation new tok/s vs HF generate (batch {args.n}, {args.new} new) | "
          f"{g['ours_tok_s']:.1f} | {g['hf_tok_s']:.1f} | {g['ratio']:.2f}x |")
    print(f"| activation collection tok/s vs HF forward (layer {a['layer']}) | "
          f"{a['ours_tok_s']:.1f} | {a['hf_tok_s']:.1f} | {a['ratio']:.2f}x |")
    for key, c in rows["attack_cell"].items():
        att, n_set = key.split("/")
        print(f"| {att} cell (~{c['prompt_tokens']} prompt tokens), {n_set} setting(s), "
              f"{args.cell_new} new: with prefix/prompt reuse vs without (s) | {c['shared_s']:.1f} | "
              f"{c['naive_s']:.1f} | {c['ratio']:.2f}x |")
    print(f"| logit screening vs generated ASR: Spearman / cost (s) | {s['spearman']:.2f} / "
          f"{s['screen_s']:.1f} | {s['generate_s']:.1f} | {s['cost_ratio']:.2f}x |")
    k = rows["stacking"]
    print(f"| {k['settings']} after-instruction settings, {args.new} new: decoded together vs one at a "
          f"time (s; completions identical: {k['identical_completions']}) | {k['stacked_s']:.1f} | "
          f"{k['alone_s']:.1f} | {k['ratio']:.2f}x |")
    mem = rows["memory"]
    print(f"| peak RSS (GB) vs fp32 weights (GB) | {mem['peak_rss_gb']:.2f} | "
          f"{mem['fp32_weights_gb']:.2f} | {mem['peak_rss_gb'] / mem['fp32_weights_gb']:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=8, help="JBB goals, and prompts per batch")
    ap.add_argument("--new", type=int, default=24, help="new tokens (generation, screening)")
    ap.add_argument("--cell-new", type=int, default=8, help="new tokens in the attack cells")
    ap.add_argument("--attacks", default="aim,refusal_suppression",
                    help="comma-separated attacks for the cell benchmark")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    m, load_s = _timed(lambda: load_model(args.model, device="cpu"))
    rss_load = _peak_gb()
    n_params = sum(p.numel() for p in m.original_model.parameters())
    goals = load_jbb("harmful")[: args.n]
    v = torch.randn(m.cfg.d_model)
    v = v / v.norm() * 4
    layer = int(m.cfg.n_layers * 2 / 3)
    rows = {"generation": bench_generation(m, goals, v, args),
            "activations": bench_activations(m, layer, args), "attack_cell": {}}
    for attack_name in args.attacks.split(","):
        for n_set in (1, 4):
            rows["attack_cell"][f"{attack_name}/{n_set}"] = bench_attack_cell(
                m, goals, v, layer, attack_name, n_set, args)
    rows["screening"] = bench_screening(m, goals, v, layer, args)
    rows["stacking"] = bench_stacking(m, goals, v, layer, args)
    rows["memory"] = {"fp32_weights_gb": n_params * 4 / 1e9, "peak_rss_gb_after_load": rss_load,
                      "peak_rss_gb": _peak_gb(), "load_s": load_s}
    print_table(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
