"""Where do CAA vectors steer their own behaviour? p(matching) on held-out items per layer and
dose, for each behaviour (one extraction per behaviour reads every layer at once).

    python experiments/caa_layer_scan.py --model qwen2.5-coder-0.5b-instruct \
        --layers 6 8 10 12 14 16 18 --out docs/caa_layer_scan.json

Doses are fractions of the mean residual-stream norm of harmful prompts at each layer (the
audit's `resid` unit). The audit's presets steer at the layer and dose this scan supports.
"""

from __future__ import annotations

import argparse
import time

import torch


def resid_norms(model, layers: list[int], n: int = 32) -> dict[int, float]:
    """Mean residual norm of harmful train prompts at their last post-instruction token."""
    from steerlens.core.activations import collect_resid
    from steerlens.core.prompts import chat_prompts
    from steerlens.datasets.loaders import load_instructions

    texts = [x.instruction for x in load_instructions("harmful_train")[:n]]
    acts = collect_resid(model, chat_prompts(model.tokenizer, texts), layers, desc=None)
    return {lay: float(acts[:, i, 0].norm(dim=-1).mean()) for i, lay in enumerate(layers)}


def scan(model, behaviour: str, layers: list[int], norms: dict[int, float], doses: list[float],
         n_items: int, n_test: int, seed: int) -> dict:
    from steerlens.audit.evaluate import behaviour_effect
    from steerlens.core.geometry import rescale
    from steerlens.core.steering import addition
    from steerlens.datasets.loaders import load_caa
    from steerlens.methods.caa import balanced, pair_activations
    from steerlens.methods.refusal import sample

    t0 = time.perf_counter()
    items = load_caa(behaviour, "generate")
    items = [items[i] for i in sample(range(len(items)), n_items, seed)]
    vecs = pair_activations(model, balanced(items), layers, desc=f"CAA {behaviour}").diffs.mean(0)
    settings = {f"{lay}@{d:+g}": addition(rescale(vecs[i], abs(d) * norms[lay]) * (1 if d > 0 else -1), lay)
                for i, lay in enumerate(layers) for d in doses}
    eff = behaviour_effect(model, load_caa(behaviour, "test")[:n_test], settings)
    return {"effect": eff, "seconds": time.perf_counter() - t0, "n_items": len(items)}


def main() -> None:
    from steerlens.core.models import load_model
    from steerlens.rundir import read_json, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--behaviours", nargs="+",
                   default=["corrigible-neutral-HHH", "survival-instinct", "refusal"])
    p.add_argument("--layers", nargs="+", type=int, default=[6, 8, 10, 12, 14, 16, 18])
    p.add_argument("--doses", nargs="+", type=float, default=[-0.3, -0.15, 0.15, 0.3])
    p.add_argument("--n-items", type=int, default=64)
    p.add_argument("--n-test", type=int, default=32)
    p.add_argument("--out", default="docs/caa_layer_scan.json")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(args.model, device="cpu")
    try:
        out = read_json(args.out)
    except FileNotFoundError:
        out = {"model": args.model, "layers": args.layers, "doses": args.doses,
               "resid_norm": resid_norms(model, args.layers), "behaviours": {}}
    norms = {int(k): v for k, v in out["resid_norm"].items()}
    for b in args.behaviours:
        if b not in out["behaviours"]:
            out["behaviours"][b] = scan(model, b, args.layers, norms, args.doses, args.n_items,
                                        args.n_test, 0)
            write_json(args.out, out)
    for b, r in out["behaviours"].items():
        base = r["effect"]["unsteered"]["mean"]
        print(b, f"unsteered {base:.3f}")
        for lay in args.layers:
            print("  layer", lay, " ".join(f"{d:+g}: {r['effect'][f'{lay}@{d:+g}']['mean']:.3f}"
                                        for d in args.doses))


if __name__ == "__main__":
    main()
