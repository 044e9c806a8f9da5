"""The audit CLI end to end on a tiny random model: outputs, resume after kill -9, determinism."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import audit_args as _args

from steerlens.audit import main


def _cells(run):
    return {p.name: p.read_bytes() for p in sorted((Path(run) / "cells").glob("*.json"))}


def test_cli_end_to_end(finished_run):
    out = finished_run
    for name in ("config.json", "manifest.json", "summary.json", "overlap.json", "report.html",
                 "refusal_direction.safetensors", "refusal_subspace.safetensors",
                 "vectors/sycophancy.raw.safetensors", "behaviour_effect.json", "screen.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    settings = {r["setting"] for r in summary["rows"]}
    for kind in ("+", "-", "+perp1", "+perpk", "+random"):
        assert f"sycophancy@2{kind}" in settings
    assert "baseline" in settings and summary["benign"]
    html = (out / "report.html").read_text()
    assert "plotly" in html.lower() and "<script src=\"http" not in html


def test_killed_run_resumes_to_identical_results(tiny_model_dir, finished_run, tmp_path):
    """kill -9 mid-grid, then --resume: same files, byte for byte, as the uninterrupted run."""
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "steerlens.audit", *_args(tiny_model_dir, out), "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ})
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list((out / "cells").glob("*.json")))
    assert n_before >= 3
    assert main(_args(tiny_model_dir, out, "--resume")) == 0
    assert _cells(out) == _cells(finished_run)
    for name in ("summary.json", "overlap.json", "screen.json", "behaviour_effect.json",
                 "refusal_candidates.json", "settings.json"):
        assert (out / name).read_bytes() == (finished_run / name).read_bytes(), name
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((finished_run / "summary.json").read_text())
    assert a == b


def test_existing_run_needs_resume(tiny_model_dir, finished_run, capsys):
    assert main(_args(tiny_model_dir, finished_run)) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_with_other_config_is_refused(tiny_model_dir, finished_run, capsys):
    args = _args(tiny_model_dir, finished_run, "--resume")
    args[args.index("--n-goals") + 1] = "2"
    assert main(args) == 2
    assert "different configuration (n_goals)" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--behaviours", "flattery"], "unknown behaviour"),
    (["--attacks", "dan-9000"], "unknown attack"),
    (["--model", "no-such-model"], "unknown model"),
    (["--n-goals", "500"], "--n-goals 500 out of range"),
    (["--vector", "/nonexistent.safetensors"], "not found"),
    (["--layer", "99"], "out of range"),
])
def test_bad_arguments_clear_error(tiny_model_dir, tmp_path, capsys, extra, message):
    args = _args(tiny_model_dir, tmp_path / "x") + extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_out_dir(tiny_model_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions
        pytest.skip("running as root: permissions are not enforced")
    assert main(_args(tiny_model_dir, ro / "run")) == 2
    assert "cannot write" in capsys.readouterr().err
