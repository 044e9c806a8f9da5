"""The audit warns, before any model work, when its nulls cannot give a verdict."""

from steerlens.audit.config import audit_options
from steerlens.audit.validation import MIN_NULL_CELLS, null_warnings


def test_presets_generate_enough_nulls_for_caa_vectors():
    for preset in ("quick", "standard", "library", "paper"):
        cfg, _ = audit_options(preset, "runs/x")
        assert null_warnings(cfg) == [], preset


def test_a_file_vector_under_the_quick_preset_is_warned_with_the_fix(tmp_path):
    f = tmp_path / "v.gguf"
    f.write_bytes(b"")
    cfg, _ = audit_options("quick", tmp_path / "run", vectors=[str(f)])
    (line,) = null_warnings(cfg)
    assert "--vector files get 14" in line and f"--n-null-generate {MIN_NULL_CELLS}" in line
    cfg, _ = audit_options("quick", tmp_path / "run", vectors=[str(f)], n_null_generate=MIN_NULL_CELLS)
    assert null_warnings(cfg) == []


def test_too_few_shuffled_and_random_nulls_are_warned():
    cfg, _ = audit_options("quick", "runs/x", n_null_generate=2, n_shuffled=1)
    (line,) = null_warnings(cfg)
    assert "CAA vectors get 3" in line and "--n-null-generate 19" in line


def test_covariance_and_pair_nulls_count(tmp_path):
    f = tmp_path / "v.gguf"
    f.write_bytes(b"")
    cfg, _ = audit_options("library", tmp_path / "run", vectors=[str(f)], n_shuffled=0)
    assert null_warnings(cfg) == []  # 8 random + 8 covariance + 8 prompt-pair = 24
