"""Device hygiene: tensors in the hot paths are made on the model's device, none move to the
host inside the generation loop except the token ids the judge needs, and geometry stays
float64 whatever the model dtype."""

import ast
import re
from pathlib import Path

import torch

from steerlens.core.geometry import cosine, orthogonalize

PKG = Path(__file__).parent.parent / "steerlens"
HOT = ["core/activations.py", "core/generation.py", "core/kvcache.py", "core/steering.py"]
CTORS = re.compile(r"torch\.(tensor|full|ones|zeros|arange|empty|randn|rand)\(")


def _calls(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.get_source_segment(path.read_text(), node) or ""


def test_tensor_constructors_name_a_device():
    for name in HOT:
        for node, src in _calls(PKG / name):
            if CTORS.match(src):
                kws = {k.arg for k in node.keywords}
                assert "device" in kws, f"{name}:{node.lineno}: {src[:60]}"


def test_decode_loop_has_one_host_transfer():
    src = (PKG / "core" / "generation.py").read_text()
    body = src[src.index("    def decode("): src.index("    def _advance(")]
    for bad in (".cpu()", ".numpy()", ".item()", "int(nxt"):
        assert bad not in body, bad
    assert body.count(".tolist()") == 1


def test_geometry_in_float64_for_bf16_vectors():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(512, generator=g).to(torch.bfloat16)
    r = torch.randn(512, generator=g).to(torch.bfloat16)
    assert cosine(v, r).dtype == torch.float64
    exact = torch.nn.functional.cosine_similarity(v.double(), r.double(), dim=0)
    assert abs(float(cosine(v, r)) - float(exact)) < 1e-12
    out = orthogonalize(v.float(), r)
    assert abs(float(cosine(out, r))) < 1e-6
