"""The refusal direction, as Arditi et al. (2024, "Refusal in Language Models Is Mediated by a
Single Direction", github.com/andyrdt/refusal_direction, `pipeline/`) compute and select it.

1. Filter: keep harmful train/val prompts the model refuses (refusal score > 0) and harmless
   ones it answers (score < 0). The refusal score is the log-odds of the refusal first tokens
   at the first response position (Arditi's tokens for Qwen: "I", "As").
2. Difference in means of harmful and harmless `resid_pre` activations at every
   post-instruction (end-of-instruction) position and layer.
3. Selection over (position, layer) candidates: drop candidates in the last 20 % of layers
   (`layer >= int(0.8 * n_layers)`), whose ablation moves harmless next-token distributions by
   KL > 0.1, or whose addition (coefficient 1, every position, at its layer) leaves the
   harmless refusal score below 0; keep the one whose ablation lowers the harmful refusal
   score most.
Where no candidate passes (small validation sets, weak refusers), a relaxation ladder is used
as a recorded fallback (`meta["fallback"]`), which the summary and report flag.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.activations import collect_resid
from steerlens.core.generation import next_token_logits, refusal_log_odds
from steerlens.core.hooks import check_layers
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import ablation, addition
from steerlens.errors import SteerlensError

# Arditi et al.'s refusal tokens for Qwen models (QWEN_REFUSAL_TOKS = ["I", "As"]).
REFUSAL_WORDS: tuple[str, ...] = ("I", "As")
_META_KEY = "steerlens"


def refusal_token_ids(tokenizer, words: Sequence[str] = REFUSAL_WORDS) -> list[int]:
    """The first token of each refusal word for this tokenizer (deduplicated, order kept)."""
    ids: list[int] = []
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)["input_ids"]
        if toks and toks[0] not in ids:
            ids.append(toks[0])
    return ids


def refusal_scores(model, instructions: Sequence[str], steering=None, system: str | None = None,
                   batch_size: int = 16) -> Float[Tensor, "n"]:
    """Arditi's refusal score of each instruction: log-odds of the refusal first tokens."""
    prompts = chat_prompts(model.tokenizer, list(instructions), system)
    logits = next_token_logits(model, prompts, steering, batch_size)
    return refusal_log_odds(logits, refusal_token_ids(model.tokenizer)).cpu()


def sample(items: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` items drawn without replacement with a seeded RNG (Arditi samples with seed 42)."""
    return random.Random(seed).sample(list(items), min(n, len(items)))


@dataclass
class FilteredPrompts:
    """Prompts kept by Arditi's filter, with every prompt's refusal score."""

    harmful: list[str]
    harmless: list[str]
    scores: dict[str, list[float]]


def filter_by_refusal(model, harmful: Sequence[str], harmless: Sequence[str],
                      system: str | None = None, batch_size: int = 16) -> FilteredPrompts:
    """Keep harmful prompts with refusal score > 0 and harmless ones with score < 0."""
    hs = refusal_scores(model, harmful, system=system, batch_size=batch_size)
    ls = refusal_scores(model, harmless, system=system, batch_size=batch_size)
    kept_h = [x for x, s in zip(harmful, hs.tolist()) if s > 0]
    kept_l = [x for x, s in zip(harmless, ls.tolist()) if s < 0]
    return FilteredPrompts(kept_h, kept_l, {"harmful": hs.tolist(), "harmless": ls.tolist()})


@dataclass
class RefusalActivations:
    """Harmful and harmless `resid_pre` activations at the post-instruction positions: the
    direction's data, reused for the subspace and for the dose unit."""

    harmful: Float[Tensor, "n layer pos d_model"]
    harmless: Float[Tensor, "m layer pos d_model"]
    layers: list[int]
    positions: list[int]

    def means(self) -> Float[Tensor, "pos layer d_model"]:
        diff = self.harmful.mean(0) - self.harmless.mean(0)
        return rearrange(diff, "layer pos d -> pos layer d")

    def at(self, layer: int, position: int) -> tuple[Tensor, Tensor]:
        """(harmful, harmless) activations at one layer and position."""
        i, p = self.layers.index(layer), self.positions.index(position)
        return self.harmful[:, i, p], self.harmless[:, i, p]

    def resid_norm(self, layer: int) -> float:
        """Mean residual-stream norm of the harmful prompts at `layer`, over the tail positions:
        the unit of the audit's dose."""
        return float(self.harmful[:, self.layers.index(layer)].norm(dim=-1).mean())


@torch.no_grad()
def refusal_activations(model, harmful: Sequence[str], harmless: Sequence[str],
                        layers: Sequence[int], system: str | None = None,
                        batch_size: int = 16) -> RefusalActivations:
    """`resid_pre` activations at every post-instruction position of `layers`."""
    if not harmful or not harmless:
        raise SteerlensError("the refusal direction needs harmful and harmless prompts",
                             fix="pass at least one of each (after filtering)")
    layers = check_layers(model, layers)
    acts = {}
    for name, group in (("harmful", harmful), ("harmless", harmless)):
        prompts = chat_prompts(model.tokenizer, list(group), system)
        positions = prompts.tail_positions()
        acts[name] = collect_resid(model, prompts, layers, positions, batch_size=batch_size,
                                   desc=f"{name} activations").cpu()
    return RefusalActivations(acts["harmful"], acts["harmless"], layers, positions)


@dataclass
class RefusalDirection:
    """The selected difference-in-means refusal direction and every candidate's scores."""

    direction: Float[Tensor, "d_model"]
    layer: int
    position: int
    candidates: list[dict]
    means: Float[Tensor, "pos layer d_model"]
    positions: list[int]
    layers: list[int]
    meta: dict = field(default_factory=dict)

    def at(self, layer: int, position: int | None = None) -> Float[Tensor, "d_model"]:
        """The difference in means at another layer (the selected position by default)."""
        if layer not in self.layers:
            raise SteerlensError(f"the refusal direction was not computed at layer {layer}",
                                 fix=f"it has layers {self.layers}; recompute with that layer")
        p = self.positions.index(self.position if position is None else position)
        return self.means[p, self.layers.index(layer)]

    def save(self, path: str | Path) -> None:
        meta = {**self.meta, "layer": self.layer, "position": self.position,
                "positions": self.positions, "layers": self.layers}
        save_file({"direction": self.direction.float().contiguous(),
                   "means": self.means.float().contiguous()}, str(path),
                  metadata={_META_KEY: json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str | Path, candidates: list[dict] | None = None) -> RefusalDirection:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
        t = load_file(str(path))
        return cls(t["direction"], meta.pop("layer"), meta.pop("position"), candidates or [],
                   t["means"], meta.pop("positions"), meta.pop("layers"), meta)


def _kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p || q) per row of next-token logits (float64, as Arditi's kl_div_fn)."""
    lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@dataclass
class _Validation:
    """Validation prompts and their unsteered next-token logits."""

    model: object
    harmful: object
    harmless: object
    batch_size: int

    def __post_init__(self):
        self.ids = refusal_token_ids(self.model.tokenizer)
        self.base_harmful = next_token_logits(self.model, self.harmful, None, self.batch_size)
        self.base_harmless = next_token_logits(self.model, self.harmless, None, self.batch_size)

    def score(self, logits: Tensor) -> float:
        return refusal_log_odds(logits, self.ids).mean().item()

    def candidate(self, r: Tensor, layer: int) -> dict:
        """Arditi's three scores of one candidate direction."""
        n = self.model.cfg.n_layers
        abl = ablation(r[None].to(self.model.cfg.device), n)
        abl_harmful = next_token_logits(self.model, self.harmful, abl, self.batch_size)
        abl_harmless = next_token_logits(self.model, self.harmless, abl, self.batch_size)
        add = addition(r.to(self.model.cfg.device), layer, 1.0, positions="all")
        add_harmless = next_token_logits(self.model, self.harmless, add, self.batch_size)
        return {"ablation_refusal": self.score(abl_harmful),
                "addition_refusal": self.score(add_harmless),
                "kl": _kl(self.base_harmless, abl_harmless).mean().item()}


def _pick(scored: list[dict], kl_threshold: float, base_harmless: float) -> tuple[dict, dict]:
    """Arditi's filter and choice; if nothing passes, the first rung of the fallback ladder
    (KL threshold x2, x4, then "addition raises refusal above the harmless baseline") that
    leaves a candidate."""
    rules = [(kl_threshold, 0.0, None), (2 * kl_threshold, 0.0, "KL threshold x2"),
             (4 * kl_threshold, 0.0, "KL threshold x4"),
             (4 * kl_threshold, base_harmless, "KL x4 and addition above the harmless baseline")]
    def passing_under(rule) -> list[dict]:
        return [c for c in scored if c["kl"] <= rule[0] and c["addition_refusal"] >= rule[1]]

    kl_used, induce, fallback = next((r for r in rules if passing_under(r)), rules[-1])
    passing = passing_under((kl_used, induce))
    for c in scored:
        c["passes_arditi"] = c["kl"] <= kl_threshold and c["addition_refusal"] >= 0.0
    if not passing:
        fallback, kl_used, induce = "no candidate passes any rule: lowest ablation score", None, None
    best = min(passing or scored, key=lambda c: c["ablation_refusal"])
    return best, {"fallback": fallback, "kl_threshold_used": kl_used, "induce_threshold_used": induce}


@torch.no_grad()
def select_direction(
    model,
    acts: RefusalActivations,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    positions: Sequence[int] | None = None,
    kl_threshold: float = 0.1,
    prune_layer_fraction: float = 0.2,
    system: str | None = None,
    batch_size: int = 16,
) -> RefusalDirection:
    """Score every (position, layer) candidate on the validation prompts and choose one."""
    n = model.cfg.n_layers
    means = acts.means()
    tok = model.tokenizer
    val = _Validation(model, chat_prompts(tok, list(harmful_val), system),
                      chat_prompts(tok, list(harmless_val), system), batch_size)
    cut = int(n * (1.0 - prune_layer_fraction))
    cands = []
    grid = [(p, lay) for p in (positions or acts.positions) for lay in acts.layers]
    for p, lay in tqdm(grid, desc="refusal-direction candidates", leave=False):
        r = means[acts.positions.index(p), acts.layers.index(lay)]
        rec = {"position": p, "layer": lay, "norm": float(r.norm()), "pruned_layer": lay >= cut}
        # At layer 0 the post-instruction tokens are the same embeddings for every prompt:
        # a zero difference, with no direction to score.
        if lay < cut and float(r.norm()) > 1e-6:
            rec.update(val.candidate(r, lay))
        cands.append(rec)
    scored = [c for c in cands if "ablation_refusal" in c]
    if not scored:
        raise SteerlensError("no refusal-direction candidate left to score",
                             fix=f"include layers below {cut} (the last 20% are pruned)")
    best, rule = _pick(scored, kl_threshold, val.score(val.base_harmless))
    meta = {"model": getattr(model, "steerlens_name", ""), "site": "resid_pre",
            "baseline_harmful_refusal": val.score(val.base_harmful),
            "baseline_harmless_refusal": val.score(val.base_harmless),
            "kl_threshold": kl_threshold, "prune_from_layer": cut, **rule,
            "n_val": [len(harmful_val), len(harmless_val)]}
    r = means[acts.positions.index(best["position"]), acts.layers.index(best["layer"])]
    return RefusalDirection(r, best["layer"], best["position"], cands, means, acts.positions,
                            acts.layers, meta)


def select_refusal_direction(
    model,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    filter_prompts: bool = True,
    system: str | None = None,
    batch_size: int = 16,
    **select_kw,
) -> tuple[RefusalDirection, RefusalActivations]:
    """Arditi's whole pipeline: filter, difference in means, selection. Also returns the
    activations, which the subspace and the dose reuse."""
    counts = {"harmful_train": len(harmful_train), "harmless_train": len(harmless_train),
              "harmful_val": len(harmful_val), "harmless_val": len(harmless_val)}
    if filter_prompts:
        tr = filter_by_refusal(model, harmful_train, harmless_train, system, batch_size)
        va = filter_by_refusal(model, harmful_val, harmless_val, system, batch_size)
        harmful_train, harmless_train = tr.harmful, tr.harmless
        harmful_val, harmless_val = va.harmful, va.harmless
    kept = {"harmful_train": len(harmful_train), "harmless_train": len(harmless_train),
            "harmful_val": len(harmful_val), "harmless_val": len(harmless_val)}
    if min(kept.values()) < 2:
        raise SteerlensError(f"too few prompts left after Arditi's refusal filter: {kept}",
                             fix="use more prompts (--n-refusal-train), a model that refuses "
                                 "some harmful prompts, or --no-refusal-filter")
    layers = layers if layers is not None else range(model.cfg.n_layers)
    acts = refusal_activations(model, harmful_train, harmless_train, layers, system, batch_size)
    rd = select_direction(model, acts, harmful_val, harmless_val, positions, system=system,
                          batch_size=batch_size, **select_kw)
    rd.meta.update(filtered=filter_prompts, n_before_filter=counts, n_after_filter=kept,
                   val_harmful=list(harmful_val))
    return rd, acts
