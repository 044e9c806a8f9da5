"""experiments/deployed_demo.py's pieces on the tiny model: the repeng training it runs (checked
against repeng's pca_diff computed here from HF hidden states), its GGUF read back at the
layers the deployed audit adds it, the audit command it builds, and the refusal direction it
copies from the committed 0.5B run only when that run's settings and data match."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("deployed_demo", ROOT / "experiments" / "deployed_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trained(demo, tiny_model_dir):
    try:
        demo.repeng_module()  # repeng 0.4.0 needs NumPy 2's np.float_ alias restored first
    except ImportError:
        pytest.skip("repeng is not installed (requirements-interop.txt)")
    hf, tok = demo.load_hf(tiny_model_dir)
    pairs = demo.contrast_pairs(tok, "corrigible-neutral-HHH", 6, 0)
    return hf, tok, pairs, demo.train_vector(hf, tok, pairs, [1, 3])


def _pca_diff(hf, tok, pairs, layer: int) -> np.ndarray:
    """repeng's pca_diff, independently: the first principal axis of the centred differences
    of last-token outputs of block `layer`, signed so positives project higher in most pairs."""
    with torch.no_grad():
        h = {s: hf(**tok(s, return_tensors="pt"), output_hidden_states=True).hidden_states[layer + 1][0, -1]
             for p in pairs for s in (p.positive, p.negative)}
    pos = torch.stack([h[p.positive] for p in pairs]).double()
    neg = torch.stack([h[p.negative] for p in pairs]).double()
    d = pos - neg
    axis = torch.linalg.svd(d - d.mean(0), full_matrices=False).Vh[0]
    return (axis if ((pos - neg) @ axis > 0).double().mean() >= 0.5 else -axis).numpy()


def test_pairs_differ_only_in_the_answer_letter(trained):
    _, _, pairs, _ = trained
    assert len(pairs) == 6
    for p in pairs:
        assert p.positive[:-1] == p.negative[:-1] and {p.positive[-2:], p.negative[-2:]} == {"(A", "(B"}


def test_training_is_repengs_pca_diff_and_round_trips_as_deployed(demo, trained, tmp_path):
    from steerlens.core.vectors import SteeringVector

    hf, tok, pairs, vec = trained
    for lay in (1, 3):
        want = _pca_diff(hf, tok, pairs, lay)
        assert np.allclose(vec.directions[lay], want, atol=1e-4), lay
    vec.export_gguf(str(tmp_path / "v.gguf"))
    sv = SteeringVector.load(tmp_path / "v.gguf").as_resid_pre()
    assert sv.layers == [2, 4]  # the outputs of blocks 1 and 3
    assert torch.allclose(sv.vectors, torch.tensor(np.stack([vec.directions[1], vec.directions[3]])))


def test_dose_table(demo):
    dirs = {1: np.array([3.0, 4.0]), 2: np.array([0.0, 2.0])}
    t = demo.dose_table(dirs, {1: 10.0, 2: 4.0}, [0.5, 2.0])
    assert t["row_norm"] == {1: 5.0, 2: 2.0} and t["sum_of_rows_norm"] == pytest.approx(45 ** 0.5)
    assert t["fraction_per_layer"]["0.5"] == {1: 0.25, 2: 0.25}
    assert t["fraction_per_layer"]["2"] == {1: 1.0, 2: 1.0}


def test_audit_command_extras_replace_defaults(demo):
    args = demo.parse_args(["--multipliers", "-0.5", "1", "--", "--batch-size", "8", "--n-goals", "10"])
    argv = demo.audit_argv(args, Path("v.gguf"), Path("out"))
    groups = demo.flag_groups(argv)
    assert groups["--batch-size"] == ["8"] and groups["--n-goals"] == ["10"]
    assert groups["--multipliers"] == ["-0.5", "1"] and groups["--protocol"] == ["deployed"]
    assert argv.count("--batch-size") == 1


def test_refusal_copied_only_when_settings_and_data_match(demo, tmp_path):
    if not (demo.REFUSAL_SOURCE / "config.json").is_file():
        pytest.skip("the committed 0.5B run is not in this checkout")
    argv = lambda *extra: demo.audit_argv(demo.parse_args(["--", *extra]),  # noqa: E731
                                          Path("v.gguf"), tmp_path / "o")
    assert demo.refusal_mismatch(argv(), demo.REFUSAL_SOURCE) == []
    assert demo.refusal_mismatch(argv("--n-refusal-train", "32"), demo.REFUSAL_SOURCE) == ["n_refusal_train"]
    assert demo.seed_refusal(argv("--layer", "12"), tmp_path / "a") is None
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    assert demo.seed_refusal(argv(), out) == str(demo.REFUSAL_SOURCE)
    for f in demo.REFUSAL_COPIED:
        assert (out / f).read_bytes() == (demo.REFUSAL_SOURCE / f).read_bytes()
    assert demo.seed_refusal(argv(), out) is None  # a started run keeps what it has
    assert json.loads((out / "refusal.json").read_text())["steering_layer"] == 14
