"""Benchmarks of steerlens' cost levers on the embedded model (not a test; prints a markdown table).

    python benchmarks/bench_core.py [--model KEY] [--n 8] [--new 24] [--json out.json]

1. steered generation (ours, KV cache, hooks) vs HF `generate` unsteered: new tokens/s;
2. activation collection (prefix reuse, early stop) vs HF forward over the same prompts: tok/s;
3. a template-attack cell (4 settings) with prefix + prompt-cache reuse vs without;
4. logit screening vs generated ASR: Spearman over settings, and the cost ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from scipy.stats import spearmanr


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=8, help="prompts per batch")
    ap.add_argument("--new", type=int, default=24, help="new tokens")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from steerlens.activations import collect_resid
    from steerlens.attacks import get_attack
    from steerlens.data import load_instructions, load_jbb
    from steerlens.evaluate import attack_prompts, refusal_screen, run_attack
    from steerlens.generation import generate_grid, stop_token_ids
    from steerlens.models import load_model
    from steerlens.prompts import chat_token_rows, header_ids, tokenize_chat
    from steerlens.steering import Steering, addition

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    (m, load_s) = _timed(lambda: load_model(args.model, device="cpu"))
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    tok = m.tokenizer
    hf = m.original_model
    n_params = sum(p.numel() for p in hf.parameters())
    goals = load_jbb("harmful")[: args.n]
    instr = [g.goal for g in goals]
    rows = {}

    # 1. Steered generation vs HF generate (unsteered), same prompts and batch.
    b = tokenize_chat(tok, instr)
    stops = stop_token_ids(tok)

    def hf_gen():
        return hf.generate(b.input_ids, attention_mask=b.attention_mask, max_new_tokens=args.new,
                           do_sample=False, pad_token_id=tok.pad_token_id)

    hf_out, hf_s = _timed(hf_gen)
    hf_new = 0
    for row in hf_out[:, b.input_ids.shape[1]:].tolist():
        for t in row:
            if t in stops:
                break
            hf_new += 1
    v = torch.randn(m.cfg.d_model)
    v = v / v.norm() * 4
    rows_body, n_suffix = chat_token_rows(tok, instr, include_header=False)
    bodies = [r[:-n_suffix] for r in rows_body]
    suffix = rows_body[0][-n_suffix:]
    steer = {"steered": addition(v, m.cfg.n_layers // 2, 1.0)}
    ours, ours_s = _timed(lambda: generate_grid(m, header_ids(tok), bodies, suffix, steer,
                                                args.new, batch_size=args.n, desc=None))
    ours_new = sum(len(c.tokens) for c in ours["steered"])
    rows["generation"] = {"hf_tok_s": hf_new / hf_s, "ours_tok_s": ours_new / ours_s,
                          "ratio": (ours_new / ours_s) / (hf_new / hf_s)}

    # 2. Activation collection vs HF forward (same prompts; tokens counted without padding).
    harm = [x.instruction for x in load_instructions("harmful_train")[: 4 * args.n]]
    bh = tokenize_chat(tok, harm)
    n_tok = int(bh.attention_mask.sum())
    _, hf_fwd_s = _timed(lambda: [hf(bh.input_ids[i: i + args.n],
                                     attention_mask=bh.attention_mask[i: i + args.n])
                                  for i in range(0, len(harm), args.n)])
    r_rows, ns = chat_token_rows(tok, harm, include_header=False)
    layer = int(m.cfg.n_layers * 2 / 3)
    _, ours_act_s = _timed(lambda: collect_resid(m, r_rows, [layer], list(range(-ns, 0)),
                                                 prefix=header_ids(tok), batch_size=args.n,
                                                 desc=None))
    rows["activations"] = {"hf_tok_s": n_tok / hf_fwd_s, "ours_tok_s": n_tok / ours_act_s,
                           "ratio": hf_fwd_s / ours_act_s, "layer": layer}

    # 3. Template attack cells: prefix + shared prompt cache vs naive (no prefix, one call per
    # setting). AIM is a long template (the lever's use case); refusal suppression a short one.
    rows["attack_cell"] = {}
    for attack_name in ("aim", "refusal_suppression"):
        attack = get_attack(attack_name)
        prefix, a_bodies, a_suffix = attack_prompts(tok, attack, goals)
        for n_set in (1, 4):
            settings = {f"s{i}": addition(v * (i + 1), layer, 1.0) for i in range(n_set - 1)}
            settings["baseline"] = Steering()
            _, shared_s = _timed(lambda: generate_grid(m, prefix, a_bodies, a_suffix, settings,
                                                       8, args.n, desc=None))

            def naive():
                for name, s in settings.items():
                    generate_grid(m, [], [prefix + x for x in a_bodies], a_suffix, {name: s}, 8,
                                  args.n, desc=None)

            _, naive_s = _timed(naive)
            rows["attack_cell"][f"{attack_name}/{n_set}"] = {
                "shared_s": shared_s, "naive_s": naive_s, "ratio": shared_s / naive_s,
                "prompt_tokens": len(prefix) + len(a_suffix) + max(map(len, a_bodies))}

    # 4. Logit screening vs generated ASR over settings (attack none).
    none = get_attack("none")
    grid = {"baseline": Steering()}
    for mult in (-8, -4, 4, 8, 12):
        grid[f"m{mult}"] = addition(v, layer, float(mult) / 4)
    scr, scr_s = _timed(lambda: refusal_screen(m, none, goals, grid, args.n))
    gen, gen_s = _timed(lambda: run_attack(m, none, goals, grid, max_new_tokens=args.new,
                                           batch_size=args.n))
    neg_score = [-sum(scr[k]) / len(scr[k]) for k in grid]
    asr = [sum(gen[k]["jailbroken"]) / len(goals) for k in grid]
    rho = spearmanr(neg_score, asr).statistic
    rows["screening"] = {"spearman": float(rho), "screen_s": scr_s, "generate_s": gen_s,
                         "cost_ratio": scr_s / gen_s, "asr": asr}
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    rows["memory"] = {"fp32_weights_gb": n_params * 4 / 1e9, "peak_rss_gb_after_load": rss_load,
                      "peak_rss_gb": rss_peak, "load_s": load_s}

    print("| benchmark | ours | reference | ratio |\n|---|---|---|---|")
    g, a, s = rows["generation"], rows["activations"], rows["screening"]
    print(f"| steered generation new tok/s vs HF generate (batch {args.n}, {args.new} new) | "
          f"{g['ours_tok_s']:.1f} | {g['hf_tok_s']:.1f} | {g['ratio']:.2f}x |")
    print(f"| activation collection tok/s vs HF forward (layer {a['layer']}) | "
          f"{a['ours_tok_s']:.1f} | {a['hf_tok_s']:.1f} | {a['ratio']:.2f}x |")
    for key, c in rows["attack_cell"].items():
        att, n_set = key.split("/")
        print(f"| {att} cell (~{c['prompt_tokens']} prompt tokens), {n_set} setting(s), "
              f"8 new: with prefix/prompt reuse vs without (s) | {c['shared_s']:.1f} | "
              f"{c['naive_s']:.1f} | {c['ratio']:.2f}x |")
    print(f"| logit screening vs generated ASR: Spearman / cost (s) | {s['spearman']:.2f} / "
          f"{s['screen_s']:.1f} | {s['generate_s']:.1f} | {s['cost_ratio']:.2f}x |")
    mem = rows["memory"]
    print(f"| peak RSS (GB) vs fp32 weights (GB) | {mem['peak_rss_gb']:.2f} | "
          f"{mem['fp32_weights_gb']:.2f} | {mem['peak_rss_gb'] / mem['fp32_weights_gb']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
