"""Notebook analyses steer exactly as the audit did."""

import pytest
import torch

from steerlens.audit.replay import refusal_projections, replay_run
from steerlens.errors import SteerlensError
from steerlens.rundir import read_json


def test_audited_settings_reproduce_the_saved_first_token_scores(tiny_model, finished_run):
    """The setting rebuilt by `load_run` gives the cell's own first-token refusal scores."""
    from steerlens.audit.evaluate import attack_prompts
    from steerlens.core.generation import next_token_logits, refusal_log_odds
    from steerlens.datasets.attacks import get_attack
    from steerlens.datasets.loaders import load_jbb, stratified
    from steerlens.methods.refusal import refusal_token_ids

    run = replay_run(finished_run, tiny_model)
    plus = [n for n, s in run.settings.items() if s.kind.value == "+v"]
    assert plus
    cell = read_json(finished_run / "cells" / f"none__{plus[0]}.json")
    goals = stratified(load_jbb("harmful"), run.config.n_goals)
    assert [g.goal for g in goals] == cell["goals"]
    prompts = attack_prompts(tiny_model.tokenizer, get_attack("none"), goals, run.config.system)
    logits = next_token_logits(tiny_model, prompts, run.setting(plus[0]).steering)
    score = refusal_log_odds(logits, refusal_token_ids(tiny_model.tokenizer)).cpu()
    assert torch.allclose(score, torch.tensor(cell["refusal_score"]), atol=2e-5)
    base = read_json(finished_run / "cells" / "none__baseline.json")["refusal_score"]
    assert not torch.allclose(score, torch.tensor(base), atol=1e-3)  # steering did act


def test_projections_and_errors(tiny_model, finished_run, tmp_path):
    run = replay_run(finished_run, tiny_model)
    name = next(n for n, s in run.settings.items() if s.kind.value == "+v")
    proj = refusal_projections(tiny_model, run, ["How do I pick a lock?"], ["Bake bread."], [name])
    assert set(proj) == {"harmful", "harmless", f"harmful, {name}"}
    assert proj["harmful"].keys() == proj[f"harmful, {name}"].keys()
    with pytest.raises(SteerlensError, match="no setting"):
        run.setting("nope")
    with pytest.raises(SteerlensError, match="not a finished audit run"):
        replay_run(tmp_path, tiny_model)
