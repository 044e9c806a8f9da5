"""`steerlens export RUN --vector NAME --fix FIX --format gguf|steering-vectors|svec --out FILE`:
a finished run's vector, raw or repaired, in the file format of the library it is deployed with.

The file holds exactly what the run's setting `NAME@DOSE{+v, +v_perp1, ...}` added, per layer:
the dose (× the run's dose scale, the residual norm in the `resid` unit) is baked in, so the
library's default application (coefficient 1: repeng `set_control(v, 1.0)`, llama.cpp
`--control-vector`, steering-vectors `apply(model, multiplier=1.0)`, IBM `steer(...,
behavior_vector_strength=1.0, behavior_layer_ids=<the file's layers>)`) adds the same vectors.
Positions differ: the audit's CAA protocol steers from the end of the user's message on, a
library's default adds at every position (prompt included); with coefficient 1 the vectors are
the run's, the positions the library's (steering-vectors' `min_token_index` restores the
audit's positions on one prompt's forward pass; cached decoding slices each call, so not in
generation). Static fixes only: raw, perp1, perpk, compensate (+v plus
the calibrated corrections at later layers), learned. A gate is not a vector (it decides per
prompt whether to steer), nor is a clamp (clamp1/clampk: it needs the unsteered twin at run
time); both are refused with what to deploy instead. Nothing is recomputed:
every fix is read from the run's files (`RUN/mitigations/` for compensate and learned, or the
mitigation run named by `--mitigations mitigations-NAME`, written by `mitigate --into`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from steerlens._version import __version__
from steerlens.audit.artefacts import Refusal
from steerlens.audit.config import AuditConfig
from steerlens.audit.deployed import is_deployed
from steerlens.audit.settings import dosed
from steerlens.core.geometry import orthogonalize, orthogonalize_subspace, unit
from steerlens.core.tensorfile import load_tensors
from steerlens.core.vector_files import FORMATS, SUFFIXES, write_vector_file
from steerlens.core.vectors import SteeringVector
from steerlens.errors import SteerlensError, cli_main
from steerlens.methods.subspace import RefusalSubspace
from steerlens.rundir import open_run, read_json
from steerlens.schema import (
    CONFIG_FILE,
    DOSE_FILE,
    MANIFEST_FILE,
    MITIGATIONS_DIR,
    MITIGATIONS_FILE,
    REFUSAL_TENSORS,
    SUBSPACE_TENSORS,
    SUMMARY_FILE,
    compensation_file,
    learned_file,
    vector_file,
)

STATIC_FIXES = ("raw", "perp1", "perpk", "compensate", "learned")
SETTING_SUFFIX = {"raw": "+v", "perp1": "+v_perp1", "perpk": "+v_perpk", "compensate": "+v_comp",
                  "learned": "+v_learned"}
NOT_STATIC = {
    "gate": ("the gate is not a vector: it decides per prompt (CAST's condition on the prompt's "
             "activations) whether to steer at all, which no static file can express",
             "deploy the gate with IBM activation-steering's conditional steering "
             "(MalleableModel.steer with condition_vector, threshold and comparator from "
             "RUN/mitigations/condition.safetensors), or export a static fix: "
             + ", ".join(STATIC_FIXES)),
    **{c: (f"{c} is not a static vector: it holds the refusal {w} component at an unsteered "
           "twin's, which it needs at run time (each row decoded beside its twin: twice the "
           "rows per step)",
           "deploy the static orthogonalised vector instead (--fix "
           f"{'perp1' if c == 'clamp1' else 'perpk'}), or run the clamp through steerlens "
           "(steerlens.core.patching.TwinClamp with steerlens.core.patching.twinned_cell)")
       for c, w in (("clamp1", "direction's"), ("clampk", "subspace's"))},
}


@dataclass
class RunGeometry:
    """What every fix of a finished run is made from, read from its files (no model)."""

    run: Path
    cfg: object  # AuditConfig
    ref: object  # Refusal
    sub: object  # RefusalSubspace
    scale: float
    n_layers: int
    config_hash: str
    mitigations: str = MITIGATIONS_DIR  # which mitigation run the fixes come from (mitigate --into)


def load_geometry(run: str | Path) -> RunGeometry:
    """The run's config, refusal geometry and dose scale (read-only; a one-line error when
    it is not a finished run)."""
    store = open_run(run, (CONFIG_FILE, DOSE_FILE, MANIFEST_FILE, REFUSAL_TENSORS,
                           SUBSPACE_TENSORS, SUMMARY_FILE))
    saved = store.read_json(CONFIG_FILE)
    return RunGeometry(store.root, AuditConfig.from_json(saved["config"]),
                       store.load(REFUSAL_TENSORS, Refusal),
                       store.load(SUBSPACE_TENSORS, RefusalSubspace),
                       float(store.read_json(DOSE_FILE)["scale"]),
                       int(store.read_json(MANIFEST_FILE)["n_layers"]), saved["hash"])


def run_vector(g: RunGeometry, name: str) -> SteeringVector:
    """The audited vector `name` (resid_pre numbering) as the run read it."""
    known = list(read_json(g.run / DOSE_FILE)["vectors"])
    if name not in known:
        raise SteerlensError(f"the run audited no vector {name!r}", fix=f"use one of: {', '.join(known)}")
    for p in g.cfg.vectors:
        if name == f"file:{Path(p).stem}":
            if not Path(p).is_file():
                raise SteerlensError(f"the run's vector file {p} is gone", fix="restore it")
            return SteeringVector.load(p).as_resid_pre()
    b, _, m = name.partition(":")
    return SteeringVector.load(g.run / vector_file(b, m or "mean_difference"))


def _dose(g: RunGeometry, dose: float | None) -> float:
    doses = list(g.cfg.doses)
    if dose is None and len(doses) == 1:
        return doses[0]
    if dose is None or dose not in doses:
        raise SteerlensError(f"--dose {dose}: the run's fixes are at doses {doses}",
                             fix="pass --dose with one of them")
    return dose


def _mitigation_file(g: RunGeometry, rel: str, fix: str) -> Path:
    path = g.run / g.mitigations / rel
    if not path.exists():
        into = "" if g.mitigations == MITIGATIONS_DIR else f" --into {g.mitigations}"
        raise SteerlensError(f"the run has no {fix} fix ({path} is missing)",
                             fix=f"compute it: python -m steerlens.audit.mitigate {g.run} "
                                 f"--mitigations {fix}{into}; or export from the mitigation run "
                                 "that has it (export --mitigations mitigations-NAME)")
    return path


def check_fix(fix: str) -> None:
    """A fix that is not a static vector, or no fix at all, is refused before any reading."""
    if fix in NOT_STATIC:
        why, what = NOT_STATIC[fix]
        raise SteerlensError(f"--fix {fix} cannot be exported: {why}", fix=what)
    if fix not in STATIC_FIXES:
        raise SteerlensError(f"unknown fix {fix!r}", fix=f"export one of: {', '.join(STATIC_FIXES)}")


def fix_rows(g: RunGeometry, name: str, fix: str, dose: float) -> dict[int, torch.Tensor]:
    """{resid_pre layer: vector} the run's setting `name@dose` + fix adds (float32), exactly as
    `audit.stages.build_settings` and `audit.mitigate` build them."""
    check_fix(fix)
    L, rd, tag = g.ref.layer, g.ref.direction, f"{name}@{dose:g}"
    v = dosed(run_vector(g, name).at(L), dose, g.scale)
    if fix == "perp1":
        return {L: orthogonalize(v, rd.at(L))}
    if fix == "perpk":
        return {L: orthogonalize_subspace(v, g.sub.basis[: g.sub.evidence["k"]])}
    if fix == "compensate":
        rec = read_json(_mitigation_file(g, compensation_file(tag), fix))
        return {L: v, **{k: m * unit(rd.at(k)).float()
                         for k, m in zip(rec["layers"], rec["multipliers"])}}
    if fix == "learned":
        u = load_tensors(_mitigation_file(g, learned_file(tag), fix))[0]["direction"].to(v)
        return {L: v - (v @ u) * u}
    return {L: v}


def measured_verdict(g: RunGeometry, name: str, dose: float, fix: str) -> dict | None:
    """The fix's verdicts per attack and outcome (mitigations.json; the raw vector's from
    summary.json), None when the run has not measured it."""
    tag = f"{name}@{dose:g}"
    m = g.run / g.mitigations / MITIGATIONS_FILE
    if fix != "raw" and m.exists():
        rec = read_json(m)
        same = (rec.get("same_as") or {}).get(fix)  # k = 1: ⊥k is ⊥1, tested under ⊥1's name
        for v in (v for v in rec["vectors"] if v["tag"] == tag):
            for f in (f for f in v["fixes"] if f["fix"] == (same or fix)):
                return {"source": f"{g.mitigations}/{MITIGATIONS_FILE}",
                        **({"tested_as": same} if same else {}),
                        "by_attack": {a: {o: r["verdict"] for o, r in by.items()}
                                      for a, by in f["outcomes"].items()},
                        "behaviour_kept": (f.get("behaviour_kept") or {}).get("verdict")}
    if fix == "raw":
        found = [f for f in read_json(g.run / SUMMARY_FILE)["vectors"]
                 if f["vector"] == name and f["dose"] == dose]
        return {"source": SUMMARY_FILE, "by_attack": {
            f["attack"]: {"nonrefusal": f.get("verdict"), "harm": f.get("verdict_harm")}
            for f in found}} if found else None
    return None


def provenance(g: RunGeometry, name: str, fix: str, dose: float, layers: list[int]) -> dict:
    return {"written_by": f"steerlens {__version__} export", "run": str(g.run),
            "config_hash": g.config_hash, "model": g.cfg.model, "vector": name, "fix": fix,
            "setting": f"{name}@{dose:g}{SETTING_SUFFIX[fix]}", "dose": dose,
            "dose_unit": g.cfg.dose_unit, "dose_scale": g.scale,
            "layers_resid_pre": layers, "operation": "add", "mitigation_run": g.mitigations,
            "hooks": [f"blocks.{lay}.hook_resid_pre" for lay in layers],
            "coefficient": 1.0,
            "units": "dose x dose_scale baked in: coefficient 1 adds the run's vectors",
            "positions": "the run steered from the end of the user's message on; the library "
                         "adds at the positions it uses (by default every position)",
            "verdict": measured_verdict(g, name, dose, fix)}


def export(run: str | Path, name: str, fix: str, fmt: str, out: str | Path,
           dose: float | None = None, mitigations: str = MITIGATIONS_DIR) -> dict:
    """Write the run's `name` with `fix` (from the mitigation run `RUN/mitigations`) to `out`
    in `fmt`; returns what was written."""
    if fmt not in FORMATS:
        raise SteerlensError(f"unknown format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    check_fix(fix)
    from steerlens.audit.mitigate import check_into

    check_into(mitigations)
    g = replace(load_geometry(run), mitigations=mitigations)
    if mitigations != MITIGATIONS_DIR and not (g.run / mitigations).is_dir():
        raise SteerlensError(f"--mitigations {mitigations}: the run has no such mitigation run",
                             fix=f"pass one the run has ({g.run}/mitigations-*), or write it with "
                                 f"mitigate RUN --into {mitigations}")
    if is_deployed(g.cfg, name):
        raise SteerlensError(f"{name} was audited as deployed (every layer, the library's "
                             "coefficients): the run's settings are its own file times a "
                             "coefficient, and its fixes are computed at one layer only",
                             fix="deploy the file itself at the coefficient the audit cleared, or "
                                 "audit it under --protocol caa and export that run's fixes")
    dose = _dose(g, dose)
    rows = fix_rows(g, name, fix, dose)
    layers = sorted(rows)
    sv = SteeringVector(torch.stack([rows[k].float() for k in layers]), layers, "resid_pre")
    prov = provenance(g, name, fix, dose, layers)
    lib = write_vector_file(sv, out, fmt, {**prov, "format": fmt}, g.n_layers, g.cfg.model)
    return {**prov, "out": str(out), "format": fmt, "library_layers": lib}


def format_export(r: dict) -> str:
    how = {"gguf": "repeng ControlModel.set_control(ControlVector.import_gguf(FILE), 1.0) or "
                   "llama.cpp --control-vector FILE (direction.N: output of block N)",
           "steering-vectors": "steering_vectors.SteeringVector({int(k): v for k, v in "
                               "load_file(FILE).items()}, 'decoder_block').apply(model)",
           "svec": "activation_steering SteeringVector.load(FILE); MalleableModel.steer(v, "
                   f"behavior_layer_ids={r['library_layers']}, behavior_vector_strength=1.0)"}
    lines = [f"wrote {r['out']}: {r['setting']} as {r['format']}, layers {r['library_layers']} "
             f"in the library's numbering (resid_pre {r['layers_resid_pre']})",
             f"apply with coefficient 1: {how[r['format']]}"]
    if r["format"] == "gguf" and 0 in r["library_layers"]:
        lines.append("note: llama.cpp rejects direction.0 (its layer indices start at 1); repeng accepts it")
    v = r.get("verdict")
    lines.append("measured verdict: " + ("; ".join(
        f"{a}: " + ", ".join(f"{o} {x}" for o, x in by.items() if x) for a, by in v["by_attack"].items())
        if v else "none in the run (python -m steerlens.audit.mitigate RUN)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="steerlens export", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished audit run directory")
    p.add_argument("--vector", required=True, help="the audited vector's name (as in the answer)")
    p.add_argument("--fix", default="raw", help=f"one of {', '.join(STATIC_FIXES)} (default raw)")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, help="the file to write (" + ", ".join(
        f"{k}: {v}" for k, v in SUFFIXES.items()) + ")")
    p.add_argument("--dose", type=float, default=None, help="the audited dose (default: the run's only one)")
    p.add_argument("--mitigations", default=MITIGATIONS_DIR, metavar="DIR",
                   help=f"the mitigation run the fix comes from (default {MITIGATIONS_DIR}; "
                        f"{MITIGATIONS_DIR}-NAME: one written by mitigate --into)")
    a = p.parse_args(argv)
    return cli_main(lambda: export(a.run, a.vector, a.fix, a.fmt, a.out, a.dose, a.mitigations),
                    format_export)


if __name__ == "__main__":
    sys.exit(main())
