"""The Ray backend on a local cluster gives the same cells as the local backend."""

import os
from pathlib import Path

import pytest
from conftest import audit_args

from steerlens.audit.run import main

ray = pytest.importorskip("ray")


def test_ray_backend_equals_local(tiny_model_dir, finished_run, tmp_path):
    out = tmp_path / "ray"
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(audit_args(tiny_model_dir, out, "--backend", "ray", "--no-report")) == 0
    finally:
        ray.shutdown()
    cells = sorted((out / "cells").glob("*.json"))
    local = sorted((Path(finished_run) / "cells").glob("*.json"))
    assert [p.name for p in cells] == [p.name for p in local]
    for a, b in zip(cells, local):
        assert a.read_bytes() == b.read_bytes(), a.name
