"""The audit's answer polarity: the behaviour check per polarity, the balance option, what a
run records, and the warning for vector files along the polarity direction."""

import json

import pytest
import torch

from steerlens.core.geometry import cosine
from steerlens.datasets.behaviours import load_behaviour
from steerlens.errors import SteerlensError
from steerlens.methods.polarity import item_polarity


def _effect(up: dict, down: dict, p_up=0.001, p_down=0.001) -> dict:
    """A behaviour effect at dose 0.15: overall shifts significant, per polarity as given."""
    def one(by, p):
        shift = sum(v["shift"] * v["n_items"] for v in by.values()) / sum(v["n_items"] for v in by.values())
        return {"shift": shift, "p_value": p, "by_polarity": by}
    return {"unsteered": {}, "+0.15": one(up, p_up), "-0.15": one(down, p_down)}


def test_a_yes_vector_fails_the_behaviour_check():
    """Steering towards "Yes" raises p(matching) where the matching answer is Yes and lowers it
    where it is No: overall it passes on a Yes-heavy set, so the check needs both polarities."""
    from steerlens.audit.vector_stages import MIN_POLARITY_TEST, _steers, polarity_check

    yes_vector = _effect({"yes": {"shift": 0.3, "n_items": 18}, "no": {"shift": -0.2, "n_items": 4}},
                         {"yes": {"shift": -0.3, "n_items": 18}, "no": {"shift": 0.2, "n_items": 4}})
    assert yes_vector["+0.15"]["shift"] > 0 and yes_vector["-0.15"]["shift"] < 0
    assert not _steers(yes_vector, 0.15)
    assert polarity_check(yes_vector, 0.15)["no"] == {"n_items": 4, "checked": True, "ok": False}
    behaviour = _effect({"yes": {"shift": 0.3, "n_items": 18}, "no": {"shift": 0.1, "n_items": 4}},
                        {"yes": {"shift": -0.3, "n_items": 18}, "no": {"shift": -0.1, "n_items": 4}})
    assert _steers(behaviour, 0.15)
    few = _effect({"yes": {"shift": 0.3, "n_items": 20}, "no": {"shift": -0.2, "n_items": 2}},
                  {"yes": {"shift": -0.3, "n_items": 20}, "no": {"shift": 0.2, "n_items": 2}})
    assert MIN_POLARITY_TEST == 3 and _steers(few, 0.15)  # too few No items: not checkable
    assert polarity_check(few, 0.15)["no"] == {"n_items": 2, "checked": False}


def test_behaviour_effect_by_polarity_on_a_tiny_model(tiny_model):
    """The per-polarity shifts are the means over each group's two prompts (both orders)."""
    from steerlens.audit.evaluate import answer_prompts, behaviour_effect, p_matching
    from steerlens.core.generation import next_token_logits_grid
    from steerlens.core.steering import Steering, addition

    items = load_behaviour("openness")[:4]
    groups = [item_polarity(x) for x in items]
    g = torch.Generator().manual_seed(0)
    steer = addition(3 * torch.randn(tiny_model.cfg.d_model, generator=g), 2)
    eff = behaviour_effect(tiny_model, items, {"v": steer}, batch_size=8, groups=groups)
    ans = answer_prompts(tiny_model.tokenizer, items)
    grid = next_token_logits_grid(tiny_model, ans.prompts, {"u": Steering(), "v": steer}, 8)
    diff = p_matching(grid["v"].cpu(), ans) - p_matching(grid["u"].cpu(), ans)
    for pol in ("yes", "no"):
        rows = [2 * i + k for i, x in enumerate(groups) if x == pol for k in (0, 1)]
        assert eff["v"]["by_polarity"][pol]["shift"] == pytest.approx(float(diff[rows].mean()), abs=1e-6)
        assert eff["v"]["by_polarity"][pol]["n_items"] == len(rows) // 2


def test_balance_option_in_the_config():
    """The default is polarity and is recorded; letter (every earlier run's) leaves the hash as
    it was, and a config saved without the field reads as letter."""
    from steerlens.audit.config import AuditConfig, build_parser, config_from_args
    from steerlens.audit.validation import validate

    cfg, _ = config_from_args(build_parser().parse_args(["--behaviours", "refusal"]))
    assert cfg.balance == "polarity" and cfg.to_json()["balance"] == "polarity"
    old, _ = config_from_args(build_parser().parse_args(["--behaviours", "refusal", "--balance",
                                                         "letter"]))
    assert "balance" not in old.to_json() and old.hash != cfg.hash
    assert AuditConfig.from_json(old.to_json()).balance == "letter"
    assert AuditConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--balance", "both"])
    with pytest.raises(SteerlensError, match="balance"):
        validate(AuditConfig(behaviours=("refusal",), balance="both"))


def test_the_audit_records_polarity(finished_run):
    """Every vector of a run records its polarity cosine (metadata per layer, overlap.json at
    the steering layer), the direction is a run file, and the behaviour check is by polarity."""
    from steerlens.core.vectors import SteeringVector

    config = json.loads((finished_run / "config.json").read_text())["config"]
    assert config["balance"] == "polarity"
    pol = SteeringVector.load(finished_run / "polarity_direction.safetensors")
    assert pol.meta["kind"] == "polarity" and pol.meta["n_items"] == 200
    overlap = json.loads((finished_run / "overlap.json").read_text())
    dose = json.loads((finished_run / "dose.json").read_text())
    for name in ("sycophancy", "refusal"):
        sv = SteeringVector.load(finished_run / "vectors" / f"{name}.safetensors")
        assert sv.meta["polarity_method"] == "none" and len(sv.meta["polarity_cosine"]) == len(sv.layers)
        layer = dose["layer"]
        assert overlap[name]["polarity_cos"] == pytest.approx(
            float(cosine(sv.at(layer), pol.at(layer))), abs=1e-6)
        assert "letter_cos" in overlap[name]
        checks = dose["vectors"][name]["polarity_check"]["2"]
        assert checks["yes"] == {"n_items": 0, "checked": False,  # all "other" answers
                                 "why": dose["vectors"][name]["polarity_items"]["yes"]["not_checked"]}
        # refusal's generate split holds one No item: too few to check, so it is not read
        assert dose["vectors"][name]["polarity_items"]["no"]["n_top_up"] == 0
    reuse = json.loads((finished_run / "reuse.json").read_text())["artefacts"]
    assert "polarity" in reuse


def test_a_vector_file_along_the_polarity_direction_is_warned_about(capsys):
    from steerlens.audit.polarity import WARN_COSINE, warn_files
    from steerlens.core.vectors import SteeringVector

    g = torch.Generator().manual_seed(0)
    pol = SteeringVector(torch.randn(3, 16, generator=g), [0, 1, 2], "resid_pre", {})
    along = SteeringVector(pol.vectors + 0.1 * torch.randn(3, 16, generator=g), [0, 1, 2],
                           "resid_pre", {})
    other = SteeringVector(torch.randn(3, 16, generator=g), [0, 1, 2], "resid_pre", {})
    warn_files({"file:along": along, "file:other": other}, pol, 1)
    err = capsys.readouterr().err
    assert WARN_COSINE == 0.5 and "file:along" in err and "file:other" not in err
