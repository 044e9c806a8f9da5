"""A learned safety component of a steering vector, after "Safety Cost of Steering Vectors Is
Separable and Reducible" (arXiv:2608.08383): a unit direction u whose removal from the vector,
v_u = v − (v·u) u, keeps harmful prompts' refusal at the unsteered level while keeping the
vector's behaviour effect, found by optimisation through the model.

Two terms, both 1 for the raw vector and 0 at their goal's ideal:

    S(u) = mean_h (s_h(v_u) − s_h(0))² / mean_h (s_h(v) − s_h(0))²      (safety drift)
    K(u) = E(v_u) / E(v)                                                (behaviour kept)

with s_h the first-token refusal score (log-odds of the refusal tokens) of harmful prompt h,
and E the mean shift of the behaviour logit difference (matching − non-matching answer
letter) on A/B items, both answer orders. Adam on u (normalised in the loss) from the refusal
direction at the steering layer, so step 0 is the ⊥1 mitigation. Two forms (`FORMS`):

- **constrained** (default; the paper's form): min S(u) subject to K(u) ≥ κ, solved by the
  augmented Lagrangian for an inequality (Powell–Hestenes–Rockafellar; Nocedal & Wright,
  *Numerical Optimization* §17.4): Adam steps on S + ψ(κ − K; λ, μ); every `inner` steps
  λ ← max(0, λ + μ(κ − K)), and μ grows ×`mu_growth` while the violation has not fallen to a
  quarter of the previous one. Its validation loss is the exact L1 merit S + ρ·max(0, κ − K)
  (ρ = `merit`; for ρ above the constraint's multiplier its minimisers are the constrained
  ones, N&W Thm 17.3).
- **penalty** (named deviation): S + w·(1 − K)². Not equivalent to the constraint: a finite w
  trades S against K, so whenever the constraint binds the penalty's minimiser keeps less than
  κ (∇S = 2w(1 − K)∇K ≠ 0 needs K < 1), and it also penalises keeping *more* than the raw
  vector (K > 1). Its validation loss is the same expression on the validation sets.

**Stopping rule** (`stop="validation"`): after every step the validation loss is computed on
separate harmful prompts and A/B items (never JBB; disjoint from the training ones); training
stops when the best validation loss improved by less than `tol` (relative) over the last
`window` steps, or at `max_steps`; the u of the best validation step is returned, and the
curve (training and validation terms per step) and why it stopped are recorded.
`stop="steps"` is the earlier behaviour (kept for old runs): exactly `max_steps` steps, no
validation, the u of the lowest training loss (with form="penalty", w = 1, 8 prompts, 4 items
and 10 steps it reproduces the first mitigation runs).

**Budget.** The steering acts on the tail after the user's message only, so the prompts'
bodies run once (their KV caches kept, `_Tails`) and a step runs only the tails (5-8 tokens
per prompt): with the defaults (32 harmful prompts and 16 items × 2 orders to train, as many to
validate) ~480 tail tokens forward and backward, and ~480 forward for validation. Measured on
the tiny test model on 2 shared cores under a load average of ~10: ~8 s per step (a tail pass
alone 0.05-0.35 s; the load dominates). Extrapolated to the 0.5B (917 forward tokens/s to layer
16 of 24 on CPU, `benchmarks/results_cpu.json`): ~2-3 s per step plus ~20 s of setup, so the
150-step cap is at most ~8 min per vector (docs/mitigations.md); not yet measured there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.generation import _body_cache, refusal_log_odds
from steerlens.core.hooks import hook_name
from steerlens.core.kvcache import build_prefix_cache, copy_cache, fold_prefix
from steerlens.core.prompts import PromptSet, chat_prompts, full_batch, length_batches
from steerlens.core.steering import Steering, add_to_tail
from steerlens.datasets.loaders import ABItem
from steerlens.errors import SteerlensError
from steerlens.methods.caa import AnswerPrompts, answer_prompts

FORMS = ("constrained", "penalty")
STOPS = ("validation", "steps")

# S and K of a unit direction (scalar tensors, differentiable in u), and a record of the numbers.
Terms = Callable[[Tensor], tuple[Tensor, Tensor, dict]]


@dataclass(frozen=True)
class Schedule:
    """How u is trained (module docstring); the defaults are the constrained form with the
    validation stopping rule."""

    form: str = "constrained"
    stop: str = "validation"
    max_steps: int = 150
    lr: float = 0.05
    window: int = 10
    tol: float = 0.01
    keep: float = 0.9  # κ: the behaviour effect kept, at least (constrained form)
    weight: float = 1.0  # w (penalty form)
    mu: float = 10.0  # the augmented Lagrangian's initial μ
    mu_growth: float = 2.0
    inner: int = 5  # Adam steps between multiplier updates
    merit: float = 10.0  # ρ of the constrained form's validation merit

    def __post_init__(self) -> None:
        if self.form not in FORMS or self.stop not in STOPS:
            raise SteerlensError(f"unknown learned form {self.form!r} or stop rule {self.stop!r}",
                                 fix=f"use a form of {FORMS} and a stop rule of {STOPS}")
        if self.max_steps < 1 or self.window < 1 or self.tol < 0 or self.inner < 1:
            raise SteerlensError("the learned schedule needs max_steps, window, inner >= 1 and tol >= 0",
                                 fix="e.g. max_steps=150, window=10, tol=0.01")


@dataclass
class LearnedComponent:
    """The unit direction removed from the vector, and the optimisation's curve."""

    direction: Float[Tensor, "d_model"]
    curve: list[dict] = field(default_factory=list)
    best_step: int = 0
    stopped: dict = field(default_factory=dict)

    def remove_from(self, v: Float[Tensor, "d_model"]) -> Float[Tensor, "d_model"]:
        u = self.direction.to(v)
        return v - (v @ u) * u


# -- the losses and the stopping rule --------------------------------------------------------------

@dataclass
class _Multipliers:
    """The augmented Lagrangian's λ and μ, and the last violation (for μ's growth)."""

    lam: float
    mu: float
    violation: float = float("inf")

    def psi(self, c: Tensor) -> Tensor:
        """PHR term for the inequality c ≤ 0 (N&W 17.65)."""
        if self.lam + self.mu * float(c.detach()) >= 0:
            return self.lam * c + self.mu / 2 * c ** 2
        return torch.zeros_like(c) - self.lam ** 2 / (2 * self.mu)

    def update(self, c: float, growth: float) -> None:
        self.lam = max(0.0, self.lam + self.mu * c)
        v = max(c, 0.0)
        if v > 0.25 * self.violation:
            self.mu *= growth
        self.violation = v


def train_loss(s: Tensor, k: Tensor, sched: Schedule, mult: _Multipliers) -> Tensor:
    """The loss Adam minimises at this step (penalty, or the augmented Lagrangian)."""
    if sched.form == "penalty":
        return s + sched.weight * (1 - k) ** 2
    return s + mult.psi(sched.keep - k)


def val_loss(s: float, k: float, sched: Schedule) -> float:
    """The loss the stopping rule and the best step read (penalty, or the exact L1 merit)."""
    if sched.form == "penalty":
        return s + sched.weight * (1 - k) ** 2
    return s + sched.merit * max(0.0, sched.keep - k)


def should_stop(best_so_far: Sequence[float], window: int, tol: float) -> bool:
    """The best validation loss improved by less than `tol` (relative) over `window` steps."""
    if len(best_so_far) <= window:
        return False
    before, now = best_so_far[-1 - window], best_so_far[-1]
    return before - now <= tol * max(abs(before), 1e-12)


# -- the optimisation ------------------------------------------------------------------------------

def _record(step: int, unit_u: Tensor, init: Tensor, s: Tensor, k: Tensor, loss: Tensor,
            rec: dict) -> dict:
    return {**rec, "loss": loss.item(), "safety": s.item(), "kept": k.item(), "step": step,
            "cosine_to_init": float(unit_u.detach() @ init)}


def _validate(val: Terms, unit_u: Tensor, sched: Schedule) -> dict:
    with torch.no_grad():
        s, k, rec = val(unit_u)
    return {"val_loss": val_loss(s.item(), k.item(), sched), "val_safety": s.item(),
            "val_kept": k.item(), **{f"val_{n}": x for n, x in rec.items()}}


def train_direction(train: Terms, val: Terms | None, init: Float[Tensor, "d_model"],
                    sched: Schedule) -> LearnedComponent:
    """Adam on u from `init` under `sched` (module docstring): the best step's unit u, the curve
    of every step, and why it stopped. `val` is needed by the validation stopping rule."""
    if sched.stop == "validation" and val is None:
        raise SteerlensError("the validation stopping rule needs validation terms",
                             fix="pass validation prompts and items, or stop='steps'")
    init = init.detach().float() / init.norm()
    u = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=sched.lr)
    mult, curve, best_seen = _Multipliers(0.0, sched.mu), [], []
    # the best step by: the validation loss; without validation, the training loss (penalty)
    # or the training merit (constrained: the Lagrangian's value moves with λ and μ)
    key = "val_loss" if sched.stop == "validation" else "loss" if sched.form == "penalty" else "merit"
    best = (float("inf"), init.clone(), 0)
    stopped = {"reason": "max_steps", "max_steps": sched.max_steps}
    with torch.enable_grad():
        for step in range(sched.max_steps + 1):
            unit_u = u / u.norm()
            s, k, rec = train(unit_u)
            loss = train_loss(s, k, sched, mult)
            rec = _record(step, unit_u, init, s, k, loss, rec)
            if sched.form == "constrained":
                rec.update(lam=mult.lam, mu=mult.mu, merit=val_loss(s.item(), k.item(), sched))
            if sched.stop == "validation":
                rec.update(_validate(val, unit_u.detach(), sched))
            curve.append(rec)
            if rec[key] < best[0]:
                best = (rec[key], unit_u.detach().clone(), step)
            best_seen.append(best[0])
            if sched.stop == "validation" and should_stop(best_seen, sched.window, sched.tol):
                stopped = {"reason": "converged", "step": step, "window": sched.window,
                           "tol": sched.tol}
                break
            if step == sched.max_steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched.form == "constrained" and (step + 1) % sched.inner == 0:
                mult.update(sched.keep - k.item(), sched.mu_growth)
    return LearnedComponent(best[1], curve, best[2], {**stopped, "best_by": key})


# -- the model's terms -----------------------------------------------------------------------------

def _forward_last(model, prompts: PromptSet, layer: int, delta: Tensor | None) -> Tensor:
    """Last-position logits of every prompt (left-padded, whole), `delta` added on the tail
    (the first runs' pass, kept for `stop="steps"` so they recompute bit for bit)."""
    batch = full_batch(prompts, model.tokenizer).to(model.cfg.device)
    hooks = [] if delta is None else [
        (hook_name(layer), lambda x, hook: add_to_tail(x, delta, prompts.n_tail))]
    logits = model.run_with_hooks(batch.input_ids, attention_mask=batch.attention_mask,
                                  fwd_hooks=hooks)
    return logits[:, -1].float()


class _Whole:
    """Every step runs the whole prompts (`_forward_last`)."""

    def __init__(self, model, prompts: PromptSet):
        self.model, self.prompts = model, prompts

    def __call__(self, layer: int, delta: Tensor | None) -> Tensor:
        return _forward_last(self.model, self.prompts, layer, delta)


class _Tails:
    """The prompts' bodies (everything before the steered tail) run once, unsteered, and their
    KV caches kept; every step runs only the tails from a copy of them (the steering changes
    nothing before the tail), so a step costs a few tokens per prompt."""

    def __init__(self, model, prompts: PromptSet, batch_size: int = 32):
        self.model, self.prompts = model, fold_prefix(model, prompts)
        prefix = build_prefix_cache(model, self.prompts.prefix)
        self.batches = length_batches(self.prompts.rows, batch_size)
        with torch.no_grad():
            self.caches = [_body_cache(model, prefix, [self.prompts.bodies[i] for i in idx], Steering())
                           for idx in self.batches]

    def __call__(self, layer: int, delta: Tensor | None) -> Tensor:
        hooks = [] if delta is None else [(hook_name(layer), lambda x, hook: x + delta.to(x.dtype))]
        out = [None] * len(self.prompts)
        for idx, (cache, mask) in zip(self.batches, self.caches):
            step = torch.tensor([self.prompts.tails[i] for i in idx], device=self.model.cfg.device)
            logits = self.model.run_with_hooks(
                step, fwd_hooks=hooks, attention_mask=torch.cat([mask, torch.ones_like(step)], 1),
                past_key_values=copy_cache(cache), logits_to_keep=1)
            for j, i in enumerate(idx):
                out[i] = logits[j, -1].float()
        return torch.stack(out)


@dataclass
class _Objective:
    """S and K of v_u on one set of harmful prompts and A/B items (module docstring)."""

    v: Tensor
    layer: int
    harmful: Callable[[int, Tensor | None], Tensor]  # last-position logits of the harmful prompts
    answers: AnswerPrompts
    answer_logits: Callable[[int, Tensor | None], Tensor]
    refusal_ids: list[int]
    base_score: Tensor
    base_gap: Tensor
    raw_effect: float
    raw_drift: float = 1.0  # mean squared refusal-score drift of the raw vector

    def gap(self, delta: Tensor | None) -> Tensor:
        logits = self.answer_logits(self.layer, delta)
        idx = torch.arange(len(self.answers.matching))
        return logits[idx, self.answers.matching] - logits[idx, self.answers.not_matching]

    def score(self, delta: Tensor | None) -> Tensor:
        return refusal_log_odds(self.harmful(self.layer, delta), self.refusal_ids)

    def terms(self, v_u: Tensor) -> tuple[Tensor, Tensor, dict]:
        s, g = self.score(v_u), self.gap(v_u)
        safety = ((s - self.base_score) ** 2).mean() / self.raw_drift
        kept = (g - self.base_gap).mean() / self.raw_effect
        return safety, kept, {"refusal_gap": (s - self.base_score).mean().item()}

    def __call__(self, unit_u: Tensor) -> tuple[Tensor, Tensor, dict]:
        return self.terms(self.v - (self.v @ unit_u) * unit_u)


def _objective(model, v: Tensor, layer: int, harmful: Sequence[str], items: Sequence[ABItem],
               system: str | None, tails: bool = True) -> _Objective:
    """S and K on these prompts and items, their unsteered and raw values computed once."""
    from steerlens.methods.refusal import refusal_token_ids

    run = _Tails if tails else _Whole
    v = v.detach().float().to(model.cfg.device)
    ans = answer_prompts(model.tokenizer, items, system)
    obj = _Objective(v, layer, run(model, chat_prompts(model.tokenizer, list(harmful), system)), ans,
                     run(model, ans.prompts), refusal_token_ids(model.tokenizer), torch.empty(0),
                     torch.empty(0), 1.0)
    with torch.no_grad():
        obj.base_score, obj.base_gap = obj.score(None), obj.gap(None)
        obj.raw_effect = float((obj.gap(v) - obj.base_gap).mean())
        drift = float(((obj.score(v) - obj.base_score) ** 2).mean())
        obj.raw_drift = max(drift, 1e-3 * float(obj.base_score.var()) + 1e-6)
    if abs(obj.raw_effect) < 1e-6:
        raise SteerlensError("the vector has no behaviour effect on the training items",
                             fix="learn the component for a vector that steers its behaviour")
    return obj


def _check_disjoint(harmful, items, val_harmful, val_items) -> None:
    if set(harmful) & set(val_harmful) or {i.question for i in items} & {i.question for i in val_items}:
        raise SteerlensError("the learned component's validation prompts overlap its training ones",
                             fix="pass disjoint training and validation prompts and items")


def learned_component(model, v: Float[Tensor, "d_model"], layer: int, harmful: Sequence[str],
                      items: Sequence[ABItem], init: Float[Tensor, "d_model"],
                      sched: Schedule = Schedule(), val_harmful: Sequence[str] = (),
                      val_items: Sequence[ABItem] = (), system: str | None = None
                      ) -> LearnedComponent:
    """Train u from `init` under `sched` on the training prompts and items, judged on the
    validation ones (module docstring); the model's weights are left untouched."""
    val = None
    if sched.stop == "validation":
        if not val_harmful or not val_items:
            raise SteerlensError("the validation stopping rule needs validation harmful prompts "
                                 "and A/B items", fix="pass val_harmful and val_items, or stop='steps'")
        _check_disjoint(harmful, items, val_harmful, val_items)
        val = _objective(model, v, layer, val_harmful, val_items, system)
    obj = _objective(model, v, layer, harmful, items, system, tails=sched.stop == "validation")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        comp = train_direction(obj, val, init.to(obj.v), sched)
    finally:
        for p in params:
            p.requires_grad_(True)
    comp.direction = comp.direction.cpu()
    return comp
