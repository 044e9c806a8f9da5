"""End to end on the embedded 0.5B (at most 8 prompts each): Arditi et al.'s two effects."""

import pytest
import torch

from steerlens.core.generation import generate_grid
from steerlens.core.prompts import chat_prompts
from steerlens.core.steering import Steering, ablation, addition
from steerlens.datasets.loaders import load_instructions
from steerlens.judges.strings import RefusalStringJudge
from steerlens.methods.refusal import refusal_activations

pytestmark = pytest.mark.embedded


def test_refusal_direction_ablation_and_addition(embedded_model):
    m = embedded_model
    ins = lambda s, a, b: [x.instruction for x in load_instructions(s)[a:b]]  # noqa: E731
    acts = refusal_activations(m, ins("harmful_train", 0, 16), ins("harmless_train", 0, 16),
                               layers=[14])
    r = acts.means()[-1, 0].to(m.cfg.device)
    # Held out: validation prompts, never used to build the direction.
    harmful = chat_prompts(m.tokenizer, ins("harmful_val", 0, 8))
    harmless = chat_prompts(m.tokenizer, ins("harmless_val", 0, 8))
    judge = RefusalStringJudge()
    base = Steering()
    res_h = generate_grid(m, harmful, {"base": base, "ablate": ablation(r[None], m.cfg.n_layers)},
                          max_new_tokens=16, decided=judge.decided, desc=None)
    res_l = generate_grid(m, harmless, {"base": base, "add": addition(r, 14, 1.0, positions="all")},
                          max_new_tokens=16, decided=judge.decided, desc=None)
    refusals = {k: sum(judge.is_refusal(c.text) for c in v.completions) for k, v in res_h.items()}
    induced = {k: sum(judge.is_refusal(c.text) for c in v.completions) for k, v in res_l.items()}
    print("harmful refusals", refusals, "harmless refusals", induced)
    assert refusals["ablate"] <= refusals["base"] - 2
    assert induced["add"] >= induced["base"] + 3
    assert torch.isfinite(r).all()
