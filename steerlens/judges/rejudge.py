"""Re-judge a run's saved completions with another judge, side by side with its own labels.

`python -m steerlens.judges.rejudge RUN --judge NAME` writes `RUN/judgements/<NAME>.json`: per cell
the new labels, the judge's settings, and agreement with the run's own labels (Cohen's kappa
and raw agreement). No other file of the run is touched.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import cohen_kappa_score
from tqdm.auto import tqdm

from steerlens.errors import ArgumentParser, SteerlensError, cli_main
from steerlens.rundir import read_json, write_json
from steerlens.schema import CELLS_DIR, judgement_file


def agreement(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Raw agreement and Cohen's kappa (None when kappa is undefined, e.g. one label only)."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if len(x) == 0:
        return {"n": 0, "agreement": None, "kappa": None}
    single = len(set(x.tolist()) | set(y.tolist())) < 2
    kappa = None if single else float(cohen_kappa_score(x, y))
    return {"n": int(len(x)), "agreement": float(np.mean(x == y)), "kappa": kappa}


def read_cells(run: Path) -> list[tuple[str, dict]]:
    """(file name, cell) for every generated cell of a run (screen-only cells have no
    completions and are skipped); errors name the fix."""
    cells_dir = Path(run) / CELLS_DIR
    if not Path(run).is_dir():
        raise SteerlensError(f"run directory {run} does not exist", fix="pass the --out of an audit run")
    files = sorted(cells_dir.glob("*.json"))
    if not files:
        raise SteerlensError(f"{run} has no saved cells (cells/*.json)",
                             fix="pass a run directory written by `python -m steerlens` (audit)")
    out = []
    for f in files:
        cell = read_json(f)
        if cell.get("generated") is False:
            continue  # a screen-only cell: first-token scores, no completions to judge
        missing = [k for k in ("goals", "completions", "jailbroken") if k not in cell]
        if missing or len(cell["goals"]) != len(cell["completions"]):
            raise SteerlensError(f"{f} lacks {missing or 'one goal per completion'}",
                                 fix="re-run the audit that wrote it (the cell file is damaged)")
        out.append((f.name, cell))
    return out


def safe_name(name: str) -> str:
    """A file-name-safe version of a judge label (e.g. 'jbb@Qwen/x' -> 'jbb@Qwen_x')."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name).strip("._") or "judge"


class LabelMemo(Protocol):
    """Where a cell's labels may already be (`audit.reuse.HarmMemo`): content-addressed."""

    def get(self, cell: dict) -> list[bool] | None: ...

    def put(self, cell: dict, labels: list[bool]) -> None: ...


def _labels(judge, cell: dict, memo: LabelMemo | None) -> list[bool]:
    """The judge's labels of one cell, judged on their own (a cell's labels never depend on
    the other cells of the run, so they can be reused by content)."""
    got = memo.get(cell) if memo is not None else None
    if got is None:
        got = [bool(x) for x in judge.judge(cell["goals"], cell["completions"])]
        if memo is not None:
            memo.put(cell, got)
    return got


def rejudge(run: str | Path, judge, label: str | None = None, memo: LabelMemo | None = None) -> Path:
    """Judge every cell's completions with `judge`, cell by cell; write and return the
    judgements file (no timings in it: a run's files are byte-stable)."""
    run = Path(run)
    cells = read_cells(run)
    t0 = time.perf_counter()
    out_cells, all_old, all_new = {}, [], []
    for fname, c in tqdm(cells, desc=f"{judge.name} judge", unit="cell", leave=False):
        new = _labels(judge, c, memo)
        old = [bool(x) for x in c["jailbroken"]]
        all_old += old
        all_new += new
        out_cells[fname[: -len(".json")]] = {
            "attack": c.get("attack"), "setting": c.get("setting"), "jailbroken": new,
            "asr": float(np.mean(new)) if new else None,
            "run_asr": float(np.mean(old)) if old else None, **agreement(old, new)}
    result = {"judge": judge.name, "settings": judge.settings(), "cells": out_cells,
              "overall": agreement(all_old, all_new), "n_completions": len(all_new)}
    path = run / judgement_file(safe_name(label or judge.name))
    write_json(path, result)
    print(f"[steerlens] {judge.name}: {len(all_new)} completions judged in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user errors print their fix and exit 2."""
    p = ArgumentParser(prog="python -m steerlens.judges.rejudge", description=__doc__.split("\n")[0])
    p.add_argument("run", help="run directory (an audit's --out)")
    p.add_argument("--judge", required=True)
    p.add_argument("--name", default=None, help="file name under RUN/judgements/ (default: judge)")
    p.add_argument("--model", default=None, help="judge model (LLM judges)")
    p.add_argument("--device", default=None)
    p.add_argument("--option", action="append", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    return cli_main(lambda: _rejudge_cli(args), _written)


def _rejudge_cli(args) -> Path:
    from steerlens.judges.calibration import judge_options
    from steerlens.judges.registry import get_judge

    read_cells(Path(args.run))  # fail on a bad run before loading any judge model
    return rejudge(args.run, get_judge(args.judge, **judge_options(args)), args.name)


def _written(path: Path) -> str:
    ov = read_json(path)["overall"]
    kappa = "n/a" if ov["kappa"] is None else f"{ov['kappa']:.3f}"
    return (f"wrote {path}: {read_json(path)['n_completions']} completions, agreement with the "
            f"run's labels {ov['agreement']}, kappa {kappa}")


if __name__ == "__main__":
    raise SystemExit(main())
