"""Bad inputs give clear errors (docs/errors.md lists them); disk failures lose nothing; no pickle."""

import errno
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import audit_args, cached_model_dir

from steerlens.audit.run import main
from steerlens.core import models
from steerlens.core.vectors import SteeringVector
from steerlens.errors import ModelError, SteerlensError
from steerlens.rundir import atomic_write_text, write_json

ROOT = Path(__file__).parent.parent


def test_simulated_full_disk_keeps_old_file_and_names_fix(tmp_path, monkeypatch):
    target = tmp_path / "cell.json"
    write_json(target, {"done": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(SteerlensError, match="No space left on device") as e:
        write_json(target, {"done": 2})
    assert "writable --out" in str(e.value)
    assert target.read_text().strip().endswith("}") and '"done": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["cell.json"], "no temporary file left"


def test_out_dir_that_cannot_exist(tiny_model_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(audit_args(tiny_model_dir, blocker / "run")) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_atomic_write_to_unwritable_path(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(SteerlensError, match="cannot write"):
        atomic_write_text(blocker / "sub" / "a.json", "{}")


def test_corrupt_cached_model_names_the_fix(tmp_path, monkeypatch):
    key = "smollm2-135m-instruct"
    d = cached_model_dir(tmp_path, monkeypatch, '{"model_type": "llama"}', key)
    (d / "model.safetensors").write_bytes(b"\x00" * 10)
    (d / models._MARKER).write_text(models.EMBEDDED[key].sha256)
    with pytest.raises(ModelError, match="corrupt") as e:
        models.load_model(key, device="cpu")
    assert "delete" in str(e.value)


@pytest.mark.parametrize("make,message", [
    (lambda d: torch.randn(2, d + 3), "has d_model"),
    (lambda d: torch.full((2, d), float("nan")), "NaN"),
])
def test_bad_vector_files(tiny_model_dir, tiny_model, tmp_path, capsys, make, message):
    vec = tmp_path / "v.safetensors"
    if message == "NaN":
        from safetensors.torch import save_file
        save_file({"vectors": make(tiny_model.cfg.d_model)}, str(vec))
    else:
        SteeringVector(make(tiny_model.cfg.d_model), [0, 1]).save(vec)
    args = audit_args(tiny_model_dir, tmp_path / "run", "--vector", str(vec), "--layer", "1")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_pickle_or_unsafe_torch_load():
    pat = re.compile(r"\bimport pickle\b|\bpickle\.|torch\.load\(|weights_only\s*=\s*False")
    for path in [p for d in ("steerlens", "benchmarks", "experiments") for p in (ROOT / d).rglob("*.py")]:
        assert not pat.search(path.read_text()), path


def test_error_table_covers_every_case():
    table = (ROOT / "docs" / "errors.md").read_text()
    for case in ("missing embedded package", "sha256 mismatch", "corrupt cache",
                 "malformed dataset", "unknown behaviour", "unknown attack", "unknown model",
                 "layer out of range", "wrong d_model", "zero", "NaN", "empty prompt set",
                 "placeholder", "unwritable", "full disk", "broken KV-cache path"):
        assert case.lower() in table.lower(), case
