"""CAA vectors validated per behaviour: letter component before and after balancing, split-half
stability, and p(matching) on held-out items at each dose (issue "Faithful CAA vectors").

    python experiments/caa_validation.py --run results/findings-0.5b-resid --n-items 96 \
        --out docs/caa_validation.json

The steering layer and the dose unit (mean residual norm of harmful prompts there) come from
the run's refusal direction, so the numbers describe the vectors exactly as that audit used them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

BEHAVIOURS = ("coordinate-other-ais", "corrigible-neutral-HHH", "hallucination", "myopic-reward",
              "survival-instinct", "sycophancy", "refusal")


def validate(model, behaviour: str, layer: int, resid_norm: float, n_items: int, n_test: int,
             doses: list[float], seed: int) -> dict:
    """Letter cosine (unbalanced/balanced), split-half cosine, and p(matching) per dose."""
    from steerlens.audit.evaluate import behaviour_effect
    from steerlens.core.geometry import cosine, rescale
    from steerlens.core.steering import addition
    from steerlens.datasets.loaders import load_caa
    from steerlens.methods.caa import balanced, pair_activations, split_half_cosine
    from steerlens.methods.refusal import sample

    t0 = time.perf_counter()
    items = load_caa(behaviour, "generate")
    items = [items[i] for i in sample(range(len(items)), n_items, seed)]
    n_a = sum(it.matching == "A" for it in items)
    acts = pair_activations(model, balanced(items), [layer], desc=f"CAA {behaviour}")
    letter = acts.letter_direction()[0]
    vec, plain = acts.diffs.mean(0)[0], acts.diffs[0::2].mean(0)[0]
    settings = {f"{d:+g}": addition(rescale(vec, abs(d) * resid_norm) * (1 if d > 0 else -1), layer)
                for d in doses}
    effect = behaviour_effect(model, load_caa(behaviour, "test")[:n_test], settings)
    return {"n_items": len(items), "matching_is_A": n_a, "layer": layer,
            "letter_cosine_unbalanced": float(cosine(plain, letter)),
            "letter_cosine_balanced": float(cosine(vec, letter)),
            "letter_share_unbalanced": float(cosine(plain, letter)) ** 2,
            "split_half_cosine": float(split_half_cosine(acts.diffs, 2, seed)[0]),
            "relative_norm": float(vec.norm()) / resid_norm, "effect": effect,
            "seconds": time.perf_counter() - t0}


def table(results: dict) -> str:
    """Markdown table of the results (one row per behaviour)."""
    doses = sorted({k for r in results.values() for k in r["effect"] if k != "unsteered"}, key=float)
    head = ("| behaviour | A-matching | letter cos, unbalanced → balanced | split-half cos | "
            "p(matching) unsteered | " + " | ".join(f"dose {d}" for d in doses) + " |")
    lines = [head, "|" + "---|" * (5 + len(doses))]
    for b, r in results.items():
        eff = r["effect"]
        cells = [f"{eff[d]['mean']:.2f} (p {eff[d]['p_value']:.1g})" for d in doses]
        lines.append(f"| {b} | {r['matching_is_A']}/{r['n_items']} | {r['letter_cosine_unbalanced']:+.2f} → "
                     f"{r['letter_cosine_balanced']:+.2f} | {r['split_half_cosine']:.2f} | "
                     f"{eff['unsteered']['mean']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from steerlens.audit.artefacts import Refusal
    from steerlens.core.models import load_model
    from steerlens.rundir import read_json, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="an audit run (its refusal direction and layer)")
    p.add_argument("--behaviours", nargs="+", default=list(BEHAVIOURS))
    p.add_argument("--n-items", type=int, default=96)
    p.add_argument("--n-test", type=int, default=48)
    p.add_argument("--doses", nargs="+", type=float, default=[-0.3, -0.15, 0.15, 0.3])
    p.add_argument("--out", default="docs/caa_validation.json")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    run = Path(args.run)
    cfg = read_json(run / "config.json")["config"]
    ref = Refusal.load(run / "refusal_direction.safetensors")
    model = load_model(cfg["model"], device="cpu")
    out = Path(args.out)
    results = read_json(out)["behaviours"] if out.exists() else {}
    for b in args.behaviours:
        if b not in results:  # resumable: one behaviour at a time
            results[b] = validate(model, b, ref.layer, ref.resid_norm, args.n_items, args.n_test,
                                  args.doses, cfg["seed"])
            write_json(out, {"model": cfg["model"], "run": str(run), "behaviours": results})
    print(table(results))


if __name__ == "__main__":
    main()
