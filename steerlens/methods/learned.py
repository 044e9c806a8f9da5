"""A learned safety component of a steering vector, after "Safety Cost of Steering Vectors Is
Separable and Reducible" (arXiv:2608.08383): a unit direction u whose removal from the vector,
v_u = v − (v·u) u, keeps harmful prompts' refusal at the unsteered level while keeping most of
the vector's behaviour effect, found by optimisation through the model.

Penalised form, minimised by Adam over u (normalised in the loss), starting from the refusal
direction at the steering layer (so step 0 is the ⊥1 mitigation):

    L(u) = mean_h (s_h(v_u) − s_h(0))² / mean_h (s_h(v) − s_h(0))²  +  λ (1 − E(v_u) / E(v))²

with s_h the first-token refusal score (log-odds of the refusal tokens) of harmful training
prompt h (both terms are 1 for the raw vector and 0 at their goal), and E the mean shift of the behaviour
logit difference (matching − non-matching answer letter) on training A/B items, both answer
orders. Everything is computed on training data (never JBB); the steering acts where the
audit's does (the tail after the user's message, `resid_pre` of the layer). The paper's exact
objective and constraint handling are not reproduced here (named deviation: a penalty instead
of a constraint, λ = 1, a few steps on small prompt sets to fit a CPU budget); the curve of
every step is recorded so the budget's effect can be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.generation import refusal_log_odds
from steerlens.core.hooks import hook_name
from steerlens.core.prompts import PromptSet, chat_prompts, full_batch
from steerlens.core.steering import add_to_tail
from steerlens.datasets.loaders import ABItem
from steerlens.errors import SteerlensError
from steerlens.methods.caa import AnswerPrompts, answer_prompts


@dataclass
class LearnedComponent:
    """The unit direction removed from the vector, and the optimisation's curve."""

    direction: Float[Tensor, "d_model"]
    curve: list[dict] = field(default_factory=list)
    best_step: int = 0

    def remove_from(self, v: Float[Tensor, "d_model"]) -> Float[Tensor, "d_model"]:
        u = self.direction.to(v)
        return v - (v @ u) * u


def _forward_last(model, prompts: PromptSet, layer: int, delta: Tensor | None) -> Tensor:
    """Last-position logits of every prompt (left-padded, whole), `delta` added on the tail."""
    batch = full_batch(prompts, model.tokenizer).to(model.cfg.device)
    hooks = [] if delta is None else [
        (hook_name(layer), lambda x, hook: add_to_tail(x, delta, prompts.n_tail))]
    logits = model.run_with_hooks(batch.input_ids, attention_mask=batch.attention_mask,
                                  fwd_hooks=hooks)
    return logits[:, -1].float()


@dataclass
class _Objective:
    model: object
    layer: int
    harmful: PromptSet
    answers: AnswerPrompts
    refusal_ids: list[int]
    base_score: Tensor
    base_gap: Tensor
    raw_effect: float
    weight: float
    raw_drift: float = 1.0  # mean squared refusal-score drift of the raw vector

    def gap(self, delta: Tensor | None) -> Tensor:
        logits = _forward_last(self.model, self.answers.prompts, self.layer, delta)
        idx = torch.arange(len(self.answers.matching))
        return logits[idx, self.answers.matching] - logits[idx, self.answers.not_matching]

    def score(self, delta: Tensor | None) -> Tensor:
        return refusal_log_odds(_forward_last(self.model, self.harmful, self.layer, delta),
                                self.refusal_ids)

    def __call__(self, v_u: Tensor) -> tuple[Tensor, dict]:
        s, g = self.score(v_u), self.gap(v_u)
        safety = ((s - self.base_score) ** 2).mean() / self.raw_drift
        kept = (g - self.base_gap).mean() / self.raw_effect
        loss = safety + self.weight * (1 - kept) ** 2
        return loss, {"loss": loss.item(), "safety": safety.item(), "kept": kept.item(),
                      "refusal_gap": (s - self.base_score).mean().item()}


def _objective(model, v: Tensor, layer: int, harmful: Sequence[str], items: Sequence[ABItem],
               weight: float, system: str | None) -> _Objective:
    from steerlens.methods.refusal import refusal_token_ids

    hp = chat_prompts(model.tokenizer, list(harmful), system)
    ans = answer_prompts(model.tokenizer, items, system)
    obj = _Objective(model, layer, hp, ans, refusal_token_ids(model.tokenizer), torch.empty(0),
                     torch.empty(0), 1.0, weight)
    with torch.no_grad():
        obj.base_score, obj.base_gap = obj.score(None), obj.gap(None)
        obj.raw_effect = float((obj.gap(v) - obj.base_gap).mean())
        drift = float(((obj.score(v) - obj.base_score) ** 2).mean())
        obj.raw_drift = max(drift, 1e-3 * float(obj.base_score.var()) + 1e-6)
    if abs(obj.raw_effect) < 1e-6:
        raise SteerlensError("the vector has no behaviour effect on the training items",
                             fix="learn the component for a vector that steers its behaviour")
    return obj


def learned_component(model, v: Float[Tensor, "d_model"], layer: int, harmful: Sequence[str],
                      items: Sequence[ABItem], init: Float[Tensor, "d_model"], steps: int = 10,
                      lr: float = 0.05, weight: float = 1.0, system: str | None = None
                      ) -> LearnedComponent:
    """Optimise u from `init` for `steps` Adam steps (module docstring); the u of the lowest
    loss seen is returned, with every step's loss, safety term, effect kept and cosine to init."""
    dev = model.cfg.device
    v = v.detach().float().to(dev)
    obj = _objective(model, v, layer, harmful, items, weight, system)
    init = (init.detach().float() / init.norm()).to(dev)
    u = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    best, curve = (float("inf"), init.clone(), 0), []
    try:
        with torch.enable_grad():
            for step in range(steps + 1):
                unit_u = u / u.norm()
                loss, rec = obj(v - (v @ unit_u) * unit_u)
                rec.update(step=step, cosine_to_init=float(unit_u.detach() @ init))
                curve.append(rec)
                if rec["loss"] < best[0]:
                    best = (rec["loss"], unit_u.detach().clone(), step)
                if step < steps:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        for p in params:
            p.requires_grad_(True)
    return LearnedComponent(best[1].cpu(), curve, best[2])
