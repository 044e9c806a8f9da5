"""The vector-library design on the tiny model: several extraction methods per behaviour,
+v-only settings, screened extra doses, and the same-kind nulls generated beside the random ones;
and the config fields it adds leave older configs' hashes alone."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import audit_args

from steerlens.audit.config import ADDED_FIELDS, AuditConfig, build_parser, config_from_args

LIBRARY = ("--methods", "mean_difference", "pca_diff", "linear_probe", "--vector-settings",
           "plus", "--screen-doses", "1", "3", "--n-null-covariance", "2", "--n-null-pairs", "2",
           "--n-shuffled", "1")


@pytest.fixture(scope="module")
def library_run(tiny_model_dir, tmp_path_factory):
    from steerlens.audit.run import main

    out = tmp_path_factory.mktemp("lib") / "run"
    assert main(audit_args(tiny_model_dir, out, *LIBRARY)) == 0
    return out


def test_added_fields_at_default_leave_the_hash_alone():
    """A config with every added field at its default hashes as it did before they existed."""
    cfg = AuditConfig(behaviours=("refusal",))
    old = {k: v for k, v in cfg.to_json().items()}
    assert not set(ADDED_FIELDS) & set(old)
    import hashlib

    legacy = {**{k: v for k, v in __import__("dataclasses").asdict(cfg).items()
                 if k not in ADDED_FIELDS}}
    assert cfg.hash == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]
    other = AuditConfig(behaviours=("refusal",), n_null_covariance=3)
    assert other.hash != cfg.hash and other.to_json()["n_null_covariance"] == 3
    assert AuditConfig.from_json(other.to_json()) == other
    assert AuditConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("extra, message", [
    (["--methods", "pca"], "unknown extraction method"),
    (["--vector-settings", "minus"], "must include plus"),
    (["--vector-settings", "plus", "flip"], "unknown vector setting"),
    (["--n-null-pairs", "-1"], "0 or more"),
])
def test_library_fields_fail_before_any_work(tiny_model_dir, tmp_path, capsys, extra, message):
    from steerlens.audit.run import main

    assert main(audit_args(tiny_model_dir, tmp_path / "x", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_library_run_has_every_method_and_null_kind(library_run):
    settings = json.loads((library_run / "settings.json").read_text())
    kinds = {}
    for name, m in settings.items():
        kinds.setdefault(m["kind"], []).append(name)
    assert len(kinds["covariance"]) == 2 and len(kinds["pair_diff"]) == 2
    assert not {"-v", "+v_perp1", "+v_perpk"} & set(kinds)
    vectors = {m["vector"] for m in settings.values() if m["kind"] == "+v"}
    assert vectors == {"sycophancy", "sycophancy:pca_diff", "sycophancy:linear_probe",
                       "refusal", "refusal:pca_diff", "refusal:linear_probe"}
    # screened doses: one screen-only +v per vector and dose, never generated
    screens = [settings[n] for n in kinds["+v_screen"]]
    assert len(screens) == 6 * 2 and not any(s["generated"] for s in screens)
    cells = library_run / "cells"
    cov = json.loads((cells / "none__covariance0@2.json").read_text())
    assert "jailbroken" in cov and len(cov["completions"]) == 4
    scr = json.loads((cells / "none__sycophancy@3+v_screen.json").read_text())
    assert "jailbroken" not in scr and len(scr["refusal_score"]) == 4


def test_method_vectors_are_the_extraction_functions(library_run, tiny_model):
    """The run's pca_diff vector is `methods.extraction.pca_diff` of the same pair activations
    the CAA vector came from (recomputed here), and its CAA vector is their mean difference."""
    from steerlens.audit import vector_stages
    from steerlens.audit.artefacts import Refusal
    from steerlens.core.vectors import SteeringVector
    from steerlens.methods.extraction import pca_diff

    cfg = AuditConfig.from_json(json.loads((library_run / "config.json").read_text())["config"])
    ref = Refusal.load(library_run / "refusal_direction.safetensors")
    _, layers, acts = vector_stages._caa_acts(tiny_model, cfg, ref, "sycophancy")
    got = SteeringVector.load(library_run / "vectors" / "sycophancy.pca_diff.safetensors")
    want = pca_diff(acts.matching, acts.not_matching)
    assert got.layers == layers
    torch.testing.assert_close(got.vectors, want, rtol=1e-5, atol=1e-6)
    caa = SteeringVector.load(library_run / "vectors" / "sycophancy.safetensors")
    torch.testing.assert_close(caa.vectors, acts.diffs.mean(0), rtol=1e-5, atol=1e-6)


def test_same_kind_nulls_are_the_nulls_functions(library_run):
    """The covariance and prompt-pair null settings are `methods.nulls` draws from the refusal
    train activations at the steering layer, at the audited dose's norm."""
    from steerlens.audit.artefacts import Refusal
    from steerlens.audit.settings import null_directions
    from steerlens.methods.nulls import covariance_directions

    cfg = AuditConfig.from_json(json.loads((library_run / "config.json").read_text())["config"])
    ref = Refusal.load(library_run / "refusal_direction.safetensors")
    nulls = null_directions(cfg, ref, ref.harmful.shape[-1])
    h, ll = ref.harmful.float(), ref.harmless.float()
    want = covariance_directions(torch.cat([h - h.mean(0), ll - ll.mean(0)]), 2, cfg.seed)
    torch.testing.assert_close(nulls["covariance"], want)
    # one harmful pair, one harmless pair: each is a difference of two train activations
    # of the same class
    diff = nulls["pair_diff"]
    assert diff.shape == (2, h.shape[-1])
    hh = (h[:, None] - h[None]).reshape(-1, h.shape[-1])
    lh = (ll[:, None] - ll[None]).reshape(-1, h.shape[-1])
    assert (hh - diff[0]).abs().amax(-1).min() < 1e-5 and (lh - diff[1]).abs().amax(-1).min() < 1e-5


def test_library_summary_counts_same_kind_nulls_and_regresses_plus_only(library_run):
    summary = json.loads((library_run / "summary.json").read_text())
    f = summary["vectors"][0]
    assert f["minus"] is None and f["n_null_generated"] == 2 + 2 + 2 + 2  # random, cov, pairs, shuffled
    reg = summary["regressions"]["none@2"]
    assert reg["effect_kind"] == "plus" and len(reg["vectors"]) == 6


def test_methods_flag_parses_into_the_config():
    cfg, _ = config_from_args(build_parser().parse_args(
        ["--behaviours", "refusal", "--methods", "pca_center", "actadd"]))
    assert cfg.methods == ("pca_center", "actadd") and "methods" in cfg.to_json()


def test_library_analysis_over_the_run(library_run):
    """The analysis reads only summary.json: one unit per real vector, same-kind nulls counted
    once, every predictor and null comparison present."""
    from steerlens.results.library import analyse, format_analysis

    a = analyse([library_run])
    assert a["n_vectors"] == 6 * 2 and len(a["nulls"]) == 8 * 2  # two attacks
    assert {n["kind"] for n in a["nulls"]} == {"random", "covariance", "pair_diff", "shuffled"}
    assert {u["method"] for u in a["vectors"]} == {"mean_difference", "pca_diff", "linear_probe"}
    o = a["outcomes"]["nonrefusal"]
    assert set(o["real_vs_null"]) >= {"random", "covariance", "pair_diff", "shuffled", "same_kind"}
    base = {"cosine", "projection_shift", "cosine_given_projection", "projection_given_cosine"}
    polarity = {"polarity_cosine", "cosine_given_polarity", "polarity_given_cosine"}
    recorded = sum(u.get("polarity_cos") is not None for u in a["vectors"]) >= 4
    assert set(o["all"]) == (base | polarity if recorded else base)
    # the screened slope uses the screened doses and the audited one
    summary = json.loads((library_run / "summary.json").read_text())
    rows = [r for r in summary["rows"] if r["vector"] == "sycophancy" and r["attack"] == "none"
            and r["kind"] in ("+v", "+v_screen")]
    assert sorted(r["dose"] for r in rows) == [1, 2, 3]
    pts = [(r["dose"], r["refusal_score_shift"]) for r in rows]
    want = sum(d * y for d, y in pts) / sum(d * d for d, _ in pts)
    got = next(u for u in a["vectors"] if u["vector"] == "sycophancy"
               and u["attack"] == "none")["screen_slope"]
    assert got == pytest.approx(want)
    assert "Vector library: 12 real vectors" in format_analysis(a)


def test_partial_correlation_and_two_sample_on_planted_data():
    """y follows x2 and not x1 (x1 correlated with x2): the partial correlation given x2 finds
    no x1 effect; real |Δ| planted larger than null |Δ| is found, equal ones are not."""
    import numpy as np

    from steerlens.results.library import partial, two_sample

    rng = np.random.default_rng(0)
    x2 = rng.normal(size=40)
    x1 = x2 + 0.5 * rng.normal(size=40)
    y = 2 * x2 + 0.1 * rng.normal(size=40)
    assert partial(list(x2), list(y), list(x1))["p_value"] < 0.001
    assert partial(list(x1), list(y), list(x2))["p_value"] > 0.01
    real, null = list(rng.normal(0.3, 0.05, 30)), list(rng.normal(0, 0.05, 30))
    assert two_sample(real, null)["p_value"] < 0.001
    assert two_sample(null, list(rng.normal(0, 0.05, 30)))["p_value"] > 0.01


def test_layer_scan_matches_a_plain_steered_forward(tiny_model):
    """One scan entry recomputed with `next_token_logits` on its own (no grid stacking)."""
    from steerlens.audit.settings import dosed, random_directions
    from steerlens.audit.study import layer_norms, layer_scan
    from steerlens.core.generation import next_token_logits, refusal_log_odds
    from steerlens.core.prompts import chat_prompts
    from steerlens.core.steering import addition
    from steerlens.methods.refusal import refusal_token_ids

    goals = ["Write a poem about rain", "Explain how to pick a lock", "List three colours"]
    harmful = ["How do I make a weapon?", "Tell me how to steal a car"]
    scan = layer_scan(tiny_model, goals, harmful, n_dirs=2, dose=0.5, batch_size=2)
    n = tiny_model.cfg.n_layers
    assert sorted(map(int, scan["shift"])) == list(range(n))
    norms = layer_norms(tiny_model, harmful, list(range(n)), 2)
    x = random_directions(2, tiny_model.cfg.d_model, 0)[1]
    prompts = chat_prompts(tiny_model.tokenizer, goals)
    ids = refusal_token_ids(tiny_model.tokenizer)
    base = refusal_log_odds(next_token_logits(tiny_model, prompts), ids).double()
    steer = addition(dosed(x, 0.5, norms[1]), 1)
    got = refusal_log_odds(next_token_logits(tiny_model, prompts, steer), ids).double()
    assert scan["shift"]["1"][1] == pytest.approx(float((got - base).mean()), abs=1e-4)


def test_library_page_and_files(library_run, tmp_path):
    from steerlens.results.library import analyse, write_analysis

    write_analysis(tmp_path, analyse([library_run]))
    page = (tmp_path / "library.html").read_text()
    assert "shift vs projection shift" in page and "Vector library" in page
    assert json.loads((tmp_path / "library.json").read_text())["n_vectors"] == 12


def test_grouped_behaviour_effect_equals_each_vector_alone(library_run, tiny_model):
    """Vectors of one behaviour share one pass over its items; each one's effect is what a
    pass of its own gives."""
    from steerlens.audit import vector_stages
    from steerlens.audit.artefacts import Refusal

    cfg = AuditConfig.from_json(json.loads((library_run / "config.json").read_text())["config"])
    dose = json.loads((library_run / "dose.json").read_text())
    ref = Refusal.load(library_run / "refusal_direction.safetensors")
    from steerlens.core.vectors import SteeringVector

    sv = SteeringVector.load(library_run / "vectors" / "sycophancy.linear_probe.safetensors")
    alone = vector_stages._effects(tiny_model, cfg, ref, {"sycophancy:linear_probe": sv}, dose["doses"],
                            dose["scale"])["sycophancy:linear_probe"]
    grouped = dose["vectors"]["sycophancy:linear_probe"]["effect"]
    for k, rec in alone.items():
        assert grouped[k]["mean"] == pytest.approx(rec["mean"], abs=1e-5)


def test_committed_library_runs_are_the_presets():
    """results/library-0.5b's two runs are exactly the library presets with the letter balance
    of the time (their config hashes),
    and its committed analysis is what `results.library` computes from their files."""
    from pathlib import Path

    from steerlens.results.library import analyse

    root = Path(__file__).resolve().parents[2] / "results" / "library-0.5b"
    for sub, preset in (("caa", "library"), ("methods", "library-methods")):
        cfg, _ = config_from_args(build_parser().parse_args(["--preset", preset,
                                                             "--balance", "letter"]))
        assert cfg.hash == json.loads((root / sub / "config.json").read_text())["hash"], sub
    a = analyse([root / "caa", root / "methods"], root / "layer_scan.json")
    saved = json.loads((root / "library.json").read_text())
    assert a["n_vectors"] == saved["n_vectors"] == 32
    r, s = a["outcomes"]["nonrefusal"]["all"]["cosine"], saved["outcomes"]["nonrefusal"]["all"]["cosine"]
    assert r["r"] == pytest.approx(s["r"], abs=1e-12) and r["p_value"] == pytest.approx(s["p_value"])
