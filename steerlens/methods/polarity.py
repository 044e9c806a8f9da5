"""Answer polarity: whether an A/B item's matching answer says "Yes" or "No", the direction
that answer word takes in the residual stream, and extraction weights that cancel it.

Why. Most behaviour sets are not balanced in the *content* of their matching answer: in CAA's
coordinate-other-ais 318 matching answers start with "Yes" and 25 with "No"; survival-instinct
410 / 161. A mean difference over such a set carries c * (act("Yes") - act("No")) beside the
behaviour, as an unbalanced set carries the letter (A)/(B) (`methods.caa`).

`answer_polarity(text)`: the first word of the option's text, case-insensitive, letters only:
"yes" -> "yes", "no" -> "no" ("Yes", "Yes, ...", "No.", "no"), anything else "other".

`caa.polarity_direction`: the difference in means of act(answer "Yes") - act(answer "No") over the
neutral factual questions of `data/polarity` (true answers half Yes, half No), every question
in both answer orders, read exactly as CAA reads (`methods.caa.pair_activations`: the answer
`(A`/`(B` at the last token). Both orders cancel the letter (each of "Yes" and "No" is A once
and B once per question); the balanced truth cancels truth (half of the Yes answers are true,
half false). The design follows the letter balance of CAA (Rimsky et al. 2024, "Steering Llama
2 via Contrastive Activation Addition", arXiv:2312.06681) and the difference-in-means reading
of a binary feature (Marks & Tegmark 2023, "The Geometry of Truth", arXiv:2310.06824, who read
truth this way and balance it against other features).

`pair_weights`: per pair, weights under which the Yes-matching and the No-matching pairs count
equally (each polarity's pairs share half the weight the two polarities had together), other
pairs keep theirs; so a weighted mean difference holds a polarity component shared by the Yes
and No pairs with coefficient 0, as letter balance holds the letter's. Measured on the embedded
0.5B (docs/polarity.md), weights alone left |cos| 0.88 (corrigible-neutral-HHH, forced) and 0.47
(survival-instinct) with the neutral direction at layer 14: the sets' polarity is not one
symmetric component ("other" answers such as "I consent" carry it too), so the default
(`balance_plan`) then projects the neutral direction out as well.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.datasets.loaders import ABItem, option_spans
from steerlens.errors import SteerlensError

POLARITIES = ("yes", "no", "other")
BALANCES = ("polarity", "letter", "none")
# Fewer matching answers of the rarer polarity than this (count, or share of the Yes + No
# items) and the weights would rest on a handful of items: the fallback projects out the
# neutral polarity direction instead.
MIN_POLARITY_ITEMS = 10
MIN_POLARITY_SHARE = 0.05
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def answer_polarity(text: str) -> str:
    """"yes", "no" or "other": the first word of an answer's text (letters only, any case)."""
    m = _FIRST_WORD.search(text)
    word = m.group(0).lower() if m and not text[: m.start()].strip(" \t\n\"'“‘(") else ""
    return word if word in ("yes", "no") else "other"


def matching_text(item: ABItem) -> str:
    """The text of the item's matching option (from its `(X)` marker to the next)."""
    spans = option_spans(item.question)
    if item.matching not in spans:
        raise SteerlensError(f"cannot find option ({item.matching}) in question "
                             f"{item.question[:60]!r}...",
                             fix="A/B items list each option on its own line as '(A) text'")
    a, b = spans[item.matching]
    return item.question[a:b].strip()


def item_polarity(item: ABItem) -> str:
    """The polarity of the item's matching answer."""
    return answer_polarity(matching_text(item))


def polarity_counts(items: Sequence[ABItem]) -> dict[str, int]:
    """How many items' matching answers are Yes-like, No-like and other."""
    c = Counter(item_polarity(it) for it in items)
    return {p: c.get(p, 0) for p in POLARITIES}


def too_few(counts: dict[str, int]) -> bool:
    """True when the rarer of Yes and No has fewer than `MIN_POLARITY_ITEMS` items or less than
    `MIN_POLARITY_SHARE` of the Yes + No items (and there is any Yes or No item at all)."""
    yes, no = counts["yes"], counts["no"]
    rare = min(yes, no)
    return yes + no > 0 and (rare < MIN_POLARITY_ITEMS or rare < MIN_POLARITY_SHARE * (yes + no))


def pair_weights(polarities: Sequence[str]) -> Float[Tensor, "pair"]:
    """Weights summing to the number of pairs: Yes and No pairs together keep their share,
    split equally between the two polarities; other pairs weigh 1. Needs both polarities
    (or neither: all 1)."""
    n = len(polarities)
    c = Counter(polarities)
    yes, no = c.get("yes", 0), c.get("no", 0)
    w = torch.ones(n, dtype=torch.float64)
    if yes == 0 and no == 0:
        return w
    if yes == 0 or no == 0:
        raise SteerlensError("polarity weights need Yes- and No-matching pairs",
                             fix="use the projection fallback (`balance_plan`)")
    half = (yes + no) / 2
    for i, p in enumerate(polarities):
        if p == "yes":
            w[i] = half / yes
        elif p == "no":
            w[i] = half / no
    return w


@dataclass(frozen=True)
class BalancePlan:
    """How a set's vector is freed of answer polarity: `method` "weights+projection" (Yes- and
    No-matching pairs weighed equally, then the neutral polarity direction projected out at
    each layer), "projection" (too few of one polarity: the projection alone), or "none"
    (balance other than "polarity", or no Yes/No answers)."""

    balance: str
    method: str
    counts: dict
    weights: Tensor | None = None  # per pair, when method == "weights+projection"

    def meta(self) -> dict:
        out = {"balance": self.balance, "polarity_counts": dict(self.counts),
               "polarity_method": self.method}
        if self.method == "projection":
            out["polarity_fallback"] = (
                f"projection: {min(self.counts['yes'], self.counts['no'])} items of the rarer "
                f"polarity (fewer than {MIN_POLARITY_ITEMS} or under "
                f"{MIN_POLARITY_SHARE:.0%} of the Yes/No items); the neutral polarity direction "
                "is projected out at each layer")
        return out


def check_balance(balance: str) -> str:
    if balance not in BALANCES:
        raise SteerlensError(f"unknown balance {balance!r}", fix=f"use one of: {', '.join(BALANCES)}")
    return balance


def _twinned(items: Sequence[ABItem]) -> bool:
    """True when the pairs list each question followed by its swapped twin (`caa.balanced`)."""
    return len(items) % 2 == 0 and all(
        a.matching == b.not_matching and a.not_matching == b.matching
        and matching_text(a) == matching_text(b) for a, b in zip(items[0::2], items[1::2]))


def balance_plan(items: Sequence[ABItem], balance: str = "polarity") -> BalancePlan:
    """The plan for pairs `items`, counted per question (a question and its swapped twin,
    as `caa.balanced` lists them, count once). "polarity": "weights+projection" (Yes- and
    No-matching pairs weighed equally, then the neutral polarity direction projected out),
    or "projection" alone where one polarity has too few questions (`too_few`)."""
    check_balance(balance)
    pols = [item_polarity(it) for it in items]
    step = 2 if _twinned(items) else 1
    counts = {p: pols[::step].count(p) for p in POLARITIES}
    if balance != "polarity" or counts["yes"] + counts["no"] == 0:
        return BalancePlan(balance, "none", counts)
    if too_few(counts):
        return BalancePlan(balance, "projection", counts)
    return BalancePlan(balance, "weights+projection", counts, pair_weights(pols))


def weighted_mean(x: Float[Tensor, "pair layer d"], w: Float[Tensor, "pair"] | None
                  ) -> Float[Tensor, "layer d"]:
    """The mean over pairs, weighted (weights sum to the pair count) or plain."""
    if w is None:
        return x.mean(0)
    return (x.double() * (w / w.sum())[:, None, None]).sum(0).to(x.dtype)


def project_out(vec: Float[Tensor, "*row layer d"], direction: Float[Tensor, "layer d"]
                ) -> Float[Tensor, "*row layer d"]:
    """`vec` less its component along `direction`, layer by layer (zero rows of `direction`
    left alone); leading dimensions (rows) broadcast."""
    d = direction.double()
    norm2 = (d * d).sum(-1, keepdim=True)
    coef = torch.where(norm2 > 0, (vec.double() * d).sum(-1, keepdim=True) / norm2.clamp_min(1e-300),
                       torch.zeros_like(norm2))
    return (vec.double() - coef * d).to(vec.dtype)


def polarity_free(acts, balance: str, direction) -> tuple[Float[Tensor, "layer d"], BalancePlan]:
    """The mean difference of pair activations `acts` (`caa.PairActivations`) under `balance`:
    weighted (Yes and No pairs equal), or with `direction()` (the neutral polarity direction
    at the same layers, asked for only then) projected out, or plain; and the plan used."""
    plan = balance_plan(acts.items, balance)
    vec = weighted_mean(acts.diffs, plan.weights)
    if plan.method != "none":
        vec = project_out(vec, direction().to(vec.dtype))
    return vec, plan


def yes_no_difference(matching: Float[Tensor, "item layer d"],
                      not_matching: Float[Tensor, "item layer d"],
                      items: Sequence[ABItem]) -> Float[Tensor, "layer d"]:
    """Mean act(answer Yes) - act(answer No) over items whose two options are Yes and No."""
    rows = []
    for m, n, it in zip(matching, not_matching, items):
        spans = option_spans(it.question)
        texts = {k: answer_polarity(it.question[a:b]) for k, (a, b) in spans.items()}
        pair = (texts.get(it.matching), texts.get(it.not_matching))
        if pair == ("yes", "no"):
            rows.append(m - n)
        elif pair == ("no", "yes"):
            rows.append(n - m)
    if not rows:
        raise SteerlensError("no item offers the answers Yes and No",
                             fix="use the neutral questions of data/polarity (load_polarity)")
    return torch.stack(rows).mean(0)
