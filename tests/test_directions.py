import torch

from steerlens.activations import collect_resid
from steerlens.data import load_caa, load_instructions
from steerlens.directions import (
    RefusalDirection,
    SteeringVector,
    caa_rows,
    caa_vector,
    normalize_per_layer,
    select_refusal_direction,
)
from steerlens.prompts import header_ids


def test_caa_vector_equals_naive_pairs(tiny_model):
    """Shared-prefix CAA == two separate full forward passes per item (the original recipe)."""
    items = load_caa("sycophancy")[:4]
    tok = tiny_model.tokenizer
    v = caa_vector(tiny_model, items, [1, 2], "sycophancy", batch_size=3)
    rows, letters = caa_rows(tok, items)
    hdr = header_ids(tok)
    pos = [hdr + r + [letters[i.matching]] for r, i in zip(rows, items)]
    neg = [hdr + r + [letters[i.not_matching]] for r, i in zip(rows, items)]
    a = collect_resid(tiny_model, pos, [1, 2], [-1], desc=None)[:, :, 0]
    b = collect_resid(tiny_model, neg, [1, 2], [-1], desc=None)[:, :, 0]
    assert torch.allclose(v.vectors, (a - b).mean(0), atol=1e-4)


def test_steering_vector_roundtrip(tmp_path):
    v = SteeringVector(torch.randn(3, 8), [2, 4, 6], {"behaviour": "x", "model": "m"})
    v.save(tmp_path / "v.safetensors")
    w = SteeringVector.load(tmp_path / "v.safetensors")
    assert torch.equal(v.vectors, w.vectors) and w.layers == [2, 4, 6]
    assert w.meta["behaviour"] == "x"


def test_normalize_per_layer():
    a = SteeringVector(torch.tensor([[3.0, 4.0]]), [0])
    b = SteeringVector(torch.tensor([[1.0, 0.0]]), [0])
    n = normalize_per_layer({"a": a, "b": b})
    assert torch.allclose(n["a"].vectors.norm(dim=-1), torch.tensor([3.0]))
    assert torch.allclose(n["b"].vectors.norm(dim=-1), torch.tensor([3.0]))
    z = normalize_per_layer({"a": SteeringVector(torch.zeros(1, 2), [0]), "b": b})
    assert torch.isfinite(z["a"].vectors).all() and z["a"].vectors.abs().sum() == 0


def test_refusal_selection_returns_scored_candidates(tiny_model, tmp_path):
    ins = lambda s, n: [x.instruction for x in load_instructions(s)[:n]]  # noqa: E731
    rd = select_refusal_direction(tiny_model, ins("harmful_train", 6), ins("harmless_train", 6),
                                  ins("harmful_val", 3), ins("harmless_val", 3), batch_size=4)
    scored = [c for c in rd.candidates if "ablation_refusal" in c]
    assert scored and all({"kl", "addition_refusal", "passes"} <= set(c) for c in scored)
    assert rd.layer < tiny_model.cfg.n_layers * 0.8
    best = min((c for c in scored if c["passes"]) or scored, key=lambda c: c["ablation_refusal"])
    assert (best["layer"], best["position"]) == (rd.layer, rd.position)
    rd.save(tmp_path / "r.safetensors")
    back = RefusalDirection.load(tmp_path / "r.safetensors")
    assert torch.equal(back.direction, rd.direction) and back.layer == rd.layer
    assert len(back.candidates) == len(rd.candidates)


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
    assert v.layers == [2, 4]  # direction.N is added after block N: resid_pre of N + 1
    assert torch.equal(v.at(2), torch.arange(8, dtype=torch.float32))
    assert v.meta["model_hint"] == "qwen2"
