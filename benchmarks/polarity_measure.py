"""Answer polarity of CAA vectors on the embedded model (issue 40): cosine with the neutral
answer-polarity direction at the steering layer, plain / letter-balanced / polarity-balanced,
and the behaviour check (p(matching) per polarity of the matching answer) of the polarity
direction itself and of the vectors.

    python benchmarks/polarity_measure.py --out docs/polarity.json

Design: the audit's own reading (`methods.caa.pair_activations`: resid_pre, the answer token),
layer 14 (the 0.5B's steering layer), `--n-items` generate items per behaviour drawn as the
audit draws them (`methods.refusal.sample`, seed 0; 48 = the quick and library presets), every
item in both answer orders. Plain CAA: the original orders only (the paper's protocol).
Polarity direction: all 200 train questions of `data/polarity`, both orders. The behaviour
check steers at dose 0.15 of the mean residual norm of harmful prompts at layer 14
(results/findings-0.5b-resid/refusal.json, the audit's dose unit) on the first `--n-test`
held-out items, and applies `audit.vector_stages._steers` (both polarities where the items read
per polarity have at least 3 of each: a polarity with fewer held-out items topped up from the
generate items the vectors were not extracted from, `audit.held_out`, as the audit does).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

BEHAVIOURS = ("corrigible-neutral-HHH", "coordinate-other-ais", "survival-instinct")
# the check where the held-out items hold both polarities first (24 test items: survival-instinct
# 7 Yes / 9 No, coordinate-other-ais 18 / 3, corrigible-neutral-HHH 23 / 0)
CHECK_ORDER = ("survival-instinct", "coordinate-other-ais", "corrigible-neutral-HHH")


def vectors(model, behaviour: str, layer: int, n_items: int, seed: int, pol: torch.Tensor) -> dict:
    """Plain, letter- and polarity-balanced vectors at the layer, and what polarity balance did."""
    from steerlens.audit.held_out import extraction_items
    from steerlens.methods.caa import balanced, pair_activations
    from steerlens.methods.polarity import balance_plan, pair_weights, polarity_free, weighted_mean

    items = extraction_items(behaviour, n_items, seed)
    acts = pair_activations(model, balanced(items), [layer], desc=f"CAA {behaviour}")
    new, plan = polarity_free(acts, "polarity", lambda: pol[None])
    out = {"plain": acts.diffs[0::2].mean(0)[0], "letter": acts.diffs.mean(0)[0],
           "polarity": new[0]}
    counts = balance_plan(acts.items).counts
    if counts["yes"] and counts["no"]:
        from steerlens.methods.polarity import item_polarity
        w = pair_weights([item_polarity(it) for it in acts.items])
        out["weights_only"] = weighted_mean(acts.diffs, w)[0]  # what weighting alone would give
    meta = {**plan.meta(), "diffs_on_polarity": diffs_on_polarity(acts, pol)}
    return {"vectors": out, "plan": meta, "n_items": len(items)}


def diffs_on_polarity(acts, pol: torch.Tensor) -> dict:
    """Per polarity of the matching answer: the pair differences' mean cosine with the
    polarity direction and their mean coefficient on it (diff . p / |p|^2), and the cosine of
    the group's mean difference: a No-matching pair's difference should point to -p."""
    from steerlens.methods.polarity import item_polarity

    d = acts.diffs[:, 0].float()
    unit = pol / pol.norm()
    pols = [item_polarity(it) for it in acts.items]
    out = {}
    for g in ("yes", "no", "other"):
        idx = [i for i, x in enumerate(pols) if x == g]
        if not idx:
            continue
        dg = d[idx]
        out[g] = {"n_pairs": len(idx), "mean_cos": float((dg @ unit / dg.norm(dim=1)).mean()),
                  "mean_coef": float((dg @ pol).mean() / pol.norm() ** 2),
                  "cos_of_mean": float(dg.mean(0) @ unit / dg.mean(0).norm()),
                  "norm_of_mean": float(dg.mean(0).norm())}
    return out


def _cached(path: Path, compute) -> dict:
    """Tensors saved once (safetensors) and read back."""
    from safetensors.torch import load_file, save_file

    if not path.is_file():
        save_file({k: v.contiguous() for k, v in compute().items()}, str(path))
    return load_file(str(path))


def _polarity(cache: Path, model, chunks: int = 5) -> torch.Tensor:
    """The polarity direction at every layer over all 200 train questions, computed in
    `chunks` equal parts (question i in part i mod chunks: each part holds 5 of every
    (topic, answer) group of 25) that are saved as they finish; the mean of the parts' means
    is the mean over all."""
    from steerlens.datasets.loaders import load_polarity
    from steerlens.methods.caa import polarity_direction

    train = load_polarity("train")
    layers = list(range(model.cfg.n_layers))
    parts = [_cached(cache / f"polarity_all{k}.safetensors", lambda k=k: {
        "v": polarity_direction(model, layers, train[k::chunks]).vectors})["v"]
        for k in range(chunks)]
    return torch.stack(parts).mean(0)


def save_direction(path: Path, pol: torch.Tensor, model_name: str) -> None:
    """The per-layer polarity direction as a small safetensors file for the library's
    analysis (`--polarity`): `directions` [layer, d_model], metadata: model, data file sha256,
    how it was computed."""
    import hashlib

    from safetensors.torch import save_file

    data = Path("data/polarity/train.json")
    meta = {"layers": list(range(pol.shape[0])), "model": model_name, "site": "resid_pre",
            "data": str(data), "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
            "how": "steerlens.methods.caa.polarity_direction over all 200 train questions, "
                   "both answer orders, in five balanced parts (question i in part i mod 5) "
                   "averaged: benchmarks/polarity_measure.py"}
    save_file({"directions": pol.float().contiguous()}, str(path),
              metadata={"steerlens": json.dumps(meta)})


def _cached_vectors(cache: Path, model, behaviour: str, args, pol: torch.Tensor) -> dict:
    """`vectors(...)`, with its tensors and plan kept in the cache."""
    meta = cache / f"{behaviour}.json"
    box = {}

    def compute():
        box.update(vectors(model, behaviour, args.layer, args.n_items, args.seed, pol))
        return box["vectors"]

    vecs = _cached(cache / f"{behaviour}.safetensors", compute)
    if box:
        meta.write_text(json.dumps({"plan": box["plan"], "n_items": box["n_items"]}))
    return {"vectors": vecs, **json.loads(meta.read_text())}


def check(model, behaviour: str, layer: int, named: dict, scale: float, dose: float,
          n_test: int, n_items: int, seed: int) -> dict:
    """p(matching) per polarity under +-dose of each named direction, and the verdict."""
    from steerlens.audit.held_out import check_items, checked_effect
    from steerlens.audit.settings import dosed
    from steerlens.audit.vector_stages import _steers, polarity_check
    from steerlens.core.steering import addition

    items = check_items(behaviour, n_test, n_items, seed)
    settings = {f"{n}|{d:+g}": addition(dosed(v, d, scale), layer)
                for n, v in named.items() for d in (dose, -dose)}
    eff = checked_effect(model, items, settings)
    out = {"polarity_items": items.record}
    for n in named:
        e = {"unsteered": eff["unsteered"], **{f"{d:+g}": eff[f"{n}|{d:+g}"] for d in (dose, -dose)}}
        out[n] = {"steers": _steers(e, dose), "polarity_check": polarity_check(e, dose, items.record),
                  "shift_up": e[f"{dose:+g}"]["shift"], "p_up": e[f"{dose:+g}"]["p_value"],
                  "shift_down": e[f"{-dose:+g}"]["shift"],
                  "by_polarity_up": e[f"{dose:+g}"]["by_polarity"],
                  "by_polarity_down": e[f"{-dose:+g}"]["by_polarity"]}
    return out


def main(argv: list[str] | None = None) -> int:
    from steerlens.core.geometry import cosine
    from steerlens.core.models import load_model
    from steerlens.methods.polarity import polarity_counts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", type=int, default=14)
    p.add_argument("--n-items", type=int, default=48)
    p.add_argument("--n-test", type=int, default=24)
    p.add_argument("--dose", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-check", action="store_true", help="cosines only")
    p.add_argument("--out", default="docs/polarity.json")
    p.add_argument("--cache", default="/tmp/polarity_measure", help="intermediate vectors "
                   "(safetensors): a killed run continues from them")
    p.add_argument("--save-direction", default="results/library-0.5b/polarity_direction.safetensors",
                   help="where to save the per-layer direction ('' for nowhere)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_grad_enabled(False)
    model = load_model("qwen2.5-coder-0.5b-instruct", device="cpu")
    scale = json.loads(Path("results/findings-0.5b-resid/refusal.json").read_text())["resid_norm"]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    pol_all = _polarity(cache, model)
    if args.save_direction:
        save_direction(Path(args.save_direction), pol_all, "qwen2.5-coder-0.5b-instruct")
    pol = pol_all[args.layer]
    res = {"layer": args.layer, "site": "resid_pre", "n_items": args.n_items, "seed": args.seed,
           "dose": args.dose, "dose_scale": scale, "polarity_norm": float(pol.norm()),
           "behaviours": {}}
    from steerlens.datasets.behaviours import behaviour_split
    got = {}
    for b in BEHAVIOURS:  # every vector first (the cosines), then the behaviour checks
        got[b] = _cached_vectors(cache, model, b, args, pol)
        rec = {"counts_all": polarity_counts(behaviour_split(b, "generate")), **got[b]["plan"],
               "n_items": got[b]["n_items"],
               "cos": {k: float(cosine(v, pol)) for k, v in got[b]["vectors"].items()},
               "norm": {k: float(v.norm()) for k, v in got[b]["vectors"].items()},
               "counts_test": polarity_counts(behaviour_split(b, "test")[: args.n_test])}
        res["behaviours"][b] = rec
        print(b, json.dumps(rec["cos"]), rec["polarity_method"], flush=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for b in CHECK_ORDER if not args.no_check else ():
        named = {"polarity_direction": pol, "letter": got[b]["vectors"]["letter"],
                 "polarity_balanced": got[b]["vectors"]["polarity"]}
        path = cache / f"{b}.check-top-up.json"  # not the earlier check's file (no top-up)
        if not path.is_file():
            path.write_text(json.dumps(check(model, b, args.layer, named, scale, args.dose,
                                             args.n_test, args.n_items, args.seed)))
        res["behaviours"][b]["behaviour_check"] = json.loads(path.read_text())
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    res["seconds_this_session"] = round(time.perf_counter() - t0, 1)  # cached parts excluded
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out} in {res['seconds_this_session']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
