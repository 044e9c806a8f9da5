"""A run's stored summaries kept equal to what its cells give under the current rules (pure).

The audit writes RUN/summary.json (and `mitigate` RUN/mitigations/mitigations.json and .md)
once, with the rules of its day; a reader opening a committed file should see the numbers the
current rules give. `refresh` rewrites them from the saved cells and labels (no model);
`stale` names those that differ (a test runs it on every committed run), `stale_study` the
same for a vector-library study's analysis files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from steerlens.rundir import _clean, read_json, write_json
from steerlens.schema import CONFIG_FILE, MITIGATIONS_FILE, MITIGATIONS_TEXT, SUMMARY_FILE

REL, ABS = 1e-9, 1e-12  # float tolerance: the same code on another BLAS may differ in the last bits


def _summary(run: Path) -> dict:
    from steerlens.results.summary import current_summary

    return current_summary(run)


def _mitigations(run: Path) -> dict[str, dict]:
    """Each mitigation run of RUN (`mitigations/`, `mitigations-NAME/`) summarised now."""
    from steerlens.results.mitigations import mitigation_dirs, summarize_mitigations

    return {d: summarize_mitigations(run, d) for d in mitigation_dirs(run)}


def refresh(run: str | Path) -> list[Path]:
    """Rewrite RUN/summary.json (and the mitigation files, when the run has them) from the cells
    under the current rules; returns the files written."""
    from steerlens.results.mitigations import write_mitigations

    run = Path(run)
    write_json(run / SUMMARY_FILE, _summary(run))
    out = [run / SUMMARY_FILE]
    for d, m in _mitigations(run).items():
        write_mitigations(run, m)
        out += [run / d / MITIGATIONS_FILE, run / d / MITIGATIONS_TEXT]
    return out


def differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ (floats within `REL`/`ABS`), as key paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in (differences(a[k], b[k], f"{path}/{k}") if k in a and k in b else [f"{path}/{k}"])]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (length {len(a)} vs {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=REL, abs_tol=ABS) else [f"{path} ({a} vs {b})"]
    return [] if a == b else [f"{path} ({a!r} vs {b!r})"]


def _as_stored(obj) -> object:
    """What `write_json` would store (NaN as null, tuples as lists, keys as strings)."""
    return json.loads(json.dumps(_clean(obj)))


def stale(run: str | Path) -> dict[str, list[str]]:
    """Each stored summary file of RUN that the current rules would write differently, with the
    first differing key paths (empty when all are current)."""
    run = Path(run)
    out = {}
    d = differences(read_json(run / SUMMARY_FILE), _as_stored(_summary(run)))
    if d:
        out[SUMMARY_FILE] = d[:5]
    from steerlens.results.mitigations import format_mitigations, mitigation_dirs, summarize_mitigations

    for name in mitigation_dirs(run):
        if not (run / name / MITIGATIONS_FILE).exists():
            out[f"{name}/{MITIGATIONS_FILE}"] = ["missing: the mitigation run has not finished"]
            continue
        m = summarize_mitigations(run, name)
        stored = read_json(run / name / MITIGATIONS_FILE)
        d = differences({**stored, "run": None}, {**_as_stored(m), "run": None})
        if d:
            out[f"{name}/{MITIGATIONS_FILE}"] = d[:5]
        text = (run / name / MITIGATIONS_TEXT).read_text().splitlines()[1:]
        if text != (format_mitigations(m) + "\n").splitlines()[1:]:  # line 0 names the run's path
            out[f"{name}/{MITIGATIONS_TEXT}"] = ["text differs"]
    return out


def stale_study(study: str | Path) -> dict[str, list[str]]:
    """A vector-library study's stored analysis (library.json, library.md) against the analysis
    of its runs' files now (with its polarity direction file, as the study wrote it)."""
    from steerlens.results.library import analyse, format_analysis
    from steerlens.schema import LAYER_SCAN_FILE, LIBRARY_FILE, LIBRARY_TEXT, POLARITY_TENSORS

    study = Path(study)
    pol = study / POLARITY_TENSORS
    runs = [study / r for r in ("caa", "methods") if (study / r / SUMMARY_FILE).exists()]
    a = analyse(runs, study / LAYER_SCAN_FILE, pol if pol.exists() else None)
    out = {}
    if d := differences(read_json(study / LIBRARY_FILE), _as_stored(a)):
        out[LIBRARY_FILE] = d[:5]
    if (study / LIBRARY_TEXT).read_text() != format_analysis(a) + "\n":
        out[LIBRARY_TEXT] = ["text differs"]
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m steerlens.results.stored RUN [RUN ...]`: rewrite each run's stored summaries
    from its cells under the current rules (no model)."""
    from steerlens.errors import ArgumentParser, SteerlensError, cli_main

    p = ArgumentParser(prog="python -m steerlens.results.stored", description=main.__doc__)
    p.add_argument("runs", nargs="+", help="audit run directories (their --out)")
    args = p.parse_args(argv)

    def _run() -> list[Path]:
        bad = [r for r in args.runs if not (Path(r) / CONFIG_FILE).exists()]
        if bad:
            raise SteerlensError(f"{bad[0]} is not a run directory (no config.json)",
                                 fix="pass audit run directories (their --out)")
        return [f for r in args.runs for f in refresh(r)]

    return cli_main(_run, lambda files: "\n".join(map(str, files)))


if __name__ == "__main__":
    raise SystemExit(main())
