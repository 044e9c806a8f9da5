"""Typed loaders for the shipped datasets (JBB, Arditi splits, CAA A/B, GPTFuzzer templates).

Every loader validates its fields; a malformed file raises `DataError` naming file, row and
field. Data lives in the repository's `data/` (override with `$STEERLENS_DATA`); see
`data/README.md` for sources and licences.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from steerlens.errors import DataError

CAA_BEHAVIOURS = (
    "coordinate-other-ais",
    "corrigible-neutral-HHH",
    "hallucination",
    "myopic-reward",
    "survival-instinct",
    "sycophancy",
    "refusal",
)


def data_dir() -> Path:
    """The dataset root: `$STEERLENS_DATA`, else the checkout's top-level `data/` (source and
    editable installs), else the copy a wheel ships inside the package (`steerlens/_data`)."""
    env = os.environ.get("STEERLENS_DATA")
    package = Path(__file__).resolve().parents[1]
    candidates = [Path(env)] if env else [package.parent / "data", package / "_data"]
    for root in candidates:
        if root.is_dir():
            return root
    raise DataError(
        f"dataset directory not found (looked in {', '.join(map(str, candidates))})",
        fix="reinstall steerlens (the wheel ships its data) or set STEERLENS_DATA",
    )


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class JBBGoal:
    """One row of JailbreakBench's JBB-Behaviors: a goal (harmful or benign), its target, category and
    source (named for the goal, so it is not confused with the CAA behaviours)."""

    index: int
    goal: str
    target: str
    behavior: str
    category: str
    source: str


@dataclass(frozen=True)
class Instruction:
    """One instruction of the Arditi harmful/harmless splits."""

    instruction: str
    category: str | None


@dataclass(frozen=True)
class ABItem:
    """One CAA A/B item: `matching` and `not_matching` are answer letters, "A" or "B"."""

    question: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class Template:
    """A jailbreak template with its placeholder."""

    name: str
    text: str
    placeholder: str = "[INSERT PROMPT HERE]"


_OPTION = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]?", re.M)


def option_spans(question: str) -> dict[str, tuple[int, int]]:
    """Character span of each option's text in an A/B question, by letter (from its `(X)`
    marker to the next one)."""
    marks = list(_OPTION.finditer(question))
    spans = {}
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(question)
        text_end = end - 1 if question[end - 1: end] == "\n" and k + 1 < len(marks) else end
        spans[m.group(1)] = (m.end(), text_end)
    return spans


def _need_str(path: Path, row: int, field: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"{path}: row {row}: field {field!r} is missing or empty",
            fix="repair the file or restore it from the repository's data/",
        )
    return value


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found", fix="restore data/ from the repository") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}",
                        fix="repair the file or restore it from the repository's data/") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records", fix="restore the file")
    return data


def load_jbb(split: str = "harmful", path: Path | None = None) -> list[JBBGoal]:
    """JBB-Behaviors, `harmful` or `benign` (100 each). Column names are read case-insensitively."""
    if split not in ("harmful", "benign"):
        raise DataError(f"unknown JBB split {split!r}", fix="use 'harmful' or 'benign'")
    path = Path(path) if path else data_dir() / "jbb_behaviors" / f"{split}-behaviors.csv"
    if not path.is_file():
        raise DataError(f"{path}: file not found", fix="restore data/ from the repository")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        need = ("goal", "target", "behavior", "category", "source")
        for col in need:
            if col not in header:
                raise DataError(f"{path}: row 1 (header): column {col!r} missing",
                                fix=f"the header must contain {', '.join(need)}")
        col = {c: header.index(c) for c in need}
        for i, rec in enumerate(reader):
            row = i + 2
            if len(rec) != len(header):
                raise DataError(f"{path}: row {row}: expected {len(header)} fields, got {len(rec)}",
                                fix="quote fields that contain commas")
            vals = {c: _need_str(path, row, c, rec[col[c]]) for c in need}
            idx = rec[0].strip()
            out.append(JBBGoal(index=int(idx) if idx.isdigit() else i, **vals))
    if not out:
        raise DataError(f"{path}: no records", fix="restore the file")
    return out


def load_instructions(name: str, path: Path | None = None) -> list[Instruction]:
    """Arditi splits: `harmful_train`, `harmful_val`, `harmless_train`, `harmless_val`.

    `harmful_test` is deliberately not shipped: it contains every JBB goal, so a direction fit
    on it would leak the evaluation set.
    """
    path = Path(path) if path else data_dir() / "refusal_direction" / "splits" / f"{name}.json"
    if path is None or not path.is_file():
        raise DataError(f"{path}: file not found",
                        fix="use harmful_train, harmful_val, harmless_train or harmless_val")
    out = []
    for i, rec in enumerate(_read_json_list(path)):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: row {i}: expected an object", fix="restore the file")
        cat = rec.get("category")
        if cat is not None and not isinstance(cat, str):
            raise DataError(f"{path}: row {i}: field 'category' must be a string or null",
                            fix="repair the row")
        out.append(Instruction(_need_str(path, i, "instruction", rec.get("instruction")), cat))
    return out


_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


def _letter(path: Path, row: int, field: str, value) -> str:
    m = _LETTER.match(_need_str(path, row, field, value))
    if not m:
        raise DataError(f"{path}: row {row}: field {field!r} = {value!r} is not an answer letter",
                        fix="use '(A)' or '(B)'")
    return m.group(1)


def _check_behaviour(behaviour: str) -> None:
    if behaviour not in CAA_BEHAVIOURS:
        raise DataError(f"unknown behaviour {behaviour!r}",
                        fix=f"use one of: {', '.join(CAA_BEHAVIOURS)}")


def caa_path(behaviour: str, split: str = "generate") -> Path:
    _check_behaviour(behaviour)
    if split == "generate":
        return data_dir() / "caa" / "generate" / behaviour / "generate_dataset.json"
    if split == "test":
        return data_dir() / "caa" / "test" / behaviour / "test_dataset_ab.json"
    raise DataError(f"unknown CAA split {split!r}", fix="use 'generate' or 'test'")


def load_caa(behaviour: str, split: str = "generate", path: Path | None = None) -> list[ABItem]:
    """CAA A/B items for a behaviour: `generate` (vector estimation) or `test` (held out)."""
    path = Path(path) if path else caa_path(behaviour, split)
    return _ab_items(path, "question", "answer_matching_behavior", "answer_not_matching_behavior",
                     "matching and non-matching answers")


def _ab_items(path: Path, q_key: str, a_key: str, b_key: str, what: str) -> list[ABItem]:
    """A JSON list of A/B records as `ABItem(question, a letter, b letter)`, each row checked."""
    out = []
    for i, rec in enumerate(_read_json_list(path)):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: row {i}: expected an object", fix="restore the file")
        q = _need_str(path, i, q_key, rec.get(q_key))
        a = _letter(path, i, a_key, rec.get(a_key))
        b = _letter(path, i, b_key, rec.get(b_key))
        if a == b:
            raise DataError(f"{path}: row {i}: {what} are both {a!r}", fix="repair the row")
        out.append(ABItem(q, a, b))
    return out


CAPABILITY_SETS = {"mmlu": "mmlu/mmlu.json", "truthfulqa": "truthfulqa/truthful_qa.json"}


def load_capability(name: str, path: Path | None = None) -> list[ABItem]:
    """CAA's side-effect A/B sets (`data/caa/test`): MMLU (570, 10 per subject) or TruthfulQA
    (817), as `ABItem(prompt, correct letter, incorrect letter)`: "matching" is correct."""
    if name not in CAPABILITY_SETS:
        raise DataError(f"unknown capability set {name!r}", fix=f"use one of: {', '.join(CAPABILITY_SETS)}")
    path = Path(path) if path else data_dir() / "caa" / "test" / CAPABILITY_SETS[name]
    return _ab_items(path, "prompt", "correct", "incorrect", "correct and incorrect")


def load_polarity(split: str = "train", path: Path | None = None) -> list[ABItem]:
    """The neutral yes/no questions of `data/polarity` (written for steerlens; 200 train, 40
    test, true answers half Yes, half No) as `ABItem(question, true letter, other letter)`:
    for the answer-polarity direction (`methods.polarity`)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown polarity split {split!r}", fix="use 'train' or 'test'")
    path = Path(path) if path else data_dir() / "polarity" / f"{split}.json"
    return _ab_items(path, "question", "answer_matching_behavior", "answer_not_matching_behavior",
                     "true and false answers")


def load_gptfuzzer_templates(path: Path | None = None) -> dict[int, Template]:
    """The 77 GPTFuzzer jailbreakchat templates by id; each must contain its placeholder."""
    path = Path(path) if path else data_dir() / "jailbreak_templates_gptfuzzer" / "GPTFuzzer.csv"
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.DictReader(f)):
            row = i + 2
            text = _need_str(path, row, "text", rec.get("text"))
            tid = _need_str(path, row, "id", rec.get("id"))
            tpl = Template(name=f"gptfuzzer-{tid}", text=text)
            if tpl.placeholder not in text:
                raise DataError(f"{path}: row {row}: template has no {tpl.placeholder!r}",
                                fix="add the placeholder where the request goes")
            out[int(tid)] = tpl
    return out


CATEGORIZED = {
    # source: (file under refusal_direction/raw, text column, category column, row filter)
    "strongreject": ("strongreject.csv", "forbidden_prompt", "category", None),
    "harmbench": ("harmbench_test.csv", "Behavior", "SemanticCategory", ("FunctionalCategory",
                                                                         "standard")),
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def overlaps_jbb(text: str, threshold: float = 0.5) -> bool:
    """True when `text` shares at least `threshold` of its words (Jaccard) with a JBB goal."""
    w = _words(text)
    return any(len(w & g) / max(len(w | g), 1) >= threshold for g in _jbb_word_sets())


_JBB_WORDS: list[set[str]] = []


def _jbb_word_sets() -> list[set[str]]:
    if not _JBB_WORDS:
        _JBB_WORDS.extend(_words(b.goal) for b in load_jbb("harmful"))
    return _JBB_WORDS


def load_categorized(source: str = "strongreject", path: Path | None = None) -> list[Instruction]:
    """Harmful prompts that carry a harm category (StrongREJECT, HarmBench standard), without
    those that overlap a JailbreakBench goal (word Jaccard >= 0.5): for the category subspace."""
    if source not in CATEGORIZED:
        raise DataError(f"unknown categorised prompt set {source!r}",
                        fix=f"use one of: {', '.join(CATEGORIZED)}")
    name, text_col, cat_col, keep = CATEGORIZED[source]
    path = Path(path) if path else data_dir() / "refusal_direction" / "raw" / name
    if not path.is_file():
        raise DataError(f"{path}: file not found", fix="restore data/ from the repository")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.DictReader(f)):
            if keep is not None and rec.get(keep[0]) != keep[1]:
                continue
            text = _need_str(path, i + 2, text_col, rec.get(text_col))
            cat = _need_str(path, i + 2, cat_col, rec.get(cat_col))
            if not overlaps_jbb(text):
                out.append(Instruction(text, cat))
    return out


def stratified(behaviors: list[JBBGoal], n: int) -> list[JBBGoal]:
    """`n` behaviours spread over the categories: round-robin over categories (in file order),
    taking each category's behaviours in file order, so every n covers as many as it can."""
    by_cat: dict[str, list[JBBGoal]] = {}
    for b in behaviors:
        by_cat.setdefault(b.category, []).append(b)
    out: list[JBBGoal] = []
    depth = 0
    while len(out) < min(n, len(behaviors)):
        for group in by_cat.values():
            if depth < len(group) and len(out) < n:
                out.append(group[depth])
        depth += 1
    return sorted(out, key=lambda b: b.index)
