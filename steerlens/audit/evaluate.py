"""The audit protocol's measurements: JBB goals x attacks x steering settings (generated,
judged, screened), and the behaviour effect of each vector on held-out CAA items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import torch
from jaxtyping import Float
from scipy import stats
from torch import Tensor

from steerlens.core.generation import Readout, generate_grid, next_token_logits_grid
from steerlens.core.prompts import PromptSet, chat_prompts, longest_common_prefix
from steerlens.core.steering import Steering
from steerlens.datasets.attacks import Attack
from steerlens.datasets.loaders import ABItem, Behavior
from steerlens.judges.strings import unambiguous_refusal
from steerlens.methods.caa import balanced, pair_prompts


class Kind(str, Enum):
    """What a steering setting is, as data (never parsed from its name)."""

    BASELINE = "baseline"
    PLUS = "+v"
    MINUS = "-v"
    PERP1 = "+v_perp1"  # orthogonalised against the refusal direction (the paper's mitigation)
    PERPK = "+v_perpk"  # orthogonalised against the refusal subspace
    RANDOM = "random"  # norm-matched random direction (null)
    SHUFFLED = "shuffled"  # label-shuffled CAA vector (null)
    COVARIANCE = "covariance"  # drawn from the covariance of residual activations (null)
    PAIR_DIFF = "pair_diff"  # difference of a random prompt pair's activations (null)
    RANDOM_MATCHED = "random_matched"  # random per layer with a deployed vector's norms (null)
    SCREEN = "+v_screen"  # +v at a further dose, screened at the first step only
    COMPENSATED = "+v_comp"  # +v with downstream compensation (audit.mitigate)
    GATED = "+v_gated"  # +v behind CAST's condition gate (audit.mitigate)
    LEARNED = "+v_learned"  # +v less its learned safety component (audit.mitigate)
    REFUSAL_ABLATED = "refusal_ablated"  # directional ablation of the refusal direction
    SUBSPACE_ABLATED = "subspace_ablated"  # ablation of the k-D refusal subspace
    REFUSAL_ADDED = "refusal_added"  # the refusal direction added at its layer


@dataclass(frozen=True)
class Setting:
    """One steering condition of the grid."""

    name: str
    kind: Kind
    steering: Steering = field(default_factory=Steering, repr=False)
    vector: str | None = None  # the audited vector it belongs to
    dose: float = 0.0  # signed, in the run's dose unit
    generate: bool = True  # False: screened at the first step only (most null directions)
    protocol: str = "caa"  # "deployed": as the vector's library applies it (audit.deployed)

    def meta(self) -> dict:
        extra = {} if self.protocol == "caa" else {"protocol": self.protocol}
        return {"kind": self.kind.value, "vector": self.vector, "dose": self.dose,
                "generated": self.generate, **extra}


def attack_prompts(tokenizer, attack: Attack, goals: Sequence[Behavior],
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


def evaluate_job(model, prompts: PromptSet, goals: Sequence[Behavior], settings: Sequence[Setting],
             judge, max_new_tokens: int, batch_size: int, readout: Readout | None,
             desc: str | None = None) -> dict[str, dict]:
    """Generate, judge and screen every goal under every setting of one job (one shared prompt
    cache): a cell per setting. `desc` labels a progress bar (None: silent)."""
    steer = {s.name: s.steering for s in settings}
    screen_only = [s.name for s in settings if not s.generate]
    cells = generate_grid(model, prompts, steer, max_new_tokens, batch_size,
                          decided=refusal_stop(judge), readout=readout,
                          screen_only=screen_only, desc=desc)
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


@dataclass(frozen=True)
class AnswerPrompts:
    """Held-out A/B items as prompts ending where the answer starts, with the natural ids of
    the matching and non-matching answers (`(A` vs `(B`, or `A` vs `B` after `(`)."""

    prompts: PromptSet
    matching: list[int]
    not_matching: list[int]


def answer_prompts(tokenizer, items: Sequence[ABItem], system: str | None = None) -> AnswerPrompts:
    """Both orders of each item; the prompt is the common part of its two answered texts."""
    pairs = pair_prompts(tokenizer, balanced(items), system)
    stems, match, other = [], [], []
    for i in range(0, len(pairs), 2):
        a, b = pairs.full(i), pairs.full(i + 1)
        n = longest_common_prefix([a, b])
        stems.append(a[:n])
        match.append(a[n])
        other.append(b[n])
    cut = len(pairs.prefix)
    n_tail = pairs.n_tail - (len(pairs.full(0)) - len(stems[0]))
    ps = PromptSet(pairs.prefix, [s[cut:] for s in stems], max(n_tail, 1), pairs.texts[0::2])
    return AnswerPrompts(ps, match, other)


def p_matching(logits: Float[Tensor, "n vocab"], ans: AnswerPrompts) -> Float[Tensor, "n"]:
    """p(matching answer) normalised over the two answers, per prompt."""
    idx = torch.arange(len(ans.matching))
    pair = torch.stack([logits[idx, ans.matching], logits[idx, ans.not_matching]], dim=1)
    return torch.softmax(pair.float(), -1)[:, 0]


def mean_ci(x: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean with a t-interval (over items)."""
    t = torch.as_tensor(list(x), dtype=torch.float64)
    m, n = float(t.mean()), len(t)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * t.std() / n**0.5) if n > 1 else float("nan")
    return {"mean": m, "ci_low": m - half, "ci_high": m + half, "n": n}


def behaviour_effect(model, items: Sequence[ABItem], settings: dict[str, Steering],
                     batch_size: int = 16, system: str | None = None) -> dict[str, dict]:
    """p(matching) with its CI per setting, on both orders of each held-out item; for steered
    settings also the paired test against the unsteered model."""
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
    return out
