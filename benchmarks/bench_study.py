"""Wall time of the vector-library study (`python -m steerlens.audit.study`) on one machine,
with HF `generate`'s new tok/s measured just before on the same machine (the speed to read the
wall time against; machines differ about 2x).

    python benchmarks/bench_study.py --out results/library-0.5b --json benchmarks/results_study.json
    python benchmarks/bench_study.py --out DIR --json FILE -- --mediation   # study flags after --

The study runs cold: a new, empty reuse store (so the first audit computes every model-level
artefact and the second reuses them, as on a user's first study). Run it from a clean checkout
(e.g. a git worktree of the commit): the reuse keys hash steerlens' source, so an edit between
the two audits would make the second one recompute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_presets import append_json, hf_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--json", default=None, help="append the result to this JSON list")
    p.add_argument("--resume", action="store_true", help="continue a stopped study in --out")
    p.add_argument("study_args", nargs="*", help="more flags for the study, after --")
    args = p.parse_args()
    rate = hf_rate()
    print(f"HF generate: {rate:.1f} new tok/s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "STEERLENS_REUSE_DIR": store}
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "steerlens.audit.study", "--out", args.out,
                             "--model", args.model, *(["--resume"] if args.resume else []),
                             *args.study_args],
                            env=env).returncode
        wall = time.perf_counter() - t0
    out = Path(args.out)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    rec = {"model": args.model, "hf_tok_s": round(rate, 1), "wall_s": round(wall, 1),
           "exit_code": rc, "peak_rss_gb": round(rss, 2),
           "steps_s": json.loads((out / "study_timings.json").read_text())["seconds"] if rc == 0 else None,
           "stages_s": {s: json.loads((out / s / "timings.json").read_text())["stages"]
                        for s in ("caa", "methods") if (out / s / "timings.json").exists()},
           "study_args": args.study_args, "resumed": args.resume, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(rec, indent=1))
    if args.json:
        append_json(Path(args.json), rec)


if __name__ == "__main__":
    main()
