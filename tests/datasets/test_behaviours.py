"""Behaviour A/B sets: CAA's seven plus Anthropic's model-written evals, in CAA's item form."""

import re
from collections import Counter

import pytest

from steerlens.datasets.behaviours import (
    AI_RISK,
    BEHAVIOURS,
    CAA_ORIGINALS,
    PERSONA,
    behaviour_path,
    load_behaviour,
)
from steerlens.datasets.loaders import CAA_BEHAVIOURS, ABItem, data_dir, load_caa
from steerlens.errors import DataError
from steerlens.methods.caa import swap_options

MWE = AI_RISK + PERSONA
# Sources whose own letters are unbalanced, with the counts the shipped files give: power-
# seeking's two-option items (the others, 3-7 options, are dropped); CAA's refusal (192 / 216)
# and survival-instinct, which keeps CAA's multi-option items (letters C-H).
UNBALANCED = {"power-seeking-inclination": {"A": 254, "B": 348}, "refusal": {"A": 192, "B": 216},
              "survival-instinct": {"A": 558, "B": 257, "C": 60, "D": 15, "E": 8, "F": 1, "G": 3,
                                    "H": 1}}
# Items dropped from the source files (see the module docstring): other option counts,
# repeated questions, the items another set holds.
SIZES = {"power-seeking-inclination": (998, 602), "corrigible-less-HHH": (351, 350),
         "self-awareness-text-model": (300, 299), "self-awareness-good-text-model": (600, 300)}
_OPTIONS = re.compile(r"^[ \t]*\(([A-Z])\)", re.M)


def _key(question: str) -> str:
    return " ".join(question.split())


@pytest.fixture(scope="module")
def sets() -> dict[str, list[ABItem]]:
    return {name: load_behaviour(name) for name in BEHAVIOURS}


def test_at_least_twenty_behaviours_from_three_sources(sets):
    assert len(BEHAVIOURS) >= 20 and len(sets) == len(BEHAVIOURS)
    assert Counter(BEHAVIOURS.values()) == {"caa": 7, "anthropic_mwe/advanced-ai-risk": 12,
                                             "anthropic_mwe/persona": 1}
    assert set(CAA_BEHAVIOURS) <= set(BEHAVIOURS)
    for name, items in sets.items():
        assert len(items) >= 290, name
        assert behaviour_path(name).is_file()
    for name in MWE:  # the copy is the whole source file, so its line count is the source's
        lines = behaviour_path(name).read_text(encoding="utf-8").count("\n")
        assert (lines, len(sets[name])) == SIZES.get(name, (lines, lines)), name


def test_caa_originals_are_kept_once_as_the_caa_copy():
    for name in CAA_ORIGINALS:
        assert BEHAVIOURS[name] == "caa"
        assert not (data_dir() / "anthropic_mwe" / "advanced-ai-risk" / "human_generated_evals"
                    / f"{name}.jsonl").exists()
    assert load_behaviour("sycophancy") == load_caa("sycophancy")
    with pytest.raises(DataError, match="unknown behaviour"):
        load_behaviour("no-such-behaviour")


def test_every_item_is_a_well_formed_ab_item(sets):
    for name, items in sets.items():
        for it in items:
            letters = _OPTIONS.findall(it.question)
            assert {it.matching, it.not_matching} <= set(letters) and it.matching != it.not_matching
            assert letters == [chr(ord("A") + k) for k in range(len(letters))], (name, it)
            assert swap_options(swap_options(it)) == it
            if name in MWE:  # CAA's own sycophancy items have no "Choices:" line
                assert letters == ["A", "B"] and "\n\nChoices:\n (A) " in it.question
                assert not it.question.startswith("Question:") and not it.question.endswith("Answer:")


def test_letters_balanced_where_the_source_allows(sets):
    for name, items in sets.items():
        counts = Counter(it.matching for it in items)
        if name in UNBALANCED:
            assert counts == UNBALANCED[name], (name, counts)
            continue
        assert abs(counts["A"] - counts["B"]) <= max(2, 0.05 * len(items)), (name, counts)
        assert counts["A"] + counts["B"] == len(items)


def test_persona_rule_is_deterministic_and_decouples_letter_from_answer(sets):
    items = sets["openness"]
    assert items == load_behaviour("openness")
    assert load_behaviour("openness", n=7) == items[:7]
    answer = [re.search(rf"\({it.matching}\) (\w+)", it.question).group(1) for it in items]
    assert set(answer) == {"Yes", "No"}
    for yes_no in ("Yes", "No"):
        letters = [it.matching for it, a in zip(items, answer) if a == yes_no]
        assert letters[:4] == ["A", "B", "A", "B"]
        assert Counter(letters) == {"A": 250, "B": 250}
    for n in (1, 2, 3, 10, 99):  # every prefix balanced within one per answer
        c = Counter(it.matching for it in items[:n])
        assert abs(c["A"] - c["B"]) <= 2
    first = items[0].question
    assert first.startswith("Is the following statement something you would say?\n\"")
    assert first.endswith("\n\nChoices:\n (A) Yes\n (B) No") and items[0].matching == "A"


def test_no_duplicates_with_the_caa_copies_or_across_sets(sets):
    caa = {_key(it.question) for b in CAA_BEHAVIOURS for split in ("generate", "test")
           for it in load_caa(b, split)}
    seen: dict[str, str] = {}
    for name in MWE:
        keys = [_key(it.question) for it in sets[name]]
        assert len(keys) == len(set(keys)), name
        assert not caa & set(keys), name
        for k in keys:
            assert k not in seen, (name, seen.get(k))
            seen[k] = name


def test_first_n_items():
    assert load_behaviour("one-box-tendency", n=5) == load_behaviour("one-box-tendency")[:5]
    assert len(load_behaviour("refusal", n=3)) == 3
