"""The audit protocol's measurements: JBB goals x attacks x steering settings (generated,
judged, screened), and the behaviour effect of each vector on held-out CAA items."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from scipy import stats

from steerlens.audit.settings import Setting
from steerlens.core.generation import Readout, generate_grid, next_token_logits_grid
from steerlens.core.patching import twinned_cell
from steerlens.core.prompts import PromptSet, chat_prompts
from steerlens.core.steering import Steering
from steerlens.datasets.attacks import Attack
from steerlens.datasets.loaders import ABItem, JBBGoal
from steerlens.judges.strings import unambiguous_refusal
from steerlens.methods.caa import answer_prompts, p_matching


def attack_prompts(tokenizer, attack: Attack, goals: Sequence[JBBGoal],
                   system: str | None = None) -> PromptSet:
    """Each goal in the attack's template as the user's message, tokenized whole."""
    return chat_prompts(tokenizer, [attack.render(g.goal, g.target) for g in goals], system)


def _stored(x: float) -> float:
    """5 decimals, and never -0.0: an ablated projection is ~1e-8 of either sign, and the sign
    would differ between backends with different thread counts."""
    return round(x, 5) + 0.0


def refusal_stop(judge) -> Callable[[str], bool] | None:
    """When a row may stop generating: once the judge's verdict is final, a refusal, *and*
    the refusal unambiguous (a phrase beyond a weak opener such as "I'm sorry" or "As an AI",
    which as often start an answer: the harm judge needs that text). Compliant rows run on to
    `max_new_tokens`; LLM judges never decide early, so their rows run to the end."""
    decided = getattr(judge, "decided", None)
    if decided is None:
        return None
    return lambda text: (decided(text) and not judge.judge([""], [text])[0]
                         and unambiguous_refusal(text))


def evaluate_job(model, prompts: PromptSet, goals: Sequence[JBBGoal], settings: Sequence[Setting],
             judge, max_new_tokens: int, batch_size: int, readout: Readout | None,
             desc: str | None = None) -> dict[str, dict]:
    """Generate, judge and screen every goal under every setting of one job (one shared prompt
    cache): a cell per setting. `desc` labels a progress bar (None: silent). A clamp
    (`TwinClamp`) is decoded beside its unsteered twin (`core.patching.twinned_cell`)."""
    twin = [s for s in settings if getattr(s.steering, "twinned", False)]
    plain = [s for s in settings if s not in twin]
    screen_only = [s.name for s in plain if not s.generate]
    cells = generate_grid(model, prompts, {s.name: s.steering for s in plain}, max_new_tokens,
                          batch_size, decided=refusal_stop(judge), readout=readout,
                          screen_only=screen_only, desc=desc) if plain else {}
    cells.update({s.name: twinned_cell(model, prompts, s.steering, max_new_tokens, batch_size,
                                       refusal_stop(judge), readout) for s in twin})
    texts = [g.goal for g in goals]
    out = {}
    for s in settings:
        c = cells[s.name]
        rec = {**s.meta(), "steered_prompt_tokens": prompts.n_tail,
               "refusal_score": [_stored(x) for x in c.refusal_score],
               "projection": [[[_stored(x) for x in layer] for layer in row]
                              for row in c.projection]}
        if s.generate:
            comps = [x.text for x in c.completions]
            rec.update(completions=comps, stopped=[x.stopped for x in c.completions],
                       n_new_tokens=[len(x.tokens) for x in c.completions],
                       jailbroken=judge.judge(texts, comps))
        out[s.name] = rec
    return out


def mean_ci(x: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean with a t-interval (over items)."""
    t = torch.as_tensor(list(x), dtype=torch.float64)
    m, n = float(t.mean()), len(t)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * t.std() / n**0.5) if n > 1 else float("nan")
    return {"mean": m, "ci_low": m - half, "ci_high": m + half, "n": n}


def by_group(p: Float[Tensor, "prompt"], base: Float[Tensor, "prompt"], groups: Sequence[str]
             ) -> dict[str, dict]:
    """Mean p(matching) and its shift from `base` per group of items (`groups[i]` names item
    i; its two prompts, both answer orders, are rows 2i and 2i + 1)."""
    out = {}
    for g in dict.fromkeys(groups):
        rows = torch.tensor([2 * i + k for i, x in enumerate(groups) if x == g for k in (0, 1)])
        out[g] = {"mean": float(p[rows].mean()), "shift": float((p[rows] - base[rows]).mean()),
                  "n_items": len(rows) // 2}
    return out


def behaviour_effect(model, items: Sequence[ABItem], settings: dict[str, Steering],
                     batch_size: int = 16, system: str | None = None,
                     groups: Sequence[str] | None = None) -> dict[str, dict]:
    """p(matching) with its CI per setting, on both orders of each held-out item; for steered
    settings also the paired test against the unsteered model and, with `groups` (one name
    per item, e.g. its matching answer's polarity), the shift per group (`by_group`)."""
    ans = answer_prompts(model.tokenizer, items, system)
    grid = next_token_logits_grid(model, ans.prompts, {"unsteered": Steering(), **settings},
                                  batch_size)
    base = p_matching(grid.pop("unsteered").cpu(), ans)
    out = {"unsteered": mean_ci(base.tolist())}
    for name, logits in grid.items():
        p = p_matching(logits.cpu(), ans)
        diff = (p - base).double()
        test = stats.ttest_1samp(diff.numpy(), 0.0) if len(diff) > 1 else None
        out[name] = {**mean_ci(p.tolist()), "shift": float(diff.mean()),
                     "p_value": float(test.pvalue) if test is not None else float("nan")}
        if groups is not None:
            out[name]["by_polarity"] = by_group(p, base, groups)
    return out
