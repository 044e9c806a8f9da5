"""The audit CLI end to end on a tiny random model: outputs, resume after kill -9, errors."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import audit_args as _args

from steerlens.audit.run import main
from steerlens.results import verdicts as V


def _cells(run):
    return {p.name: p.read_bytes() for p in sorted((Path(run) / "cells").glob("*.json"))}


def test_cli_end_to_end(finished_run):
    out = finished_run
    for name in ("config.json", "manifest.json", "summary.json", "overlap.json", "report.html",
                 "refusal_direction.safetensors", "refusal_subspace.safetensors", "dose.json",
                 "vectors/sycophancy.safetensors", "settings.json", "refusal.json", "subspace.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    kinds = {r["kind"] for r in summary["rows"]}
    assert {"baseline", "+v", "-v", "+v_perp1", "+v_perpk", "random", "shuffled",
            "refusal_ablated", "subspace_ablated", "refusal_added"} <= kinds  # both nulls by default
    assert {(f["vector"], f["attack"]) for f in summary["vectors"]} == {
        (v, a) for v in ("sycophancy", "refusal") for a in ("none", "refusal_suppression")}
    for f in summary["vectors"]:
        assert f["verdict"] in (*V.RAISES.values(), *V.LOWERS.values(), V.NO_SHIFT,
                                V.NOT_BEYOND_NULL, V.TOO_FEW_NULLS)
    assert summary["design"]["n_goals"] == 4 and summary["benign"]
    screened = [r for r in summary["rows"] if r["kind"] == "random" and not r["generated"]]
    assert len(screened) == 2 * 4  # two attacks x 4 screen-only random directions
    cell = json.loads((out / "cells" / "none__baseline.json").read_text())
    assert len(cell["refusal_score"]) == 4 and len(cell["projection"][0]) >= 1


def test_run_files_are_readable(finished_run):
    for p in finished_run.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_killed_run_resumes_to_identical_results(tiny_model_dir, finished_run, tmp_path):
    """kill -9 mid-grid, then --resume: same files, byte for byte, as the uninterrupted run."""
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "steerlens.audit", *_args(tiny_model_dir, out), "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list((out / "cells").glob("*.json"))) >= 3
    assert main(_args(tiny_model_dir, out, "--resume")) == 0
    assert _cells(out) == _cells(finished_run)
    for name in ("summary.json", "overlap.json", "dose.json", "refusal.json", "subspace.json",
                 "settings.json", "config.json", "refusal_direction.safetensors",
                 "vectors/refusal.safetensors"):
        assert (out / name).read_bytes() == (finished_run / name).read_bytes(), name


def test_fixes_run_after_the_audit_and_timings_keep_earlier_sessions(tiny_model_dir, finished_run,
                                                                   tmp_path, capsys):
    """--fixes: an unknown fix is refused before any model work; on a (resumed) run the fixes
    are RUN/mitigations as `mitigate` writes them; a resume keeps the first session's timings."""
    import shutil

    assert main(_args(tiny_model_dir, tmp_path / "x", "--fixes", "magic")) == 2
    assert "unknown mitigation" in capsys.readouterr().err and not (tmp_path / "x").exists()
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    first = json.loads((run / "timings.json").read_text())
    assert main(_args(tiny_model_dir, run, "--resume", "--no-report", "--fixes", "perp1")) == 0
    m = json.loads((run / "mitigations" / "mitigations.json").read_text())
    assert m["fixes"] == ["perp1"] and {v["vector"] for v in m["vectors"]} == {"sycophancy", "refusal"}
    t = json.loads((run / "timings.json").read_text())
    assert t["earlier_sessions"] == [first] and "fixes" in t["stages"]
    assert _cells(run) == _cells(finished_run)


def test_existing_run_needs_resume(tiny_model_dir, finished_run, capsys):
    assert main(_args(tiny_model_dir, finished_run)) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_with_other_config_is_refused(tiny_model_dir, finished_run, capsys):
    args = _args(tiny_model_dir, finished_run, "--resume")
    args[args.index("--n-goals") + 1] = "2"
    assert main(args) == 2
    assert "different configuration (n_goals)" in capsys.readouterr().err
    assert main(_args(tiny_model_dir, finished_run, "--resume", "--batch-size", "3")) == 2
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--behaviours", "flattery"], "unknown behaviour"),
    (["--attacks", "dan-9000"], "unknown attack"),
    (["--model", "no-such-model"], "unknown model"),
    (["--n-goals", "500"], "--n-goals 500 out of range"),
    (["--vector", "/nonexistent.safetensors"], "not found"),
    (["--judge", "oracle"], "unknown judge"),
    (["--doses", "-1"], "doses must be positive"),
    (["--n-shuffled", "-1"], "--n-shuffled -1 out of range"),
    (["--dose-sweep", "0.1", "inf"], "dose-sweep must be non-zero and finite"),
])
def test_bad_arguments_clear_error(tiny_model_dir, tmp_path, capsys, extra, message):
    args = _args(tiny_model_dir, tmp_path / "x", *extra)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x" / "config.json").exists()


def _timed_main(args):
    t = time.time()
    code = main(args)
    return code, time.time() - t


def test_bad_layer_and_vector_fail_before_any_forward_pass(tiny_model_dir, tmp_path, capsys):
    code, secs = _timed_main(_args(tiny_model_dir, tmp_path / "a", "--layer", "99"))
    assert code == 2 and secs < 30 and "out of range" in capsys.readouterr().err
    bad = tmp_path / "v.safetensors"
    from steerlens.core.vectors import SteeringVector

    SteeringVector(torch.ones(1, 7), [1]).save(bad)  # wrong d_model
    code, secs = _timed_main(_args(tiny_model_dir, tmp_path / "b", "--vector", str(bad), "--layer", "1"))
    assert code == 2 and secs < 30 and "d_model" in capsys.readouterr().err
    assert not (tmp_path / "a" / "config.json").exists() and not (tmp_path / "b").exists()


def test_missing_local_model_directory(tmp_path, capsys):
    assert main(_args(str(tmp_path / "missing" / "dir"), tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert "directory" in err and "not found" in err and "repo" not in err.lower()


def test_unwritable_out_dir(tiny_model_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions
        pytest.skip("running as root: permissions are not enforced")
    assert main(_args(tiny_model_dir, ro / "run")) == 2
    assert "cannot write" in capsys.readouterr().err


def test_measured_steering_layers_apply_only_to_their_models():
    from steerlens.audit.config import build_parser, config_from_args

    cfg = lambda *a: config_from_args(build_parser().parse_args(list(a)))[0]  # noqa: E731
    assert cfg().layer == 14  # the default 0.5B: where its CAA vectors steer
    assert cfg("--model", "qwen2.5-coder-1.5b-instruct").layer == 18
    assert cfg("--model", "/some/other/model").layer is None  # its refusal direction's layer
    assert cfg("--layer", "3").layer == 3
