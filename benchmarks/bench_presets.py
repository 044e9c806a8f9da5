"""Wall time and peak memory of `python -m steerlens.audit --preset P`, as a user runs it.

    python benchmarks/bench_presets.py --preset quick --json benchmarks/results_presets.json

Each preset runs in a fresh process into a fresh directory (the model conversion is cached, so
run the audit once before to leave it out). Peak memory is the child's maximum RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(preset: str, extra: list[str]) -> dict:
    """Time one audit in a child process; return wall seconds, peak RSS (GB), exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "steerlens.audit", "--preset", preset, "--out",
               str(Path(tmp) / "run"), "--no-report", *extra]
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"preset": preset, "args": extra, "wall_s": round(wall, 1),
            "peak_rss_gb": round(rss_kb / 1e6, 2), "exit_code": rc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--json", default=None, help="append the result to this JSON list")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more audit flags after --")
    args = p.parse_args()
    res = run(args.preset, [a for a in args.extra if a != "--"])
    print(res)
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + [res], indent=1) + "\n")


if __name__ == "__main__":
    main()
