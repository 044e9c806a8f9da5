"""Directional activation patching (core.patching) and the mediated share (methods.mediation)
on the tiny random model: exactness checks against independent paths, and planted models in
which a vector acts only through a known direction (share 1) or bypasses it (share 0)."""

import numpy as np
import pytest
import torch

from steerlens.core.generation import next_token_logits, refusal_log_odds
from steerlens.core.geometry import orthogonalize, unit
from steerlens.core.patching import Arm, ComponentReader, HeldComponent, TailPatcher
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import Steering, addition
from steerlens.datasets.loaders import load_jbb
from steerlens.errors import SteerlensError
from steerlens.methods.mediation import (
    layer_bands,
    mediated_share,
    mediation_scores,
    per_layer_bases,
    shares,
    stack_bases,
)
from steerlens.methods.refusal import refusal_token_ids

L = 1  # steering layer of the 4-layer tiny model
J = 5  # the planted direction: residual coordinate J


@pytest.fixture(scope="module")
def prompts(tiny_model):
    return chat_prompts(tiny_model.tokenizer, [b.goal for b in load_jbb("harmful")[:12]])


def _vec(seed: int, norm: float = 6.0) -> torch.Tensor:
    from conftest import seeded_vector

    return seeded_vector(seed, norm)


def _score(model):
    ids = refusal_token_ids(model.tokenizer)
    return lambda logits: refusal_log_odds(logits, ids)


def test_holding_the_rows_own_component_is_a_no_op(tiny_model, prompts):
    """Read the steered run's component at layers 1-3, hold it at that value: same logits,
    bit for bit."""
    full = torch.tensor([prompts.full(0)])
    steer = addition(_vec(0), L, positions="all")
    bases = torch.stack([torch.linalg.qr(torch.randn(64, 3))[0].T for _ in range(3)])
    reader = ComponentReader([1, 2, 3], bases)
    plain = tiny_model.run_with_hooks(full, fwd_hooks=steer.hooks(None) + reader.hooks(None))
    own = reader.stacked()
    held = HeldComponent([1, 2, 3], bases[None], own)
    again = tiny_model.run_with_hooks(full, fwd_hooks=steer.hooks(None) + held.hooks(None))
    assert torch.equal(plain, again)
    moved = HeldComponent([1, 2, 3], bases[None], own + 1.0)
    assert not torch.allclose(plain, tiny_model.run_with_hooks(
        full, fwd_hooks=steer.hooks(None) + moved.hooks(None)))


def test_full_basis_reproduces_the_baseline_and_one_direction_at_the_steering_layer_is_perp1(
        tiny_model, prompts):
    """Holding all of R^d at the baseline from the steering layer on (or from the next layer
    on: the tail's keys and values are held too) gives the unsteered logits; holding r at the
    steering layer alone is +v orthogonalised against r (computed by the plain path)."""
    v, r = _vec(1), _vec(2, 1.0)
    layers = [1, 2, 3]
    bases = torch.stack([torch.cat([unit(r).float()[None], torch.eye(64)]) for _ in layers])
    tp = TailPatcher(tiny_model, prompts, layers, bases, lambda x: x, batch_size=5)
    st = addition(v, L)
    got = tp.run([Arm(st), Arm(st, tuple(range(1, 65)), frozenset(layers)),
                  Arm(st, tuple(range(1, 65)), frozenset([2, 3])), Arm(st, (0,), frozenset([1])),
                  Arm(Steering(), (0,), frozenset(layers))])
    base = next_token_logits(tiny_model, prompts)
    steered = next_token_logits(tiny_model, prompts, st)
    assert (steered - base).abs().max() > 1.0
    torch.testing.assert_close(tp.baseline, base, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[0], steered, atol=1e-5, rtol=0)
    for i in (1, 2, 4):
        torch.testing.assert_close(got[i], base, atol=1e-5, rtol=0)
    perp = next_token_logits(tiny_model, prompts, addition(orthogonalize(v, r), L))
    torch.testing.assert_close(got[3], perp, atol=1e-5, rtol=0)


def test_stacked_arms_equal_each_arm_alone(tiny_model, prompts):
    layers = [1, 2, 3]
    bases = per_layer_bases({0: _vec(3), 2: _vec(4)}, layers, extra=_vec(5)[None])
    tp = TailPatcher(tiny_model, prompts, layers, bases, _score(tiny_model), batch_size=5)
    arms = [Arm(addition(_vec(6), L), (0, 1), frozenset([2, 3])), Arm(addition(_vec(7), L)),
            Arm(addition(_vec(8), L), (0,), frozenset(layers))]
    together = tp.run(arms)
    for i, a in enumerate(arms):
        torch.testing.assert_close(together[i], tp.run([a])[0], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def planted(tiny_model_dir):
    """The tiny model edited so that block 1 writes nothing and no later block writes
    coordinate J (`conftest.planted_model`)."""
    from conftest import planted_model

    return planted_model(tiny_model_dir, J)


def _planted_shares(model, prompts):
    """Shares through e_J held at layers 2-3 (strictly after the steering layer) of a = -12 e_J,
    w ⊥ e_J and a + w, and the reference 1 - effect(w) / effect(a + w) from plain runs."""
    u = torch.zeros(64)
    u[J] = 1.0
    w = _vec(11)
    w[J] = 0.0
    vecs = {"a": -12 * u, "w": w, "a+w": -12 * u + w}
    tp = TailPatcher(model, prompts, [2, 3], u[None, None].repeat(2, 1, 1), _score(model), 4)
    _, cols = stack_bases({"e_J": u[None, None].repeat(2, 1, 1)})
    out = {}
    for name, v in vecs.items():
        sc = mediation_scores(tp, addition(v, L), cols, {"2-3": [2, 3]})
        out[name] = shares(sc, tp.baseline.tolist())["e_J"]["2-3"]
    return out, 1 - out["w"]["effect"] / out["a+w"]["effect"]


def test_planted_share_is_one_through_the_only_path_and_zero_when_bypassed(planted, prompts):
    got, reference = _planted_shares(planted, prompts)
    assert got["a"]["share"] == pytest.approx(1.0, abs=1e-5)
    assert got["a"]["share_ci"][0] > 0.99
    assert got["w"]["share"] == pytest.approx(0.0, abs=1e-5)
    assert got["a+w"]["share"] == pytest.approx(reference, abs=1e-4)
    assert got["a+w"]["held_effect"] == pytest.approx(got["w"]["effect"], abs=1e-5)
    assert 0.05 < got["a+w"]["share"] < 0.95


def test_planted_identity_fails_on_the_unedited_model(tiny_model, prompts):
    """Without the edit, other paths carry the J-part (block 1 reads it, later blocks write J):
    with e_J held, a + w no longer acts as w alone."""
    got, _ = _planted_shares(tiny_model, prompts)
    assert abs(got["a+w"]["held_effect"] - got["w"]["effect"]) > 0.05


def test_share_maths_and_the_undefined_guard():
    rng = np.random.default_rng(0)
    effect = -2.0 + 0.3 * rng.standard_normal(40)
    s = mediated_share(effect, 0.25 * effect)
    assert s["share"] == pytest.approx(0.75)
    assert s["share_ci"] == pytest.approx([0.75, 0.75])
    noisy = mediated_share(effect, 0.5 * effect + 0.3 * rng.standard_normal(40))
    assert noisy["share_ci"][0] < noisy["share"] < noisy["share_ci"][1]
    flat = mediated_share(0.3 * rng.standard_normal(40), 0.1 * rng.standard_normal(40))
    assert flat["share"] is None and flat["undefined"].startswith("undefined")
    with pytest.raises(SteerlensError):
        mediated_share([1.0], [0.5])


def test_share_interval_leaves_out_only_the_undefined_resamples():
    """Binary labels: a resample of goals whose effect and held effect both average 0 has no
    share (0/0) and is counted, not propagated (scipy's interval is NaN then); an effect that
    alone averages 0 is an infinite share and kept; a constant share is a zero-width interval;
    with no undefined resample the interval is scipy's percentile interval."""
    from scipy import stats

    from steerlens.methods.mediation import share_interval

    lo, hi, n = share_interval(np.array([np.nan, 1.0, 1.0, 1.0]), 0.95)
    assert (lo, hi, n) == (1.0, 1.0, 1)
    lo, hi, n = share_interval(np.array([-np.inf, *np.linspace(0, 1, 98), np.inf]), 0.5)
    assert n == 0 and 0 < lo < hi < 1
    assert share_interval(np.array([-np.inf, np.inf, 0.5]), 0.95)[0] == -np.inf
    e = np.zeros(40)
    e[:5] = 1.0  # 5 goals of 40 flip: some resamples draw none of them
    s = mediated_share(e, 0.5 * e, n_resamples=20000)
    assert s["resamples_undefined"] > 0 and s["share_ci"] == [0.5, 0.5]
    rng = np.random.default_rng(3)
    e, h = rng.normal(1, 1, 50), rng.normal(0.4, 1, 50)
    ref = stats.bootstrap((e, h), lambda a, b, axis=-1: 1 - b.mean(axis) / a.mean(axis), paired=True,
                          vectorized=True, n_resamples=2000, method="percentile",
                          random_state=np.random.default_rng(0)).confidence_interval
    got = mediated_share(e, h)
    assert got["share_ci"] == pytest.approx([ref.low, ref.high], rel=1e-12)
    assert got["resamples_undefined"] == 0


def test_layer_bands_cover_every_layer_from_the_steering_layer():
    bands = layer_bands(14, 24)
    assert bands["14-23"] == list(range(14, 24))
    assert list(bands)[1:] == ["14-17", "18-20", "21-23"]
    assert sorted(x for b in list(bands.values())[1:] for x in b) == list(range(14, 24))


def test_audit_mediation_stage_resumes_and_reports(tiny_model_dir, finished_run, tmp_path, capsys):
    """`--resume --mediation` on a finished run adds only mediation.json (and its per-setting
    files): every +v and generated null, the direction (the subspace when k > 1, and the
    polarity direction when the run has one), every band; a rerun after losing a setting's
    file and mediation.json writes the same bytes; the answer has the line."""
    import json
    import shutil

    from conftest import audit_args

    from steerlens.audit.run import main
    from steerlens.core.vectors import SteeringVector

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    # a polarity direction as the polarity stage writes it (every layer, resid_pre)
    SteeringVector(torch.randn(4, 64, generator=torch.Generator().manual_seed(0)),
                   [0, 1, 2, 3]).save(out / "polarity_direction.safetensors")
    assert main(audit_args(tiny_model_dir, out, "--resume", "--mediation", "--no-report")) == 0
    answer = capsys.readouterr().out
    med = json.loads((out / "mediation.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    want = {n for n, s in settings.items() if s["generated"] and s["kind"] in
            ("+v", "shuffled", "random", "covariance", "pair_diff")}
    per = med["attacks"]["none"]
    assert set(per) == want and set(med["attacks"]) == {"none", "refusal_suppression"}
    rec = per["sycophancy@2+v"]
    k = json.loads((out / "subspace.json").read_text())["k"]
    assert set(rec["shares"]) == {"direction", "polarity"} | ({"subspace"} if k > 1 else set())
    assert set(rec["shares"]["direction"]) == set(med["bands"]) and "1-3" in med["bands"]
    assert "sycophancy@2+v under none: mediated through the refusal direction" in answer
    first = (out / "mediation.json").read_bytes()
    (out / "mediation.json").unlink()
    (out / "mediation" / "none__sycophancy@2+v.json").unlink()
    assert main(audit_args(tiny_model_dir, out, "--resume", "--mediation", "--no-report")) == 0
    assert (out / "mediation.json").read_bytes() == first


def test_clamp_holds_the_steered_rows_component_at_the_twins(tiny_model, prompts):
    """In one forward pass of [twins; steered rows], after the clamp the steered rows'
    component in span(B) at each clamp layer equals their twin's; the addition still acts."""
    from steerlens.core.patching import TwinClamp
    from steerlens.core.prompts import left_pad, pad_id

    layers = [1, 2, 3]
    bases = per_layer_bases({0: _vec(3)}, layers, extra=_vec(5)[None])
    clamp = TwinClamp(addition(_vec(6), L), layers, bases)
    ids, mask = left_pad([prompts.full(i) for i in range(3)], pad_id(tiny_model.tokenizer))
    ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
    reader = ComponentReader(layers, bases)
    logits = tiny_model.run_with_hooks(ids, attention_mask=mask,
                                       fwd_hooks=clamp.hooks(prompts.n_tail) + reader.hooks(prompts.n_tail))
    got = reader.stacked()
    torch.testing.assert_close(got[3:], got[:3], atol=1e-5, rtol=0)
    assert (logits[3:, -1] - logits[:3, -1]).abs().max() > 0.1


def test_twinned_generation_matches_plain_paths(tiny_model, prompts):
    """Nothing clamped: the tokens are +v's (generate_grid); all of R^d clamped from the
    steering layer on: the unsteered model's tokens (the twin is fed the row's own tokens)."""
    from steerlens.core.generation import generate_grid, stop_token_ids
    from steerlens.core.patching import TwinClamp, generate_twinned

    few = prompts.subset(range(4))
    layers, st = [1, 2, 3], addition(_vec(6, 12.0), L)
    stop = stop_token_ids(tiny_model.tokenizer)
    cells = generate_grid(tiny_model, few, {"v": st, "base": Steering()}, 6, 4, desc=None)
    none = TwinClamp(st, layers, torch.zeros(3, 1, 64))
    full = TwinClamp(st, layers, torch.eye(64)[None].repeat(3, 1, 1))
    plain, _ = generate_twinned(tiny_model, few, none, 6, stop, batch_size=3)
    held, first = generate_twinned(tiny_model, few, full, 6, stop, batch_size=3)
    assert plain == [c.tokens for c in cells["v"].completions]
    assert held == [c.tokens for c in cells["base"].completions]
    assert plain != held
    torch.testing.assert_close(first, next_token_logits(tiny_model, few), atol=1e-4, rtol=0)


def test_answer_line_formats_shares_and_undefined():
    from steerlens.results.text import mediation_lines

    ok = {"share": 0.42, "share_ci": [0.3, 0.55]}
    und = {"share": None, "share_ci": [None, None], "undefined": "undefined: ..."}
    med = {"bands": {"14-23": [], "14-17": []}, "attacks": {"none": {
        "v@0.15+v": {"kind": "+v", "shares": {"direction": {"14-23": ok},
                                              "subspace": {"14-23": und}}},
        "random0@0.15": {"kind": "random", "shares": {"direction": {"14-23": und}}},
        "random1@0.15": {"kind": "random", "shares": {"direction": {"14-23": ok}}}}}}
    lines = mediation_lines({"mediation": med})
    assert lines[1] == ("  v@0.15+v under none: mediated through the refusal direction (first-token "
                        "refusal score): 42% [30, 55] (subspace: undefined (effect's interval "
                        "includes 0))")
    assert lines[2] == ("  its generated nulls under none: share defined for 1 of 2; median 42% "
                        "(range 42 to 42)")
    assert mediation_lines({}) == []
