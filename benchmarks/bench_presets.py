"""Wall time and peak memory of `python -m steerlens.audit --preset P`, as a user runs it.

    python benchmarks/bench_presets.py --preset quick --json benchmarks/results_presets.json
    python benchmarks/bench_presets.py --fresh --json benchmarks/results_presets.json

Each preset runs in a fresh process into a fresh directory (the model conversion is cached, so
run the audit once before to leave it out). Peak memory is the child's maximum RSS.
`--fresh` times README's first command verbatim on a fresh clone of this checkout's HEAD with
a new venv and an empty model cache: install, model conversion and the quick audit together.
`--cold-warm` measures model-level reuse in one go on one machine: HF `generate`'s new tok/s
(unsteered, 8 JBB goals, 24 new tokens, as `bench_core.py`), the quick preset cold (an empty
reuse store), then a quick audit of a different vector warm (the store the cold run filled).

    python benchmarks/bench_presets.py --cold-warm --json benchmarks/results_presets.json
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


def run(preset: str, extra: list[str], env: dict | None = None) -> dict:
    """Time one audit in a child process; return wall seconds, peak RSS (GB), exit code, and
    the run's own per-stage seconds and reuse record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "steerlens.audit", "--preset", preset, "--out", str(out),
               "--no-report", *extra]
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env).returncode
        wall = time.perf_counter() - t0
        timings = json.loads((out / "timings.json").read_text()) if rc == 0 else {}
        reused = json.loads((out / "reuse.json").read_text()) if rc == 0 else {}
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"preset": preset, "args": extra, "wall_s": round(wall, 1),
            "peak_rss_gb": round(rss_kb / 1e6, 2), "exit_code": rc,
            "stages_s": timings.get("stages"),
            "reused": sorted(k for k, v in reused.get("artefacts", {}).items() if v.get("reused"))}


def append_json(path: Path, rec: dict) -> None:
    """Append one result to a JSON list file (created if missing)."""
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + [rec], indent=1) + "\n")


def hf_rate() -> float:
    """HF `generate`'s new tok/s on this machine, as `bench_core.py` measures it."""
    code = ("import argparse, torch; torch.set_grad_enabled(False); import bench_core as b; "
            "m = b.load_model('qwen2.5-coder-0.5b-instruct', device='cpu'); "
            "a = argparse.Namespace(n=8, new=24); "
            "v = torch.randn(m.cfg.d_model); "
            "print(b.bench_generation(m, b.load_jbb('harmful')[:8], v, a)['hf_tok_s'])")
    got = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent,
                         capture_output=True, text=True, check=True)
    return float(got.stdout.strip().splitlines()[-1])


def run_cold_warm() -> dict:
    """Quick cold (empty reuse store), then another vector warm; HF's rate beside them."""
    rate = hf_rate()
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "STEERLENS_REUSE_DIR": store}
        cold = run("quick", [], env)
        warm = run("quick", ["--behaviours", "survival-instinct"], env)
    return {"preset": "quick", "cold_warm": True, "hf_generate_tok_s": round(rate, 1),
            "cold": cold, "warm": warm, "warm_over_cold": round(warm["wall_s"] / cold["wall_s"], 3)}


def readme_command() -> str:
    """README's first command (install and run the quick audit), as written there."""
    for line in (Path(__file__).parents[1] / "README.md").read_text().splitlines():
        if line.startswith("    python3 -m venv .venv") and "steerlens.audit" in line:
            return line.strip()
    raise SystemExit("README.md has no install-and-run command")


def run_fresh() -> dict:
    """README's first command on a fresh clone, fresh venv and empty model cache."""
    repo = Path(__file__).parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "steerlens"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        # no pip cache either: packages come from the index, as on a new machine
        env = {**os.environ, "STEERLENS_CACHE": str(Path(tmp) / "cache"), "PIP_NO_CACHE_DIR": "1"}
        t0 = time.perf_counter()
        rc = subprocess.run(["bash", "-c", readme_command()], cwd=clone, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        wall = time.perf_counter() - t0
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone,
                                capture_output=True, text=True).stdout.strip()
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"preset": "quick", "fresh": True, "commit": commit, "command": readme_command(),
            "wall_s": round(wall, 1), "peak_rss_gb": round(rss_kb / 1e6, 2), "exit_code": rc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--fresh", action="store_true",
                   help="README's install-and-run command on a fresh clone, venv and model cache")
    p.add_argument("--cold-warm", action="store_true",
                   help="quick cold, then another vector warm (model-level reuse), with HF's rate")
    p.add_argument("--json", default=None, help="append the result to this JSON list")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more audit flags after --")
    args = p.parse_args()
    if args.cold_warm:
        res = run_cold_warm()
    else:
        res = run_fresh() if args.fresh else run(args.preset, [a for a in args.extra if a != "--"])
    res["commit"] = res.get("commit") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res["date"] = time.strftime("%Y-%m-%d")
    res["cpus"] = os.cpu_count()
    print(res)
    if args.json:
        append_json(Path(args.json), res)


if __name__ == "__main__":
    main()
