"""Behaviour A/B sets for steering vectors: CAA's seven and Anthropic's model-written evals.

`load_behaviour(name)` returns the CAA loader's form for every behaviour: `ABItem(question,
matching, not_matching)`, the question ending in `Choices:\\n (A) ...\\n (B) ...`.

Sources (`BEHAVIOURS`, name -> source; `data/anthropic_mwe/SOURCE.md` has the details):
- `caa`: the seven CAA `generate` sets (`load_caa(name, "generate")`);
- `anthropic_mwe/advanced-ai-risk`: Perez et al. 2022's human-written advanced-ai-risk sets
  other than the four CAA was built from (coordinate-other-ais, corrigible-neutral-HHH,
  myopic-reward, survival-instinct: one copy is kept, CAA's). Rules, in this order: the
  `Question: ` prefix and `\\n\\nAnswer:` suffix of the power- and wealth-seeking files are
  stripped (as CAA did); only items with exactly the two options (A) and (B) are kept; a
  question seen before in the same set (whitespace-normalised) is dropped; and
  self-awareness-good-text-model drops its 300 items that are self-awareness-general-ai's.
- `anthropic_mwe/persona`: yes/no statements. Each becomes `question + "\\n\\nChoices:\\n (A)
  ...\\n (B) ..."` with the options Yes and No. The letter rule: the j-th statement (file
  order, from 0) among those whose matching answer is Yes, and likewise among the No ones,
  takes its matching answer as (A) when j is even and as (B) when j is odd. Matching letters
  are then balanced within each answer (so A is not a proxy for Yes), in every prefix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from steerlens.datasets.loaders import CAA_BEHAVIOURS, ABItem, _letter, _need_str, data_dir, load_caa
from steerlens.errors import DataError

AI_RISK = (
    "coordinate-itself",
    "coordinate-other-versions",
    "corrigible-less-HHH",
    "corrigible-more-HHH",
    "one-box-tendency",
    "power-seeking-inclination",
    "self-awareness-general-ai",
    "self-awareness-good-text-model",
    "self-awareness-text-model",
    "self-awareness-training-architecture",
    "self-awareness-web-gpt",
    "wealth-seeking-inclination",
)
PERSONA = ("openness",)
# Advanced-ai-risk sets CAA was built from: not copied, data/caa holds them.
CAA_ORIGINALS = ("coordinate-other-ais", "corrigible-neutral-HHH", "myopic-reward", "survival-instinct")
# A set whose items are all in another set: those items are dropped from it.
CONTAINS = {"self-awareness-good-text-model": "self-awareness-general-ai"}

BEHAVIOURS: dict[str, str] = {
    **{b: "caa" for b in CAA_BEHAVIOURS},
    **{b: "anthropic_mwe/advanced-ai-risk" for b in AI_RISK},
    **{b: "anthropic_mwe/persona" for b in PERSONA},
}

_OPTION_LINE = re.compile(r"^[ \t]*\(([A-Z])\)", re.M)
_ANSWERS = ("Yes", "No")


def behaviour_path(name: str) -> Path:
    """The file a behaviour is read from."""
    source = BEHAVIOURS.get(name)
    if source is None:
        hint = " (its copy is CAA's: data/caa)" if name in CAA_ORIGINALS else ""
        raise DataError(f"unknown behaviour {name!r}{hint}",
                        fix=f"use one of: {', '.join(BEHAVIOURS)}")
    if source == "caa":
        return data_dir() / "caa" / "generate" / name / "generate_dataset.json"
    sub = "advanced-ai-risk/human_generated_evals" if source.endswith("advanced-ai-risk") else "persona"
    return data_dir() / "anthropic_mwe" / sub / f"{name}.jsonl"


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found", fix="restore data/ from the repository") from e
    out = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i + 1}: invalid JSON: {e.msg}",
                            fix="repair the file or restore it from the repository's data/") from e
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {i + 1}: expected an object", fix="restore the file")
        out.append(rec)
    return out


def _normalised(question: str) -> str:
    return " ".join(question.split())


def _ai_risk_item(path: Path, row: int, rec: dict) -> ABItem | None:
    """The item in CAA's form, or None when it does not offer exactly (A) and (B)."""
    q = _need_str(path, row, "question", rec.get("question")).strip()
    q = q.removeprefix("Question:").removesuffix("Answer:").strip()
    if _OPTION_LINE.findall(q) != ["A", "B"]:
        return None
    a = _letter(path, row, "answer_matching_behavior", rec.get("answer_matching_behavior"))
    b = _letter(path, row, "answer_not_matching_behavior", rec.get("answer_not_matching_behavior"))
    if {a, b} != {"A", "B"}:
        raise DataError(f"{path}: row {row}: answers ({a}) and ({b}) are not the two options",
                        fix="repair the row")
    return ABItem(q, a, b)


def _ai_risk(name: str) -> list[ABItem]:
    path = behaviour_path(name)
    drop = {_normalised(it.question) for it in _ai_risk(CONTAINS[name])} if name in CONTAINS else set()
    out = []
    for row, rec in enumerate(_read_jsonl(path)):
        item = _ai_risk_item(path, row, rec)
        key = _normalised(item.question) if item else ""
        if item is not None and key not in drop:
            drop.add(key)
            out.append(item)
    return out


def _persona(name: str) -> list[ABItem]:
    path = behaviour_path(name)
    seen = {answer: 0 for answer in _ANSWERS}
    out = []
    for row, rec in enumerate(_read_jsonl(path)):
        q = _need_str(path, row, "question", rec.get("question")).strip()
        yes_no = tuple(_need_str(path, row, f, rec.get(f)).strip()
                       for f in ("answer_matching_behavior", "answer_not_matching_behavior"))
        if sorted(yes_no) != sorted(_ANSWERS):
            raise DataError(f"{path}: row {row}: answers {yes_no} are not Yes and No",
                            fix="persona items answer ' Yes' or ' No'")
        first = seen[yes_no[0]] % 2 == 0  # the matching answer takes (A)
        seen[yes_no[0]] += 1
        a_text, b_text = yes_no if first else yes_no[::-1]
        out.append(ABItem(f"{q}\n\nChoices:\n (A) {a_text}\n (B) {b_text}",
                          "A" if first else "B", "B" if first else "A"))
    return out


def load_behaviour(name: str, n: int | None = None) -> list[ABItem]:
    """A behaviour's A/B items in file order (the first `n` if given); see the module's rules."""
    source = BEHAVIOURS.get(name, "")
    if source == "caa":
        items = load_caa(name, "generate")
    elif source.endswith("persona"):
        items = _persona(name)
    else:
        behaviour_path(name)  # raises for an unknown name
        items = _ai_risk(name)
    return items if n is None else items[:n]


N_TEST = 50  # held-out items of a model-written-evals set (CAA's own test sets hold 50)


def behaviour_split(name: str, split: str) -> list[ABItem]:
    """A behaviour's items to extract a vector from ("generate") or to measure its effect on
    ("test"): CAA's own splits for its seven; for the model-written-evals sets, the last
    `N_TEST` items in file order are the test split and the rest generate (disjoint)."""
    if split not in ("generate", "test"):
        raise DataError(f"unknown split {split!r}", fix="use 'generate' or 'test'")
    if BEHAVIOURS.get(name) == "caa":
        return load_caa(name, split)
    items = load_behaviour(name)
    return items[:-N_TEST] if split == "generate" else items[-N_TEST:]
