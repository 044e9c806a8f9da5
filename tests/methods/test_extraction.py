"""Extraction methods over cached pair activations: CAA equality, repeng parity, planted tests."""

import numpy as np
import pytest
import torch

from steerlens.core.geometry import cosine
from steerlens.datasets.behaviours import load_behaviour
from steerlens.errors import SteerlensError
from steerlens.methods.caa import balanced, caa_vector, pair_activations, pair_prompts
from steerlens.methods.extraction import (
    METHODS,
    actadd,
    extract,
    linear_probe,
    mean_centred,
    mean_difference,
    pca_center,
    pca_diff,
)


def _planted(n=120, layers=2, d=24, seed=0, spread=0.0, content=5.0):
    """pos_i = c_i + s_i u + e, neg_i = c_i - s_i u + e': content c_i shared by a pair, a
    planted unit direction u per layer, s_i = 1 (+ `spread` * N(0, 1) from pair to pair)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(layers, d, generator=g), dim=-1)
    size = 1.0 + spread * torch.randn(n, 1, 1, generator=g)
    c = content * torch.randn(n, layers, d, generator=g)
    pos = c + size * u + 0.3 * torch.randn(n, layers, d, generator=g)
    neg = c - size * u + 0.3 * torch.randn(n, layers, d, generator=g)
    return pos, neg, u


def test_mean_difference_equals_the_caa_vector_exactly(tiny_model):
    items = load_behaviour("sycophancy", 4)
    layers = [1, 2, 3]
    v = caa_vector(tiny_model, items, layers, "s", batch_size=4)
    acts = pair_activations(tiny_model, balanced(items), layers, batch_size=4, desc=None)
    assert torch.equal(mean_difference(acts.matching, acts.not_matching), v.vectors)
    sv = extract(acts, layers, "mean_difference", behaviour="s")
    assert torch.equal(sv.vectors, v.vectors) and sv.layers == layers and sv.site == "resid_pre"
    for name, fn in METHODS.items():  # every method: one row per layer, finite, from the same acts
        out = extract(acts, layers, name)
        assert out.vectors.shape == (3, tiny_model.cfg.d_model) and torch.isfinite(out.vectors).all()
        assert torch.equal(out.vectors, fn(acts.matching, acts.not_matching)), name


def _repeng():
    # repeng 0.4.0 annotates with np.float_, which NumPy 2 removed: alias it before import.
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    return pytest.importorskip("repeng")


def test_parity_with_repeng(tiny_model):
    """repeng's own ControlVector.train on the HF model under the tiny model, on the same texts.

    Numbering: repeng's layer l reads `hidden_states[l + 1]`, the output of decoder block l,
    which is steerlens' resid_post of l and resid_pre of l + 1. Its last layer (n - 1) is not
    compared: HF's last hidden state is after the final norm, a point no hook site reads."""
    repeng = _repeng()
    from repeng.extract import DatasetEntry

    hf, tok = tiny_model.original_model, tiny_model.tokenizer
    items = balanced(load_behaviour("corrigible-neutral-HHH", 8))
    texts = pair_prompts(tok, items).texts  # rows 2i / 2i + 1: matching / non-matching
    dataset = [DatasetEntry(texts[i], texts[i + 1]) for i in range(0, len(texts), 2)]
    post = pair_activations(tiny_model, items, [0, 1, 2], site="resid_post", desc=None)
    pre = pair_activations(tiny_model, items, [1, 2, 3], site="resid_pre", desc=None)
    for method, ours in (("pca_diff", pca_diff), ("pca_center", pca_center)):
        ref = repeng.ControlVector.train(hf, tok, dataset, hidden_layers=[0, 1, 2], batch_size=5,
                                         method=method)
        theirs = torch.stack([torch.from_numpy(ref.directions[lay]) for lay in (0, 1, 2)])
        for acts in (post, pre):
            v = ours(acts.matching, acts.not_matching, scale="unit")
            cos = cosine(v, theirs)
            print(method, acts.matching.shape[0], "pairs, 1 - cosine per layer (repeng 0, 1, 2):",
                  [f"{1 - c:.1e}" for c in cos.tolist()])
            assert float(cos.abs().min()) >= 0.999, (method, cos)
            assert torch.allclose(v.norm(dim=-1), torch.ones(3))


def test_pca_matches_sklearn_and_aligns_sign():
    from sklearn.decomposition import PCA

    pos, neg, u = _planted(n=40, spread=0.8)
    for fn, rows in ((pca_diff, lambda k: pos[:, k] - neg[:, k]),
                     (pca_center, lambda k: torch.cat([(pos[:, k] - neg[:, k]) / 2,
                                                       (neg[:, k] - pos[:, k]) / 2]))):
        v = fn(pos, neg, scale="unit")
        for lay in range(2):
            comp = PCA(n_components=1).fit(rows(lay).double().numpy()).components_[0]
            assert abs(float(cosine(v[lay], torch.from_numpy(comp)))) > 1 - 1e-9
        assert (((pos - neg).mean(0) * v).sum(-1) > 0).all()  # positives project higher
        assert float(cosine(v, u).min()) > 0.97  # the planted axis (it varies, so pca_diff sees it)
        caa = fn(pos, neg)  # default scale: the CAA norm
        assert torch.allclose(caa.norm(dim=-1), mean_difference(pos, neg).norm(dim=-1), rtol=1e-5)
        assert torch.allclose(fn(neg, pos, scale="unit"), -v, atol=1e-6)  # swapping labels flips
    with pytest.raises(SteerlensError, match="unknown scale"):
        pca_diff(pos, neg, scale="l2")


def test_pca_diff_is_blind_to_a_constant_difference():
    """sklearn's PCA centres: differences that are all the same vector have no variance left,
    so pca_diff (like repeng's) finds only rounding noise, while pca_center finds the vector."""
    pos, _, u = _planted(n=30)
    neg = pos - 2 * u  # every pair differs by 2u (up to float32 rounding)
    assert float(cosine(pca_diff(pos, neg), u).abs().max()) < 0.5
    assert float(cosine(pca_center(pos, neg), u).min()) > 1 - 1e-9
    assert float(pca_diff(pos, pos).abs().max()) == 0.0  # no variance at all: the zero vector


def test_linear_probe_recovers_a_planted_direction():
    pos, neg, u = _planted(n=400, content=1.0)
    v = linear_probe(pos, neg)
    assert float(cosine(v, u).min()) > 0.95
    assert torch.allclose(v.norm(dim=-1), mean_difference(pos, neg).norm(dim=-1), rtol=1e-5)
    unit_v = linear_probe(pos, neg, scale="unit")
    assert torch.allclose(unit_v.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert (((pos - neg).mean(0) * unit_v).sum(-1) > 0).all()


def test_linear_probe_discounts_a_noisy_axis_that_the_mean_difference_follows():
    """The classes' means also differ along w, an axis of large within-class variance: the
    mean difference points between u and w, the probe (a discriminant) stays near u."""
    pos, neg, u = _planted(n=200, content=1.0, seed=1)
    g = torch.Generator().manual_seed(9)
    w = torch.nn.functional.normalize(torch.randn(2, 24, generator=g), dim=-1)
    w = torch.nn.functional.normalize(w - (w * u).sum(-1, keepdim=True) * u, dim=-1)  # w _|_ u
    pos = pos + (1.0 + 10 * torch.randn(200, 1, 1, generator=g)) * w
    neg = neg + (-1.0 + 10 * torch.randn(200, 1, 1, generator=g)) * w
    assert float(cosine(mean_difference(pos, neg), u).max()) < 0.85
    assert float(cosine(linear_probe(pos, neg), u).min()) > 0.9


def test_mean_centred_recovers_the_planted_offset_from_the_reference():
    """Target activations = the reference distribution's mean mu + planted t: the mean-centred
    vector is t, although mu is far larger; the default reference is the pairs' own mean."""
    g = torch.Generator().manual_seed(0)
    mu = 10 * torch.randn(2, 24, generator=g)
    t = torch.randn(2, 24, generator=g)
    reference = mu + torch.randn(400, 2, 24, generator=g)
    pos = mu + t + 0.5 * torch.randn(200, 2, 24, generator=g)
    neg = mu - t + 0.5 * torch.randn(200, 2, 24, generator=g)
    v = mean_centred(pos, neg, reference)
    assert float(cosine(v, t).min()) > 0.98
    assert float(((v - t).norm(dim=-1) / t.norm(dim=-1)).max()) < 0.2
    assert float(cosine(pos.mean(0), t).abs().max()) < 0.5  # the uncentred mean is mostly mu
    assert torch.allclose(mean_centred(pos, neg), mean_difference(pos, neg) / 2, atol=1e-5)
    with pytest.raises(SteerlensError, match="reference activations"):
        mean_centred(pos, neg, reference[:, :1])


def test_actadd_is_one_pairs_difference():
    pos, neg, _ = _planted(n=5)
    assert torch.equal(actadd(pos, neg), pos[0] - neg[0])
    assert torch.equal(actadd(pos, neg, pair=3), pos[3] - neg[3])
    with pytest.raises(SteerlensError, match="out of range"):
        actadd(pos, neg, pair=5)
    with pytest.raises(SteerlensError, match="must both be"):
        mean_difference(pos, neg[:, :1])


def test_extract_checks_its_arguments(tiny_model):
    acts = pair_activations(tiny_model, load_behaviour("openness", 2), [1, 2], desc=None)
    with pytest.raises(SteerlensError, match="unknown extraction method"):
        extract(acts, [1, 2], "pca")
    with pytest.raises(SteerlensError, match="layers given"):
        extract(acts, [1], "pca_diff")
    sv = extract(acts, [1, 2], "actadd", behaviour="openness", pair=1, balance="letter")
    assert sv.meta == {"kind": "actadd", "behaviour": "openness", "n_pairs": 2, "pair": 1,
                       "balance": "letter", "polarity_counts": {"yes": 1, "no": 1, "other": 0},
                       "polarity_method": "none"}
