"""Fit and measure the harm judge (`steerlens.judges.harm`) on the labelled completions, held
out by goal: `steerlens.judges.harm_training.train_harm_judge` (the recipe and the nested
protocol are described there; `steerlens judges train --judge harm` is the same training).
Writes the full report, including the string judges on the same rows (against harm and against
non-refusal) and every judge against JailbreakBench's 1,637 artifact labels.

    python experiments/harm_judge_fit.py --json docs/harm_judge_fit.json --save steerlens/judges/weights
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steerlens.judges.harm_training import train_harm_judge


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save", type=Path, help="directory for the judge's weights")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--cache", type=Path, default=None, help="feature cache directory")
    a = ap.parse_args(argv)
    report = train_harm_judge(a.layer, a.save, a.cache)
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
