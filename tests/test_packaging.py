"""The wheel is a whole steerlens: built from the checkout, installed in a fresh venv outside
it, its `steerlens` command runs and its datasets and judge weights load from the wheel."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True)
    (path,) = out.glob("steerlens-*.whl")
    return path


def test_wheel_holds_data_licences_and_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("steerlens/_data/jbb_behaviors/harmful-behaviors.csv",
                 "steerlens/_data/jbb_behaviors/LICENSE", "steerlens/_data/caa/SOURCE.md",
                 "steerlens/_data/harm_labels/labels.jsonl",
                 "steerlens/judges/weights/probe.safetensors", "steerlens/core/compat.py"):
        assert need in names, need


def test_wheel_runs_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    target = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    # dependencies come from this environment (a plain path entry: its .pth files, the
    # editable steerlens among them, are not run); steerlens itself only from the wheel
    deps = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    Path(target, "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True)
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("STEERLENS_DATA", None)
    run = dict(cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    helptext = subprocess.run([venv / "bin" / "steerlens", "audit", "--help"], **run).stdout
    assert "--preset" in helptext and "refusal_string" in helptext
    code = ("import steerlens, steerlens.datasets.loaders as L; "
            "print(steerlens.__file__); print(L.data_dir()); print(len(L.load_jbb('harmful')))")
    out = subprocess.run([py, "-c", code], **run).stdout.split()
    assert out[0].startswith(target) and out[1].startswith(target), out
    assert out[2] == "100"
