"""SteeringVector files: steerlens format, per-layer files, GGUF control vectors; layer mapping."""

import torch

from steerlens.core.vectors import SteeringVector


def test_roundtrip_keeps_site_and_meta(tmp_path):
    v = SteeringVector(torch.randn(3, 8), [2, 4, 6], "resid_post", {"behaviour": "x"})
    v.save(tmp_path / "v.safetensors")
    w = SteeringVector.load(tmp_path / "v.safetensors")
    assert torch.equal(v.vectors, w.vectors) and w.layers == [2, 4, 6]
    assert w.site == "resid_post" and w.meta["behaviour"] == "x"


def test_per_layer_file_reads_as_decoder_block_outputs(tmp_path):
    """steering-vectors / CAA add at the output of decoder layer l: resid_post of l."""
    from safetensors.torch import save_file

    save_file({"layer.3": torch.ones(8), "5": torch.zeros(8) + 2}, str(tmp_path / "p.safetensors"))
    v = SteeringVector.load(tmp_path / "p.safetensors")
    assert v.layers == [3, 5] and v.site == "resid_post"
    pre = v.as_resid_pre()
    assert pre.layers == [4, 6] and pre.site == "resid_pre"
    assert torch.equal(pre.at(4), torch.ones(8))
    assert SteeringVector.load(tmp_path / "p.safetensors", site="resid_pre").layers == [3, 5]


def test_gguf_control_vector(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "cv.gguf"
    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "qwen2")
    w.add_uint32("controlvector.layer_count", 2)
    w.add_tensor("direction.3", np.full(8, 2.0, dtype=np.float32))
    w.add_tensor("direction.1", np.arange(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    v = SteeringVector.load(path)
    assert v.layers == [1, 3] and v.site == "resid_post"  # llama.cpp: output of block N
    assert v.as_resid_pre().layers == [2, 4]
    assert torch.equal(v.at(1), torch.arange(8, dtype=torch.float32))
    assert v.meta["model_hint"] == "qwen2"
