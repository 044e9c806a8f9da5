"""Each notebook runs top to bottom (nbclient) on a small audit run of the tiny model."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    assert len(NOTEBOOKS) == 4
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, finished_run, monkeypatch):
    monkeypatch.setenv("STEERLENS_RUN", str(finished_run))
    monkeypatch.setenv("STEERLENS_NB_N", "3")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) or
               "text/html" in o.get("data", {}) for o in outputs), "no figure was shown"
    # The notebook read the given run (not a fresh one): its vectors appear in the outputs.
    vectors = json.loads((Path(finished_run) / "overlap.json").read_text())
    text = json.dumps([o for o in outputs if o.output_type != "display_data"])
    assert any(v in text for v in vectors), "the run's vectors do not appear in the outputs"
    assert not (path.parent / "runs").exists()
