"""Measure a judge against JailbreakBench's labels on its attack artifacts.

`python -m steerlens.judges calibrate --judge NAME [--limit N]` prints accuracy, precision,
recall and Cohen's kappa (scikit-learn), overall and per attack method, and the cost per
response. Judges with a score (LLM judges, the probe) are also thresholded
leave-one-attack-method-out; the probe is retrained leave-one-method-out
(`steerlens judges train` retrains the shipped probe; `--judge harm` the harm judge,
`judges.harm_training`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from steerlens.datasets.jbb_artifacts import METHODS, artifacts_sha256, load_artifacts
from steerlens.errors import ArgumentParser, SteerlensError, cli_main
from steerlens.judges.metrics import by_method, lomo_threshold, stratified_sample


def _options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to options; values are parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise SteerlensError(f"bad --option {p!r}", fix="write --option KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def judge_options(args: argparse.Namespace) -> dict[str, Any]:
    """The judge options given on the command line (--model, --device, --option)."""
    opts = _options(args.option or [])
    if args.model is not None:
        opts["model"] = args.model
    if args.device is not None:
        opts["device"] = args.device
    return opts


def calibrate(name: str, options: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
    """Judge the artifacts with `name` and measure agreement with JailbreakBench's labels."""
    from steerlens.judges.registry import get_judge

    judge = get_judge(name, **options)
    arts = stratified_sample(load_artifacts(), limit)
    goals, resps = [a.goal for a in arts], [a.response for a in arts]
    y = np.array([a.jailbroken for a in arts])
    methods = np.array([a.method for a in arts])
    t0 = time.perf_counter()
    scored = hasattr(judge, "scores")
    scores = np.array(judge.scores(goals, resps)) if scored else None
    pred = scores > judge.threshold if scored else np.array(judge.judge(goals, resps))
    ms = 1000 * (time.perf_counter() - t0) / len(arts)
    out = {"judge": name, "settings": judge.settings(), "n": len(arts), "limit": limit,
           "ms_per_response": ms, "data_sha256": artifacts_sha256(), **by_method(y, pred, methods)}
    if hasattr(judge, "lomo"):  # trained on these labels: only retrained held-out numbers count
        out["in_sample"] = True
        out["lomo_retrained"] = judge.lomo(goals, resps, y, methods)
    elif scored:
        out["lomo_threshold"] = lomo_threshold(scores, y, methods)
    return out


def format_report(r: dict[str, Any]) -> str:
    """A plain-text table of one calibration result."""
    lines = [f"judge {r['judge']}: {r['n']} responses, {r['ms_per_response']:.3g} ms/response",
             f"{'':<28} {'n':>5} {'acc':>6} {'prec':>6} {'rec':>6} {'kappa':>6} {'ASR':>5} {'ASR^':>5}"]

    def block(title: str, res: dict[str, Any]) -> None:
        lines.append(title)
        for k in ("overall", *METHODS):
            if k in res:
                m = res[k]
                lines.append(f"  {k:<26} {m['n']:>5} {m['accuracy']:>6.3f} {m['precision']:>6.3f} "
                             f"{m['recall']:>6.3f} {m['kappa']:>6.3f} {m['asr_true']:>5.2f} "
                             f"{m['asr_pred']:>5.2f}")

    block("IN-SAMPLE (trained on these labels), as shipped:" if r.get("in_sample")
          else "as configured (threshold as given):", r)
    if "lomo_threshold" in r:
        block("threshold fit leave-one-method-out (row = held-out method):", r["lomo_threshold"])
    if "lomo_retrained" in r:
        block("probe retrained leave-one-method-out (row = held-out method):", r["lomo_retrained"])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The `calibrate` and `train` subcommands."""
    p = ArgumentParser(prog="python -m steerlens.judges",
                                description="Calibrate (or train) jailbreak judges against "
                                            "JailbreakBench's artifact labels.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate", help="agreement with JailbreakBench's labels")
    c.add_argument("--judge", required=True)
    c.add_argument("--limit", type=int, default=None, help="stratified sample of N responses")
    c.add_argument("--json", default=None, help="also write the full result to this JSON file")
    t = sub.add_parser("train", help="retrain a shipped judge: the probe (on all artifacts) or "
                                     "the harm judge (on data/harm_labels, held out by goal)")
    t.add_argument("--judge", choices=("probe", "harm"), default="probe")
    t.add_argument("--out", default=None, help="weights directory (default: the package's)")
    t.add_argument("--layer", type=int, default=12, help="harm judge: the 0.5B's layer read")
    t.add_argument("--cache", default=None, help="harm judge: feature cache directory")
    t.add_argument("--json", default=None, help="harm judge: also write the full report here")
    for q in (c, t):
        q.add_argument("--model", default=None, help="judge model (LLM judges)")
        q.add_argument("--device", default=None)
        q.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="judge option, e.g. threshold=0.5 or batch_size=4")
    return p


def _train(args: argparse.Namespace) -> str:
    """`train`: the probe's or the harm judge's training."""
    if args.judge == "harm":
        from steerlens.judges.harm_training import train_cli as train_harm

        return train_harm(args)
    from steerlens.judges.probe import train_cli

    return train_cli(args.out, judge_options(args))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user errors print their fix and exit 2."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return cli_main(lambda: _train(args), str)
    return cli_main(lambda: _calibrate_cli(args), format_report)


def _calibrate_cli(args) -> dict:
    """`calibrate` of the command line's judge, written to --json when asked."""
    if args.limit is not None and args.limit < 2:
        raise SteerlensError(f"--limit {args.limit} is too small", fix="use --limit 20 or more")
    result = calibrate(args.judge, judge_options(args), args.limit)
    if args.json:
        from steerlens.rundir import write_json

        write_json(args.json, result)
    return result
