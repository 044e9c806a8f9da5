"""JailbreakBench attack artifacts: (goal, response, label) triples for calibrating judges.

The files are JailbreakBench's own (`JailbreakBench/artifacts`, `attack-artifacts/`, see
`data/jbb_artifacts/SOURCE.md`); `jailbroken` is JailbreakBench's judge label. Records
without a response (the attack produced no prompt) are skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from steerlens.datasets.loaders import data_dir
from steerlens.errors import DataError

METHODS: tuple[str, ...] = ("JBC", "PAIR", "GCG", "prompt_with_random_search", "DSN")


@dataclass(frozen=True)
class ArtifactResponse:
    """One target model's response to one attack prompt, with JailbreakBench's label."""

    method: str
    attack_type: str
    model: str
    index: int
    goal: str
    category: str
    response: str
    jailbroken: bool


def artifacts_dir() -> Path:
    """Where the shipped artifact files live (`data/jbb_artifacts/attack-artifacts`)."""
    return data_dir() / "jbb_artifacts" / "attack-artifacts"


def artifact_files() -> list[Path]:
    """The per-model artifact files, sorted (so loading order and the data hash are stable)."""
    root = artifacts_dir()
    files = sorted(p for p in root.glob("*/*/*.json") if p.parts[-3] in METHODS)
    if not files:
        raise DataError(f"no JailbreakBench artifact files under {root}",
                        fix="restore data/jbb_artifacts from the repository (see data/README.md)")
    return files


def _record(path: Path, i: int, r: dict) -> ArtifactResponse:
    try:
        return ArtifactResponse(method=path.parts[-3], attack_type=path.parts[-2], model=path.stem,
                                index=int(r["index"]), goal=str(r["goal"]),
                                category=str(r["category"]), response=str(r["response"]),
                                jailbroken=bool(r["jailbroken"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: record {i} lacks a valid field ({e})",
                        fix="restore the file from data/jbb_artifacts") from e


def load_artifacts(methods: tuple[str, ...] = METHODS) -> list[ArtifactResponse]:
    """Every labelled response of the given attack methods, in file then record order."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise DataError(f"unknown attack method(s) {unknown}", fix=f"use some of {', '.join(METHODS)}")
    out: list[ArtifactResponse] = []
    for path in artifact_files():
        if path.parts[-3] not in methods:
            continue
        records = json.loads(path.read_text(encoding="utf-8"))["jailbreaks"]
        out += [_record(path, i, r) for i, r in enumerate(records) if r.get("response") is not None]
    return out


def artifacts_sha256() -> str:
    """One hash over every artifact file (path and bytes): recorded with anything trained on them."""
    h = hashlib.sha256()
    root = artifacts_dir()
    for path in artifact_files():
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()
