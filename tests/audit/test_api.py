"""The Python API: `steerlens.audit(...)` is the CLI's run; the package face is lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import audit_args

import steerlens
from steerlens.errors import SteerlensError


def test_audit_call_equals_the_cli_run(tiny_model_dir, finished_run, tmp_path):
    from steerlens.audit.config import build_parser

    args = vars(build_parser().parse_args(audit_args(tiny_model_dir, "unused")))
    overrides = {k: v for k, v in args.items() if k not in ("preset", "out")}
    res = steerlens.audit(preset=args["preset"], out=tmp_path / "api", **overrides)
    assert isinstance(res, steerlens.AuditResult) and res.report.is_file()
    assert res.config["hash"] == steerlens.load_run(finished_run).config["hash"]
    cli_cells = sorted((finished_run / "cells").glob("*.json"))
    assert cli_cells
    for cell in cli_cells:
        assert (res.out / "cells" / cell.name).read_bytes() == cell.read_bytes(), cell.name
    assert "vector" in res.answer()


def test_unknown_option_is_a_clear_error(tmp_path):
    with pytest.raises(SteerlensError, match="n_goal"):
        steerlens.audit(out=tmp_path / "x", n_goal=3)


def test_load_run_needs_a_finished_run(tmp_path):
    with pytest.raises(SteerlensError, match="not a finished audit run"):
        steerlens.load_run(tmp_path)


def test_package_face_is_lazy():
    code = ("import sys, steerlens; assert 'torch' not in sys.modules; "
            "assert callable(steerlens.audit); steerlens.cosine; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_dispatches(capsys):
    from steerlens.cli import main

    with pytest.raises(SystemExit) as e:
        main(["audit", "--help"])
    assert e.value.code == 0 and "--preset" in capsys.readouterr().out
    assert main(["report", "/nonexistent"]) == 2


def test_load_run_picks_up_harm_labels_added_after_the_run():
    """A committed run judged for harm after its summary was written: load_run's summary has
    both outcomes and its answer names the harm judge; the run's files are not touched."""
    from pathlib import Path

    run = Path(__file__).resolve().parents[2] / "results" / "findings-0.5b-resid"
    before = (run / "summary.json").read_bytes()
    res = steerlens.load_run(run)
    assert res.summary["design"]["outcomes"] == ["nonrefusal", "harm"]
    assert "harm judge: harm" in res.answer()
    assert (run / "summary.json").read_bytes() == before
