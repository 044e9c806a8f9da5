"""Contrastive Activation Addition (Rimsky et al. 2024, "Steering Llama 2 via Contrastive
Activation Addition", github.com/nrimsky/CAA): the mean over A/B items of
act(question, matching answer) - act(question, non-matching answer).

Format, as in CAA: the question with its choices is the user's message; the assistant's turn
begins with the answer as the model would write it, `(A` or `(B`; the activation is read at
the last token. Qwen's BPE writes `(A` as one token, so that token is read; a tokenizer that
splits it into `(` and `A` is read at the letter. CAA's own code reads at the letter of
`(A)`, which is the same token in both cases.

Letter balance (on by default, `balance="none"` for plain CAA over the given items): each
question is used in both answer orders, its two option texts and their letters swapped, so
the matching answer is A once and B once. Unbalanced sets carry c * (act(A) - act(B)) in the
vector; balanced ones do not (tests/methods/test_caa.py). Answer-polarity balance (the default,
`methods.polarity`) does the same for the matching answer's word, "Yes" or "No".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import repeat
from jaxtyping import Float
from torch import Tensor

from steerlens.core.activations import collect_last
from steerlens.core.geometry import cosine, orthogonalize
from steerlens.core.hooks import check_layers
from steerlens.core.prompts import PromptSet, chat_prompts, longest_common_prefix
from steerlens.core.vectors import SteeringVector
from steerlens.datasets.loaders import ABItem, option_spans
from steerlens.errors import SteerlensError

_options = option_spans


def swap_options(item: ABItem) -> ABItem:
    """The same question with the matching and non-matching options' texts swapped, so the
    matching answer takes the other letter."""
    spans = _options(item.question)
    if item.matching not in spans or item.not_matching not in spans:
        raise SteerlensError(f"cannot find options ({item.matching}) and ({item.not_matching}) in "
                             f"question {item.question[:60]!r}...",
                             fix="CAA items list each option on its own line as '(A) text'")
    (a0, a1), (b0, b1) = sorted([spans[item.matching], spans[item.not_matching]])
    q = item.question
    swapped = q[:a0] + q[b0:b1] + q[a1:b0] + q[a0:a1] + q[b1:]
    return ABItem(swapped, item.not_matching, item.matching)


def balanced(items: Sequence[ABItem]) -> list[ABItem]:
    """Each item followed by its swapped twin."""
    return [x for it in items for x in (it, swap_options(it))]


def pair_prompts(tokenizer, items: Sequence[ABItem], system: str | None = None) -> PromptSet:
    """Rows 2i and 2i+1: item i answered with its matching and its non-matching letter."""
    users = [it.question for it in items for _ in (0, 1)]
    answers = [f"({x}" for it in items for x in (it.matching, it.not_matching)]
    return chat_prompts(tokenizer, users, system, assistant=answers)


@dataclass
class PairActivations:
    """Last-token activations of matching and non-matching answers, item by item."""

    matching: Float[Tensor, "item layer d_model"]
    not_matching: Float[Tensor, "item layer d_model"]
    items: list[ABItem]

    @property
    def diffs(self) -> Float[Tensor, "item layer d_model"]:
        return self.matching - self.not_matching

    def letter_direction(self) -> Float[Tensor, "layer d_model"]:
        """Mean act(answer A) - act(answer B) over the same questions (the letter component)."""
        a = torch.stack([m if it.matching == "A" else n for m, n, it in
                         zip(self.matching, self.not_matching, self.items)
                         if {it.matching, it.not_matching} == {"A", "B"}])
        b = torch.stack([n if it.matching == "A" else m for m, n, it in
                         zip(self.matching, self.not_matching, self.items)
                         if {it.matching, it.not_matching} == {"A", "B"}])
        return (a - b).mean(0)


def pair_activations(model, items: Sequence[ABItem], layers: Sequence[int],
                     site: str = "resid_pre", system: str | None = None,
                     batch_size: int = 16, desc: str | None = "CAA") -> PairActivations:
    """Run every item with both answers (the shared question runs once per item)."""
    acts = collect_last(model, pair_prompts(model.tokenizer, items, system), layers, site,
                        batch_size, desc=desc).cpu()
    return PairActivations(acts[0::2], acts[1::2], list(items))


def split_half_cosine(diffs: Float[Tensor, "item layer d"], group: int = 1, seed: int = 0
                      ) -> Float[Tensor, "layer"]:
    """Cosine per layer between the mean differences of two random halves of the items
    (`group` consecutive rows stay together: a question and its swapped twin)."""
    n = diffs.shape[0] // group
    if n < 2:
        return torch.full((diffs.shape[1],), float("nan"))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rows = lambda units: torch.cat([torch.arange(u * group, (u + 1) * group) for u in units])  # noqa: E731
    a, b = diffs[rows(perm[: n // 2])].mean(0), diffs[rows(perm[n // 2:])].mean(0)
    return cosine(a, b).float()


def label_shuffled(diffs: Float[Tensor, "item layer d"], n: int, seed: int = 0
                   ) -> Float[Tensor, "n layer d"]:
    """Label-shuffled CAA vectors, a null of the same kind as the vector: the matching /
    non-matching labels of a random half of the questions are swapped (both rows of a question
    and its twin together), and what is left along the vector itself is projected out.

    Why the projection: CAA differences share one direction c with a size that varies from
    question to question (d_q = a_q c + e_q), so a signed mean keeps (sum_q s_q a_q) c, which
    flipping exactly half cancels only when every a_q is equal. On the 0.5B at layer 14 the
    unprojected shuffled vectors had cosine -0.93 (corrigible-neutral-HHH) and -0.75
    (survival-instinct) with their own vectors: they were -v, not a null."""
    g = torch.Generator().manual_seed(seed)
    units = diffs.shape[0] // 2
    vec = diffs.mean(0)
    out = []
    for _ in range(n):
        signs = torch.ones(units)
        signs[torch.randperm(units, generator=g)[: units // 2]] = -1.0
        if units % 2:
            signs[torch.randperm(units, generator=g)[0]] = 0.0  # odd count: one question sits out
        mixed = (diffs * repeat(signs, "q -> (q twin) 1 1", twin=2)).mean(0)
        out.append(orthogonalize(mixed, vec))
    return torch.stack(out) if out else torch.zeros(0, *diffs.shape[1:])


def _balance_name(balance: str | bool) -> str:
    """`True`/`False` (the older flag) as "letter"/"none"."""
    from steerlens.methods.polarity import check_balance

    return check_balance({True: "letter", False: "none"}.get(balance, balance)
                         if isinstance(balance, bool) else balance)


@torch.no_grad()
def caa_vector(
    model,
    items: Sequence[ABItem],
    layers: Sequence[int],
    behaviour: str = "",
    site: str = "resid_pre",
    balance: str | bool = "polarity",
    system: str | None = None,
    batch_size: int = 16,
    polarity: SteeringVector | None = None,
) -> SteeringVector:
    """CAA: mean over items of act(matching answer) - act(non-matching answer) at the answer.

    `balance`: "polarity" (default) uses every item in both answer orders and weighs the items
    whose matching answer is Yes-like and No-like equally (`methods.polarity`; too few of one:
    the neutral polarity direction `polarity`, computed here if not given, is projected out);
    "letter" both orders only (`True` as before); "none" the items as given (`False`: plain
    CAA, the paper's protocol). The metadata records the split-half cosine per layer, the
    cosine with the letter direction and, when the polarity direction is known, with it.
    """
    from steerlens.methods.polarity import polarity_free

    if not items:
        raise SteerlensError(f"no A/B items for behaviour {behaviour!r}", fix="pass at least one")
    balance = _balance_name(balance)
    layers = check_layers(model, layers)
    used = list(items) if balance == "none" else balanced(items)
    acts = pair_activations(model, used, layers, site, system, batch_size, desc=f"CAA {behaviour}")
    pol = {}

    def direction():
        if "v" not in pol:
            pol["v"] = polarity or polarity_direction(model, layers, site=site, system=system,
                                                      batch_size=batch_size)
        return pol["v"].vectors

    vec, plan = polarity_free(acts, balance, direction)
    halves = split_half_cosine(acts.diffs, group=1 if balance == "none" else 2)
    letter_cos = cosine(vec, acts.letter_direction()).float()
    meta = {"kind": "caa", "behaviour": behaviour, "model": getattr(model, "steerlens_name", ""),
            "position": "last token of the assistant's answer '(A' / '(B'",
            "n_items": len(items), "n_prompts": 2 * len(used),
            "split_half_cosine": [round(float(x), 6) for x in halves],
            "letter_cosine": [round(float(x), 6) for x in letter_cos], **plan.meta()}
    if polarity is not None or pol:
        meta["polarity_cosine"] = [round(float(x), 6) for x in cosine(vec, direction()).float()]
    return SteeringVector(vec, layers, site, meta)


@torch.no_grad()
def polarity_direction(model, layers: Sequence[int], items: Sequence[ABItem] | None = None,
                       site: str = "resid_pre", system: str | None = None,
                       batch_size: int = 16) -> SteeringVector:
    """The answer-polarity direction per layer: mean act("Yes") - act("No") over the neutral
    questions (default: `load_polarity("train")`), each in both answer orders, read as CAA
    reads (`pair_activations`); the design is in `methods.polarity`'s docstring."""
    from collections import Counter

    from steerlens.datasets.loaders import load_polarity
    from steerlens.methods.polarity import item_polarity, yes_no_difference

    items = list(items) if items is not None else load_polarity("train")
    used = balanced(items)
    acts = pair_activations(model, used, layers, site, system, batch_size, desc="polarity")
    vec = yes_no_difference(acts.matching, acts.not_matching, used)
    truth = Counter(item_polarity(it) for it in items)
    meta = {"kind": "polarity", "model": getattr(model, "steerlens_name", ""),
            "position": "last token of the assistant's answer '(A' / '(B'",
            "n_items": len(items), "n_prompts": 2 * len(used),
            "true_yes": truth.get("yes", 0), "true_no": truth.get("no", 0),
            "letter_cosine": [round(float(x), 6) for x in cosine(vec, acts.letter_direction()).float()]}
    return SteeringVector(vec, list(layers), site, meta)


# -- the behaviour effect's readout: p(matching answer) on held-out items ---------------------

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
