"""CAA steering vectors and the refusal direction (difference in means, Arditi-style selection)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.activations import (
    check_layers,
    collect_continuations,
    collect_resid,
    mean_diff,
    paired_mean_diff,
)
from steerlens.data import ABItem
from steerlens.errors import SteerlensError
from steerlens.generation import next_token_logits
from steerlens.judges import refusal_score, refusal_token_ids
from steerlens.prompts import chat_template, header_ids
from steerlens.steering import Steering, ablation, addition

_META_KEY = "steerlens"


@dataclass
class SteeringVector:
    """Per-layer steering vectors (rows of `vectors` belong to `layers`) with provenance metadata."""

    vectors: Float[Tensor, "layer d_model"]
    layers: list[int]
    meta: dict = field(default_factory=dict)

    def at(self, layer: int) -> Float[Tensor, "d_model"]:
        if layer not in self.layers:
            raise SteerlensError(f"no vector for layer {layer}",
                                 fix=f"this vector has layers {self.layers}")
        return self.vectors[self.layers.index(layer)]

    def steering(self, layer: int, multiplier: float = 1.0, **kw) -> Steering:
        return addition(self.at(layer), layer, multiplier, site=self.meta.get("site", "resid_pre"),
                        **kw)

    @contextmanager
    def apply(self, model, layer: int, multiplier: float = 1.0, **kw):
        """`with vec.apply(model, layer, 4.0): model.generate(...)` (positions default: all)."""
        kw.setdefault("positions", "all")
        with self.steering(layer, multiplier, **kw).apply(model):
            yield

    @classmethod
    def load_gguf(cls, path: str | Path) -> SteeringVector:
        return _gguf_control_vector(Path(path))

    def save(self, path: str | Path) -> None:
        """safetensors tensor + JSON metadata in the header (no pickle anywhere)."""
        meta = {**self.meta, "layers": self.layers}
        save_file({"vectors": self.vectors.detach().float().cpu().contiguous()}, str(path),
                  metadata={_META_KEY: json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Load a safetensors vector file, or a repeng/llama.cpp GGUF control vector (`.gguf`)."""
        path = Path(path)
        if not path.is_file():
            raise SteerlensError(f"vector file {path} not found", fix="check the path")
        if path.suffix == ".gguf":
            return cls.load_gguf(path)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises several error types for a bad header
            raise SteerlensError(f"{path} is not a readable safetensors file: {e}",
                                 fix="save vectors with SteeringVector.save") from e
        vecs = tensors.get("vectors")
        if vecs is None:
            # A bare file of per-layer tensors named by layer ("12" or "layer.12").
            items = sorted((int(k.split(".")[-1]), v) for k, v in tensors.items()
                           if k.split(".")[-1].isdigit())
            if not items:
                raise SteerlensError(f"{path} holds no 'vectors' tensor or per-layer tensors",
                                     fix="name tensors 'vectors' or by layer number")
            return cls(torch.stack([v.float() for _, v in items]), [k for k, _ in items], {})
        meta = json.loads(header.get(_META_KEY, "{}"))
        layers = meta.pop("layers", list(range(vecs.shape[0])))
        if vecs.ndim == 1:
            vecs = vecs[None]
        if not torch.isfinite(vecs).all():
            raise SteerlensError(f"vector in {path} contains NaN or inf", fix="rebuild the vector")
        # A zero row is legitimate (e.g. CAA at layer 0 with balanced letters); using it to
        # steer is what fails, in ActivationAddition.
        return cls(vecs.float(), [int(x) for x in layers], meta)


def _gguf_control_vector(path: Path) -> SteeringVector:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise SteerlensError(f"{path} is not a readable GGUF file: {e}",
                             fix="export control vectors with repeng or llama.cpp") from e
    items = []
    for t in reader.tensors:
        name = t.name
        if name.startswith("direction.") and name.split(".")[1].isdigit():
            items.append((int(name.split(".")[1]), torch.tensor(t.data.astype("float32")).flatten()))
    if not items:
        raise SteerlensError(f"{path} holds no 'direction.N' tensors",
                             fix="a GGUF control vector names its tensors direction.<layer>")
    items.sort(key=lambda kv: kv[0])
    hint = reader.fields.get("controlvector.model_hint")
    model_hint = bytes(hint.parts[hint.data[0]]).decode() if hint is not None else ""
    # llama.cpp adds direction.N to the output of block N: that is resid_pre of block N + 1.
    vecs = torch.stack([v for _, v in items])
    layers = [n + 1 for n, _ in items]
    return SteeringVector(vecs, layers, {"kind": "gguf_control_vector", "model_hint": model_hint,
                                         "site": "resid_pre",
                                         "source_layers": "direction.N -> resid_pre of N+1"})


def caa_rows(tokenizer, items: Sequence[ABItem], system: str | None = None):
    """Token rows (question + EOI + "(") after the chat header, and the id of each answer letter.

    Most items are A/B; a few CAA sets (survival-instinct) use letters up to H.
    """
    tpl = chat_template(tokenizer, system)
    tail = tokenizer(tpl.suffix + "(", add_special_tokens=False)["input_ids"]
    rows = [tokenizer(it.question, add_special_tokens=False)["input_ids"] + tail for it in items]
    letters = {}
    used = sorted({it.matching for it in items} | {it.not_matching for it in items} | {"A", "B"})
    for letter in used:
        ids = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise SteerlensError(f"answer letter {letter!r} is not one token for this tokenizer")
        letters[letter] = ids[0]
    return rows, letters


@torch.no_grad()
def caa_vector(
    model,
    items: Sequence[ABItem],
    layers: Sequence[int],
    behaviour: str = "",
    site: str = "resid_pre",
    system: str | None = None,
    batch_size: int = 16,
) -> SteeringVector:
    """CAA: mean over items of act(matching letter) - act(non-matching letter) at the letter token.

    The question with its choices is the user turn; the assistant turn starts "(" and the
    activation is read at the answer letter that follows.
    """
    if not items:
        raise SteerlensError(f"no A/B items for behaviour {behaviour!r}", fix="pass at least one")
    layers = check_layers(model, layers)
    tok = model.tokenizer
    rows, letters = caa_rows(tok, items, system)
    order = list(letters)
    acts = collect_continuations(model, rows, [letters[x] for x in order], layers, site,
                                 prefix=header_ids(tok, system), batch_size=batch_size,
                                 desc=f"CAA {behaviour}")
    idx = torch.arange(len(items), device=acts.device)
    match = torch.tensor([order.index(it.matching) for it in items], device=acts.device)
    other = torch.tensor([order.index(it.not_matching) for it in items], device=acts.device)
    pos = acts[idx, match]
    neg = acts[idx, other]
    vec = paired_mean_diff(pos, neg).cpu()
    meta = {"kind": "caa", "behaviour": behaviour, "model": getattr(model, "steerlens_name", ""),
            "site": site, "position": "answer letter after '(' in the assistant turn",
            "n_items": len(items)}
    return SteeringVector(vec, layers, meta)


def normalize_per_layer(vectors: dict[str, SteeringVector]) -> dict[str, SteeringVector]:
    """Rescale so every behaviour has the same norm at each layer: the mean norm across behaviours."""
    if not vectors:
        return {}
    first = next(iter(vectors.values()))
    for v in vectors.values():
        if v.layers != first.layers:
            raise SteerlensError("vectors to normalise must share layers")
    norms = torch.stack([v.vectors.norm(dim=-1) for v in vectors.values()])
    target = norms.mean(0)
    return {
        # A zero row (e.g. layer 0 with balanced answer letters) stays zero instead of NaN.
        k: SteeringVector(v.vectors / v.vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                          * target[:, None],
                          v.layers, {**v.meta, "normalized": "mean norm per layer"})
        for k, v in vectors.items()
    }


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
        """The difference in means at another layer (same position by default)."""
        p = self.positions.index(self.position if position is None else position)
        return self.means[p, self.layers.index(layer)]

    def save(self, path: str | Path, with_candidates: bool = True) -> None:
        meta = {**self.meta, "layer": self.layer, "position": self.position,
                "positions": self.positions, "layers": self.layers}
        save_file({"direction": self.direction.float().contiguous(),
                   "means": self.means.float().contiguous()}, str(path),
                  metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
        if with_candidates:
            Path(str(path) + ".candidates.json").write_text(json.dumps(self.candidates, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RefusalDirection:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
        t = load_file(str(path))
        cand_path = Path(str(path) + ".candidates.json")
        cands = json.loads(cand_path.read_text()) if cand_path.exists() else []
        return cls(t["direction"], meta.pop("layer"), meta.pop("position"), cands, t["means"],
                   meta.pop("positions"), meta.pop("layers"), meta)


def _bodies(tok, instructions: Sequence[str]) -> list[list[int]]:
    return [tok(s, add_special_tokens=False)["input_ids"] for s in instructions]


@torch.no_grad()
def refusal_means(
    model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    layers: Sequence[int] | None = None,
    system: str | None = None,
    batch_size: int = 16,
) -> tuple[Float[Tensor, "pos layer d_model"], list[int], list[int]]:
    """Difference in means (harmful - harmless) at every post-instruction position and layer."""
    if not harmful or not harmless:
        raise SteerlensError("refusal direction needs harmful and harmless prompts",
                             fix="pass at least one of each")
    tok = model.tokenizer
    layers = check_layers(model, layers if layers is not None else range(model.cfg.n_layers))
    suffix = tok(chat_template(tok, system).suffix, add_special_tokens=False)["input_ids"]
    positions = list(range(-len(suffix), 0))
    hdr = header_ids(tok, system)
    acts = {}
    for name, group in (("harmful", harmful), ("harmless", harmless)):
        rows = [b + suffix for b in _bodies(tok, group)]
        acts[name] = collect_resid(model, rows, layers, positions, prefix=hdr,
                                   batch_size=batch_size, desc=f"{name} activations")
    diff = mean_diff(acts["harmful"], acts["harmless"])  # layer pos d
    return diff.transpose(0, 1).cpu(), positions, layers


def _kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    lp, lq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@torch.no_grad()
def select_refusal_direction(
    model,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    kl_threshold: float = 0.1,
    prune_layer_fraction: float = 0.2,
    system: str | None = None,
    batch_size: int = 16,
) -> RefusalDirection:
    """Arditi et al.'s selection over (position, layer) candidates.

    Drops candidates whose ablation moves harmless next-token distributions by KL >
    `kl_threshold`, whose addition does not raise the harmless refusal score above 0, or that
    sit in the last `prune_layer_fraction` of layers; keeps the one whose ablation lowers the
    harmful refusal score most. Each candidate's three scores are returned.
    """
    n = model.cfg.n_layers
    means, all_pos, all_layers = refusal_means(model, harmful_train, harmless_train, layers,
                                               system, batch_size)
    cand_pos = list(positions) if positions is not None else all_pos
    tok = model.tokenizer
    ref_ids = refusal_token_ids(tok)
    hdr = header_ids(tok, system)
    suffix = tok(chat_template(tok, system).suffix, add_special_tokens=False)["input_ids"]
    hb, hl = _bodies(tok, harmful_val), _bodies(tok, harmless_val)
    base_harmful = next_token_logits(model, hdr, hb, suffix, None, batch_size)
    base_harmless = next_token_logits(model, hdr, hl, suffix, None, batch_size)
    base_score = refusal_score(base_harmful, ref_ids).mean().item()
    base_harmless_score = refusal_score(base_harmless, ref_ids).mean().item()
    cands = []
    grid = [(p, lay) for p in cand_pos for lay in all_layers]
    for p, lay in tqdm(grid, desc="refusal-direction candidates", leave=False):
        r = means[all_pos.index(p), all_layers.index(lay)]
        pruned = lay >= n * (1 - prune_layer_fraction)
        rec = {"position": p, "layer": lay, "norm": float(r.norm()), "pruned_layer": pruned}
        # At layer 0 the post-instruction tokens are the same embeddings for every prompt: a
        # zero difference, which has no direction to score.
        if pruned or float(r.norm()) < 1e-6:
            cands.append(rec)
            continue
        abl = ablation(r[None].to(model.cfg.device), n)
        abl_harmful = next_token_logits(model, hdr, hb, suffix, abl, batch_size)
        abl_harmless = next_token_logits(model, hdr, hl, suffix, abl, batch_size)
        add = addition(r.to(model.cfg.device), lay, 1.0, positions="all")
        add_harmless = next_token_logits(model, hdr, hl, suffix, add, batch_size)
        rec.update(
            ablation_refusal=refusal_score(abl_harmful, ref_ids).mean().item(),
            addition_refusal=refusal_score(add_harmless, ref_ids).mean().item(),
            kl=_kl(base_harmless, abl_harmless).mean().item(),
        )
        cands.append(rec)
    scored = [c for c in cands if "ablation_refusal" in c]
    if not scored:
        raise SteerlensError("no refusal-direction candidate left to score",
                             fix="include layers below the last 20% of the model")
    # Arditi's filters; on small validation sets or weak refusers none may pass, so the KL
    # threshold is relaxed (x2, x4), then "induces refusal" falls back to "raises the harmless
    # refusal score above its baseline". The thresholds actually used are recorded.
    rules = [(kl_threshold * f, 0.0) for f in (1, 2, 4)] + [(kl_threshold * 4, base_harmless_score)]
    for kl_used, induce_used in rules:
        passing = [c for c in scored if c["kl"] <= kl_used and c["addition_refusal"] > induce_used]
        if passing:
            break
    for c in scored:
        c["passes"] = c in passing
    best = min(passing or scored, key=lambda c: c["ablation_refusal"])
    r = means[all_pos.index(best["position"]), all_layers.index(best["layer"])]
    meta = {"model": getattr(model, "steerlens_name", ""), "site": "resid_pre",
            "baseline_harmful_refusal": base_score,
            "baseline_harmless_refusal": base_harmless_score,
            "kl_threshold": kl_threshold, "kl_threshold_used": kl_used,
            "induce_threshold_used": induce_used, "all_filtered": not passing,
            "n_train": [len(harmful_train), len(harmless_train)],
            "n_val": [len(harmful_val), len(harmless_val)]}
    return RefusalDirection(r, best["layer"], best["position"], cands, means, all_pos,
                            all_layers, meta)
