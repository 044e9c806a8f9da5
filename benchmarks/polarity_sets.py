"""Write data/polarity/{train,test}.json: neutral factual yes/no questions for the answer-polarity
direction (`steerlens.methods.polarity`), written for steerlens.

240 questions in four topics (arithmetic, geography, science, general knowledge), each topic 30
whose true answer is Yes and 30 whose true answer is No. The arithmetic ones are checked here by
evaluating them (`ARITHMETIC` holds the expression, the comparison and the claimed answer).

Split by question: in every (topic, true answer) group of 30, `random.Random(SEED)` draws 5 for
the test split, so test holds 40 (20 Yes, 20 No) and train 200 (100 Yes, 100 No). Letters: in
each split and each true answer, the j-th question (in the order below) shows "(A) Yes (B) No"
when j is even and "(A) No (B) Yes" when j is odd, so Yes sits under (A) half the time and so
does the true answer. The item's matching answer is the *true* one (the loaders' A/B form).

    python benchmarks/polarity_sets.py            # writes the two files
    python benchmarks/polarity_sets.py --check    # exits 1 if they differ from what it would write
"""

from __future__ import annotations

import argparse
import json
import operator
import random
import sys
from pathlib import Path

SEED = 20261205
N_TEST_PER_GROUP = 5

# (left expression, relation, right expression, claimed true answer); the question text is
# made from them and the answer is checked by evaluation.
ARITHMETIC = [
    ("7 + 5", "==", "12", True), ("9 * 6", "==", "54", True), ("100 - 37", "==", "63", True),
    ("81 / 9", "==", "9", True), ("15 + 27", "==", "42", True), ("12 * 12", "==", "144", True),
    ("250 + 250", "==", "500", True), ("64 / 8", "==", "8", True), ("13 * 3", "==", "39", True),
    ("1000 - 1", "==", "999", True), ("18", ">", "11", True), ("45", ">", "38", True),
    ("7 * 8", ">", "50", True), ("3", "<", "10", True), ("20 + 30", "<", "60", True),
    ("2 * 2 * 2", "==", "8", True), ("99 + 1", "==", "100", True), ("6 * 7", "==", "42", True),
    ("50 / 2", "==", "25", True), ("11 + 11", "==", "22", True), ("300", ">", "30 * 9", True),
    ("17 - 8", "==", "9", True), ("5 * 5", "==", "25", True), ("1 + 2 + 3", "==", "6", True),
    ("72 / 6", "==", "12", True), ("40", "<", "4 * 11", True), ("8 + 9", "==", "17", True),
    ("120 / 4", "==", "30", True), ("14 * 2", "==", "28", True), ("63 - 21", "==", "42", True),
    ("7 + 5", "==", "13", False), ("9 * 6", "==", "56", False), ("100 - 37", "==", "73", False),
    ("81 / 9", "==", "8", False), ("15 + 27", "==", "32", False), ("12 * 12", "==", "124", False),
    ("250 + 250", "==", "550", False), ("64 / 8", "==", "6", False), ("13 * 3", "==", "36", False),
    ("1000 - 1", "==", "990", False), ("11", ">", "18", False), ("38", ">", "45", False),
    ("7 * 8", ">", "60", False), ("10", "<", "3", False), ("20 + 30", "<", "40", False),
    ("2 * 2 * 2", "==", "6", False), ("99 + 1", "==", "101", False), ("6 * 7", "==", "48", False),
    ("50 / 2", "==", "20", False), ("11 + 11", "==", "21", False), ("30", ">", "5 * 9", False),
    ("17 - 8", "==", "7", False), ("5 * 5", "==", "35", False), ("1 + 2 + 3", "==", "7", False),
    ("72 / 6", "==", "14", False), ("50", "<", "4 * 11", False), ("8 + 9", "==", "19", False),
    ("120 / 4", "==", "40", False), ("14 * 2", "==", "24", False), ("63 - 21", "==", "32", False),
]
_RELATIONS = {"==": (operator.eq, "equal to"), ">": (operator.gt, "greater than"),
              "<": (operator.lt, "less than")}

GEOGRAPHY_YES = [
    "Is Paris the capital of France?", "Is Tokyo the capital of Japan?",
    "Is the Nile a river in Africa?", "Does Canada share a border with the United States?",
    "Is Mount Everest in Asia?", "Is Brazil in South America?",
    "Is the Pacific the largest ocean on Earth?", "Is Canberra the capital of Australia?",
    "Is Madrid the capital of Spain?", "Is Cairo in Egypt?", "Is Rome in Italy?",
    "Does the Amazon River flow through Brazil?", "Is Ottawa the capital of Canada?",
    "Is Berlin the capital of Germany?", "Is the Sahara Desert in Africa?",
    "Is Iceland an island?", "Is Lisbon the capital of Portugal?",
    "Does Mexico share a border with the United States?", "Is Moscow in Russia?",
    "Does the Atlantic Ocean lie between Europe and North America?",
    "Is Nairobi the capital of Kenya?", "Is Buenos Aires in Argentina?",
    "Is Athens the capital of Greece?", "Is Japan an island country?",
    "Is the Danube a river in Europe?", "Is Beijing the capital of China?",
    "Is New Delhi the capital of India?", "Is Switzerland a landlocked country?",
    "Is Antarctica the southernmost continent?", "Is Stockholm the capital of Sweden?",
]
GEOGRAPHY_NO = [
    "Is Sydney the capital of Australia?", "Is the Amazon River in Africa?",
    "Is Toronto the capital of Canada?", "Is Mount Everest in South America?",
    "Is Spain in Asia?", "Is Brazil in Europe?", "Is the Sahara Desert in South America?",
    "Is Munich the capital of Germany?", "Does Mongolia have a coastline?",
    "Is Rio de Janeiro the capital of Brazil?", "Is Istanbul the capital of Turkey?",
    "Is the Arctic Ocean the largest ocean on Earth?", "Is Kenya in South America?",
    "Is Norway in Africa?", "Is Chicago the capital of the United States?",
    "Is Barcelona the capital of Spain?", "Is Milan the capital of Italy?",
    "Is Egypt in South America?", "Is New Zealand in Europe?", "Is Lake Victoria in Europe?",
    "Does Switzerland have a coastline?", "Is Mount Kilimanjaro in Europe?",
    "Is Zurich the capital of Switzerland?", "Is Peru in Africa?", "Is Canada in South America?",
    "Is Mumbai the capital of India?", "Is Greenland in the Southern Hemisphere?",
    "Is the Thames a river in France?", "Is Shanghai the capital of China?",
    "Is Vietnam in Africa?",
]
SCIENCE_YES = [
    "Is water made of hydrogen and oxygen?", "Does the Earth orbit the Sun?",
    "Is the Sun a star?", "Do plants use sunlight for photosynthesis?", "Is ice frozen water?",
    "Does pure water boil at 100 degrees Celsius at sea level?",
    "Is oxygen a gas at room temperature?", "Is iron a metal?", "Are whales mammals?",
    "Does the Moon orbit the Earth?", "Does the heart pump blood around the body?",
    "Is gold a chemical element?", "Do humans need oxygen to live?",
    "Is Jupiter the largest planet in our solar system?",
    "Does sound need a medium such as air or water to travel?",
    "Does light travel faster than sound?", "Are bats mammals?",
    "Is the Earth's core hotter than its surface?",
    "Is carbon dioxide a gas at room temperature?", "Do magnets attract iron?",
    "Is Mars known as the Red Planet?", "Do honeybees make honey?",
    "Is DNA found in the cells of living things?", "Do spiders have eight legs?",
    "Is helium lighter than air?", "Does salt water freeze at a lower temperature than fresh water?",
    "Is the Moon smaller than the Earth?", "Are diamonds made of carbon?",
    "Do adult insects have six legs?", "Is Mercury the planet closest to the Sun?",
]
SCIENCE_NO = [
    "Is the Sun a planet?", "Does the Sun orbit the Earth?", "Are whales fish?",
    "Is gold a gas at room temperature?",
    "Does pure water boil at 50 degrees Celsius at sea level?",
    "Is the Moon larger than the Earth?", "Do spiders have six legs?",
    "Does sound travel faster than light?", "Is iron a liquid at room temperature?",
    "Is Venus the largest planet in our solar system?", "Are bats birds?", "Is oxygen a metal?",
    "Is ice hotter than boiling water?", "Is helium heavier than air?",
    "Is Saturn the planet closest to the Sun?", "Are spiders insects?",
    "Is water made of nitrogen and carbon?", "Is a dolphin a fish?", "Is the Earth flat?",
    "Is copper a gas at room temperature?", "Is wood a metal?",
    "Do healthy humans have three lungs?", "Is the Earth the largest planet in our solar system?",
    "Can sound travel through a vacuum?", "Is Mars known as the Blue Planet?",
    "Do adult humans normally have 50 teeth?", "Is the human heart located in the foot?",
    "Are diamonds made of iron?", "Is Pluto larger than the Earth?", "Do spiders have wings?",
]
GENERAL_YES = [
    "Are there seven days in a week?", "Are there twelve months in a year?",
    "Is February the shortest month of the year?", "Is a dozen equal to twelve?",
    "Is Monday a day of the week?", "Are there 60 minutes in an hour?",
    "Are there 24 hours in a day?", "Is A the first letter of the English alphabet?",
    "Is a piano a musical instrument?", "Is a chessboard made of 64 squares?",
    "Is a kilometre equal to 1,000 metres?", "Does a triangle have three sides?",
    "Is English written from left to right?", "Is red one of the colours of a rainbow?",
    "Does a standard deck of playing cards have 52 cards, not counting jokers?",
    "Does a square have four equal sides?", "Is December the last month of the year?",
    "Is a violin a string instrument?", "Are there 365 days in a year that is not a leap year?",
    "Is a century one hundred years?",
    "Does one soccer team have eleven players on the field at the same time?",
    "Is Z the last letter of the English alphabet?", "Does a hexagon have six sides?",
    "Is a litre equal to 1,000 millilitres?", "Does a decade last ten years?",
    "Does the Olympic symbol have five rings?", "Is January the first month of the year?",
    "Is a kilogram equal to 1,000 grams?", "Does a standard die have six faces?",
    "Is a haiku a form of poetry?",
]
GENERAL_NO = [
    "Are there eight days in a week?", "Are there ten months in a year?",
    "Is February the longest month of the year?", "Is a dozen equal to ten?",
    "Are there 100 minutes in an hour?", "Are there 30 hours in a day?",
    "Is B the first letter of the English alphabet?", "Is a piano a type of fruit?",
    "Is chess played with cards?", "Is a kilometre equal to 10 metres?",
    "Does a triangle have four sides?", "Is Arabic written from left to right?",
    "Is black one of the colours of a rainbow?",
    "Does a standard deck of playing cards have 100 cards?", "Does a square have five sides?",
    "Is March the last month of the year?", "Is a trumpet a string instrument?",
    "Are there 400 days in a year?", "Is a century ten years?",
    "Does one soccer team have twenty players on the field at the same time?",
    "Is M the last letter of the English alphabet?", "Does a hexagon have eight sides?",
    "Is a litre equal to 10 millilitres?", "Does a decade last fifty years?",
    "Does the Olympic symbol have three rings?", "Is July the first month of the year?",
    "Is a kilogram equal to 10 grams?", "Does a standard die have ten faces?",
    "Is a haiku a type of car?", "Is Friday a month of the year?",
]


def _arithmetic() -> list[tuple[str, bool]]:
    """The arithmetic questions, each claimed answer checked by evaluating it."""
    out = []
    for left, rel, right, claimed in ARITHMETIC:
        op, words = _RELATIONS[rel]
        if op(eval(left), eval(right)) != claimed:  # noqa: S307 (literal arithmetic above)
            raise SystemExit(f"wrong answer for {left} {rel} {right}")
        shown = lambda e: e.replace("*", "×").replace("/", "÷")  # noqa: E731
        out.append((f"Is {shown(left)} {words} {shown(right)}?", claimed))
    return out


def questions() -> dict[str, list[tuple[str, bool]]]:
    """Every question by topic, with its true answer (True: Yes)."""
    return {"arithmetic": _arithmetic(),
            "geography": [(q, True) for q in GEOGRAPHY_YES] + [(q, False) for q in GEOGRAPHY_NO],
            "science": [(q, True) for q in SCIENCE_YES] + [(q, False) for q in SCIENCE_NO],
            "general": [(q, True) for q in GENERAL_YES] + [(q, False) for q in GENERAL_NO]}


def _record(question: str, yes: bool, yes_first: bool, topic: str) -> dict:
    a, b = ("Yes", "No") if yes_first else ("No", "Yes")
    true_letter = "A" if (yes == yes_first) else "B"
    other = "B" if true_letter == "A" else "A"
    return {"question": f"{question}\n\nChoices:\n (A) {a}\n (B) {b}",
            "answer_matching_behavior": f"({true_letter})",
            "answer_not_matching_behavior": f"({other})", "topic": topic}


def splits() -> dict[str, list[dict]]:
    """Train and test records (the module's split and letter rules)."""
    rng = random.Random(SEED)
    chosen: dict[str, list[tuple[str, bool, str]]] = {"train": [], "test": []}
    for topic, qs in questions().items():
        for truth in (True, False):
            group = [q for q, t in qs if t == truth]
            if len(group) != 30 or len(set(group)) != 30:
                raise SystemExit(f"{topic}/{truth}: {len(group)} questions, need 30 distinct")
            test = set(rng.sample(range(len(group)), N_TEST_PER_GROUP))
            for i, q in enumerate(group):
                chosen["test" if i in test else "train"].append((q, truth, topic))
    out = {}
    for split, rows in chosen.items():
        seen = {True: 0, False: 0}
        recs = []
        for q, truth, topic in rows:
            recs.append(_record(q, truth, seen[truth] % 2 == 0, topic))
            seen[truth] += 1
        out[split] = recs
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/polarity")
    p.add_argument("--check", action="store_true", help="compare with the files instead")
    args = p.parse_args(argv)
    all_q = [q for qs in questions().values() for q, _ in qs]
    if len(set(all_q)) != len(all_q):
        raise SystemExit("duplicate questions")
    differ = False
    for split, recs in splits().items():
        path = Path(args.out) / f"{split}.json"
        text = json.dumps(recs, indent=1, ensure_ascii=False) + "\n"
        if args.check:
            differ |= not path.is_file() or path.read_text(encoding="utf-8") != text
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"{path}: {len(recs)} questions")
    return int(differ)


if __name__ == "__main__":
    sys.exit(main())
