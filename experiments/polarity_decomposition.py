"""The polarity decomposition of the vector library (issue 40 item 5; docs/library.md, "Round 2:
polarity-balanced vectors", design committed before the run).

A round-1 vector v is its answer-polarity component plus the rest. At the audited dose the
component alone is +p or -p (p: the round-2 `caa` run's own polarity direction at its steering
layer); v with the component removed is the round-2 vector for the sets balanced by projection.
What is left to generate:
- `polarity_plus` (+p) and `polarity_minus` (-p);
- `openness_letter_perp`: round 1's openness vector (balanced by letter only) with p projected out
  at the steering layer (round 2 balances openness by weights and projection, so its round-2
  vector is not this one).

This script writes the three as steerlens vector files (resid_pre, the steering layer only) into
ROUND2/decomposition_inputs/, seeds ROUND2/decomposition/ with the round-2 caa run's model-level
files (refusal direction and subspace, the polarity direction, and the cells no audited vector
touches), then runs (and prints) the audit of the three files with the library preset, one
behaviour to carry the preset and no label-shuffled nulls. Every step skips what is on disk, so a
killed run is resumed by running the same command again.

    python experiments/polarity_decomposition.py results/library-0.5b-polarity \
        --round1 results/library-0.5b

Arguments after `--` go to the audit unchanged (the tests use them to shrink it to a tiny model).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from pathlib import Path

import torch

from steerlens.core.vectors import SteeringVector
from steerlens.errors import SteerlensError
from steerlens.rundir import atomic_save_tensor, read_json
from steerlens.schema import (
    CELLS_DIR,
    CONFIG_FILE,
    DECOMPOSITION_DIR,
    DECOMPOSITION_INPUTS,
    POLARITY_TENSORS,
    REFUSAL_FILE,
    REFUSAL_TENSORS,
    SUBSPACE_FILE,
    SUBSPACE_TENSORS,
    vector_file,
)

INPUTS_DIR, RUN_DIR = DECOMPOSITION_INPUTS, DECOMPOSITION_DIR
NAMES = ("polarity_plus", "polarity_minus", "openness_letter_perp")
MODEL_FILES = (REFUSAL_FILE, REFUSAL_TENSORS, SUBSPACE_TENSORS, SUBSPACE_FILE, POLARITY_TENSORS)
# cells of settings no audited vector touches: the baseline, the generated and screened nulls of
# the model (random, covariance, prompt-pair) and the refusal validation (attack__setting.json)
MODEL_CELL = re.compile(r"^.+?__(baseline|(random|covariance|pairdiff)\d+@[^+]*|refusal_ablated"
                        r"|refusal_added|subspace_ablated)\.json$")
CARRIER = "corrigible-neutral-HHH"


def steering_layer(caa: Path) -> int:
    """The round-2 caa run's steering layer (resid_pre), from its refusal record."""
    return int(read_json(caa / REFUSAL_FILE)["steering_layer"])


def polarity_at(caa: Path, layer: int) -> torch.Tensor:
    """The run's own answer-polarity direction ("Yes" minus "No") at `layer` (float64)."""
    path = caa / POLARITY_TENSORS
    if not path.exists():
        raise SteerlensError(f"{path} not found", fix="pass a round-2 study directory whose caa run "
                             "has finished its polarity stage")
    return SteeringVector.load(path).as_resid_pre().at(layer).double()


def project_out(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`v` less its component along `p` (float64)."""
    v, p = v.double(), p.double()
    return v - (v @ p) / (p @ p) * p


def decomposition_vectors(round2: Path, round1: Path, layer: int) -> dict[str, torch.Tensor]:
    """+p, -p and round 1's openness vector with p projected out, each at `layer`."""
    p = polarity_at(round2 / "caa", layer)
    openness = SteeringVector.load(round1 / "caa" / vector_file("openness")).as_resid_pre()
    return {"polarity_plus": p, "polarity_minus": -p,
            "openness_letter_perp": project_out(openness.at(layer), p)}


def write_inputs(round2: Path, round1: Path, layer: int) -> list[Path]:
    """The three `--vector` files (written once: an existing file is kept as it is)."""
    out = round2 / INPUTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{n}.safetensors" for n in NAMES]
    if all(p.exists() for p in paths):
        return paths
    vecs = decomposition_vectors(round2, round1, layer)
    sources = {"polarity_plus": "+p", "polarity_minus": "-p",
               "openness_letter_perp": "round-1 openness vector with p projected out"}
    for name, path in zip(NAMES, paths):
        meta = {"kind": "polarity_decomposition", "component": sources[name],
                "polarity_direction": str(round2 / "caa" / POLARITY_TENSORS),
                "round1": str(round1)}
        if not path.exists():
            SteeringVector(vecs[name].float()[None], [layer], "resid_pre", meta).save(path)
    return paths


def _copy(src: Path, dst: Path) -> bool:
    """Copy atomically unless `dst` exists; True if copied."""
    if dst.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensor(lambda tmp: shutil.copyfile(src, tmp), dst)
    return True


def model_cells(caa: Path) -> list[str]:
    """The round-2 caa run's cells that depend on no audited vector (file names)."""
    return sorted(p.name for p in (caa / CELLS_DIR).glob("*.json") if MODEL_CELL.match(p.name))


def seed(round2: Path) -> int:
    """Copy the model-level files and cells of ROUND2/caa into ROUND2/decomposition (files that
    are there already are kept); returns how many were copied."""
    caa, run = round2 / "caa", round2 / RUN_DIR
    missing = [f for f in MODEL_FILES if not (caa / f).exists()]
    if missing:
        raise SteerlensError(f"{caa} lacks {', '.join(missing)}",
                             fix="run the decomposition after round 2's caa audit has written them")
    n = sum(_copy(caa / f, run / f) for f in MODEL_FILES)
    return n + sum(_copy(caa / CELLS_DIR / c, run / CELLS_DIR / c) for c in model_cells(caa))


def audit_argv(round2: Path, files: list[Path], layer: int, behaviour: str,
               extra: list[str]) -> list[str]:
    """The audit's arguments: library preset, one carrier behaviour, no shuffled nulls, the
    three files at the steering layer, the round-2 run's model."""
    model = read_json(round2 / "caa" / CONFIG_FILE)["config"]["model"]
    return ["--preset", "library", "--model", model, "--layer", str(layer),
            "--behaviours", behaviour, "--n-shuffled", "0", "--vector", *map(str, files),
            "--out", str(round2 / RUN_DIR), "--no-report", "--resume", *extra]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("round2", type=Path, help="the round-2 study directory (its caa run finished)")
    p.add_argument("--round1", type=Path, required=True, help="the round-1 study directory")
    p.add_argument("--behaviour", default=CARRIER, help="the behaviour that carries the preset")
    p.add_argument("--dry-run", action="store_true", help="write and seed, print, do not run")
    args = p.parse_args(argv)
    layer = steering_layer(args.round2 / "caa")
    files = write_inputs(args.round2, args.round1, layer)
    print(f"seeded {seed(args.round2)} model-level files into {args.round2 / RUN_DIR}", flush=True)
    cmd = audit_argv(args.round2, files, layer, args.behaviour, extra)
    print("python -m steerlens.audit " + shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    from steerlens.audit.run import main as audit

    return audit(cmd)


if __name__ == "__main__":
    sys.exit(main())
