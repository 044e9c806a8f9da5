"""The audit protocol: JBB goals x template attacks x steering settings, judged, with statistics."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerlens.attacks import Attack
from steerlens.data import ABItem, Behavior
from steerlens.directions import caa_rows
from steerlens.generation import generate_grid, next_token_logits_grid
from steerlens.geometry import orthogonalize, orthogonalize_subspace, rescale
from steerlens.judges import RefusalStringJudge, refusal_score, refusal_token_ids
from steerlens.prompts import chat_template, header_ids
from steerlens.steering import Steering, addition


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] if text else []


def attack_prompts(tok, attack: Attack, behaviors: Sequence[Behavior], system: str | None = None):
    """(prefix ids, body ids per goal, suffix ids): header+template head, goal part, tail+EOI."""
    tpl = chat_template(tok, system)
    head, _, tail = attack.segments("x", "x")
    prefix = header_ids(tok, system) + _ids(tok, head)
    bodies = [_ids(tok, attack.segments(b.goal, b.target)[1]) for b in behaviors]
    suffix = _ids(tok, tail + tpl.suffix)
    return prefix, bodies, suffix


def steering_settings(
    vector: torch.Tensor,
    layer: int,
    multiplier: float,
    refusal_dir: torch.Tensor,
    subspace_basis: torch.Tensor | None,
    seed: int,
    prefix: str,
    positions: str = "after_instruction",
) -> dict[str, Steering]:
    """The per-behaviour settings: +m*v, -m*v, +m*v_perp (1-D), +m*v_perpk (k-D), random control."""
    v = vector.float()
    gen = torch.Generator().manual_seed(seed)
    rand = rescale(torch.randn(v.shape, generator=gen), v.norm()).float()
    out = {
        f"{prefix}+": addition(v, layer, multiplier, positions=positions),
        f"{prefix}-": addition(v, layer, -multiplier, positions=positions),
        f"{prefix}+perp1": addition(orthogonalize(v, refusal_dir), layer, multiplier,
                                    positions=positions),
        f"{prefix}+random": addition(rand, layer, multiplier, positions=positions),
    }
    if subspace_basis is not None:
        out[f"{prefix}+perpk"] = addition(orthogonalize_subspace(v, subspace_basis), layer,
                                          multiplier, positions=positions)
    return out


def run_attack(
    model,
    attack: Attack,
    behaviors: Sequence[Behavior],
    settings: dict[str, Steering],
    judge=None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    system: str | None = None,
) -> dict[str, dict]:
    """Generate and judge every goal under every setting; the prompt cache is shared by settings."""
    judge = judge or RefusalStringJudge()
    prefix, bodies, suffix = attack_prompts(model.tokenizer, attack, behaviors, system)
    decided = getattr(judge, "decided", None)
    comps = generate_grid(model, prefix, bodies, suffix, settings, max_new_tokens, batch_size,
                          decided=decided, desc=f"attack {attack.name}")
    goals = [b.goal for b in behaviors]
    out = {}
    for name, cs in comps.items():
        texts = [c.text for c in cs]
        out[name] = {"completions": texts, "stopped": [c.stopped for c in cs],
                     "n_new_tokens": [len(c.tokens) for c in cs],
                     "jailbroken": judge.judge(goals, texts)}
    return out


def refusal_screen(
    model,
    attack: Attack,
    behaviors: Sequence[Behavior],
    settings: dict[str, Steering],
    batch_size: int = 16,
    system: str | None = None,
) -> dict[str, list[float]]:
    """Logit refusal score of the first response token per goal and setting (no generation)."""
    tok = model.tokenizer
    prefix, bodies, suffix = attack_prompts(tok, attack, behaviors, system)
    ids = refusal_token_ids(tok)
    logits = next_token_logits_grid(model, prefix, bodies, suffix, settings, batch_size)
    return {n: refusal_score(v, ids).tolist() for n, v in logits.items()}


def behaviour_effect(
    model,
    items: Sequence[ABItem],
    settings: dict[str, Steering],
    batch_size: int = 16,
    system: str | None = None,
) -> dict[str, float]:
    """Mean probability of the behaviour-matching letter (normalised over A/B) per setting."""
    tok = model.tokenizer
    rows, letters = caa_rows(tok, items, system)
    n_tail = len(_ids(tok, chat_template(tok, system).suffix + "("))
    bodies = [r[:-n_tail] for r in rows]
    suffix = rows[0][-n_tail:]
    match = torch.tensor([letters[it.matching] for it in items])
    other = torch.tensor([letters[it.not_matching] for it in items])
    idx = torch.arange(len(items))
    out = {}
    grid = next_token_logits_grid(model, header_ids(tok, system), bodies, suffix, settings,
                                  batch_size)
    for name, logits in grid.items():
        logits = logits.cpu()
        pair = torch.stack([logits[idx, match], logits[idx, other]], dim=1)
        out[name] = float(torch.softmax(pair, -1)[:, 0].mean())
    return out
