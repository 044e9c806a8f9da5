"""Which of a behaviour's items its vector is extracted from and which the behaviour check reads:
the held-out test items for the overall effect, and for the per-polarity reading only, where
the test items hold too few of a polarity, generate-split items the vector was not extracted
from (`check_items`); `checked_effect` reads both and keeps the overall numbers on the test
items alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlens.audit.evaluate import behaviour_effect
from steerlens.datasets.behaviours import behaviour_split
from steerlens.datasets.loaders import ABItem
from steerlens.methods.polarity import item_polarity
from steerlens.methods.refusal import sample

MIN_POLARITY_TEST = 3  # items of a polarity needed before the check reads it
# A polarity with fewer than MIN_POLARITY_TEST held-out items is topped up to this many items
# (its test items first): 3 is the floor for reading a sign at all; 8 (16 prompts, both answer
# orders) keeps one item's flip from deciding the sign alone, and each topped-up polarity adds at
# most a third of the default 24-item test pass (8 items, read in a pass of their own).
POLARITY_TOP_UP = 8
TOP_UP_SOURCE = "generate (not extracted)"
CHECKED_POLARITIES = ("yes", "no")


def extracted_indices(n_generate: int, n_caa_items: int, seed: int) -> list[int]:
    """Indices into the behaviour's generate split of the items a CAA vector (and every other
    extraction method's) is extracted from: the run's seeded sample of `n_caa_items`."""
    return sample(range(n_generate), n_caa_items, seed)


def extraction_items(behaviour: str, n_caa_items: int, seed: int) -> list[ABItem]:
    """The generate-split items the behaviour's vectors are extracted from."""
    items = behaviour_split(behaviour, "generate")
    return [items[i] for i in extracted_indices(len(items), n_caa_items, seed)]


def held_out_items(behaviour: str, n_test: int) -> list[ABItem]:
    """The held-out items the overall behaviour effect is measured on (the test split's first
    `n_test`)."""
    return behaviour_split(behaviour, "test")[:n_test]


@dataclass
class CheckItems:
    """The behaviour check's items: `test` for every reading, `top_up` (with its polarities) for
    the per-polarity reading only; `record`: per polarity, how many of each and why a polarity
    cannot be checked."""

    test: list[ABItem]
    top_up: list[ABItem] = field(default_factory=list)
    top_up_groups: list[str] = field(default_factory=list)
    record: dict[str, dict] = field(default_factory=dict)


def _top_up(pol: str, n_test: int, unused: list[tuple[int, ABItem]]) -> tuple[list, dict]:
    """The first unextracted generate items of the polarity (file order) that bring it to
    `POLARITY_TOP_UP`, and the record of what was taken or why the polarity is not checked
    (none are taken when all there are would still leave it under `MIN_POLARITY_TEST`)."""
    if n_test >= MIN_POLARITY_TEST:
        return [], {"n_test": n_test, "n_top_up": 0}
    taken = [(i, it) for i, it in unused if item_polarity(it) == pol][: POLARITY_TOP_UP - n_test]
    if n_test + len(taken) < MIN_POLARITY_TEST:  # not read: they could not make the check run
        return [], {"n_test": n_test, "n_top_up": 0, "not_checked": (
            f"{n_test} held-out and {len(taken)} unextracted generate items with a "
            f"{pol.capitalize()}-like matching answer: fewer than {MIN_POLARITY_TEST}")}
    return [it for _, it in taken], {"n_test": n_test, "n_top_up": len(taken),
                                     "source": TOP_UP_SOURCE,
                                     "generate_indices": [i for i, _ in taken]}


def check_items(behaviour: str, n_test: int, n_caa_items: int, seed: int) -> CheckItems:
    """The held-out test items, topped up per polarity (Yes-like, No-like) from the generate
    split's items the vector was not extracted from where the test items hold fewer than
    `MIN_POLARITY_TEST` of it."""
    test = held_out_items(behaviour, n_test)
    out = CheckItems(test)
    generate = behaviour_split(behaviour, "generate")
    used = set(extracted_indices(len(generate), n_caa_items, seed))
    unused = [(i, it) for i, it in enumerate(generate) if i not in used]
    for pol in CHECKED_POLARITIES:
        n = sum(item_polarity(it) == pol for it in test)
        items, out.record[pol] = _top_up(pol, n, unused)
        out.top_up += items
        out.top_up_groups += [pol] * len(items)
    return out


def _merged(main: dict, extra: dict) -> dict:
    """Per-polarity readings of the test items and the top-up items as one reading per polarity
    (means over all its prompts; `n_top_up` says how many of its items are top-ups)."""
    out = {g: {**rec, "n_top_up": 0} for g, rec in main.items()}
    for g, rec in extra.items():
        base = out.get(g, {"mean": 0.0, "shift": 0.0, "n_items": 0, "n_top_up": 0})
        n = base["n_items"] + rec["n_items"]
        out[g] = {k: (base[k] * base["n_items"] + rec[k] * rec["n_items"]) / n
                  for k in ("mean", "shift")} | {"n_items": n, "n_top_up": rec["n_items"]}
    return out


def checked_effect(model, check: CheckItems, settings: dict, batch_size: int = 16,
                   system: str | None = None) -> dict[str, dict]:
    """`behaviour_effect` on the test items, with each setting's per-polarity reading topped up
    by `check.top_up` read in a pass of its own, so the overall numbers (`unsteered`, `shift`,
    `p_value`, CI) are those of the test items alone, exactly."""
    eff = behaviour_effect(model, check.test, settings, batch_size, system,
                           groups=[item_polarity(it) for it in check.test])
    if not check.top_up:
        return eff
    extra = behaviour_effect(model, check.top_up, settings, batch_size, system,
                             groups=check.top_up_groups)
    for name in settings:
        eff[name]["by_polarity"] = _merged(eff[name]["by_polarity"], extra[name]["by_polarity"])
    return eff
