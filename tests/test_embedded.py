"""End to end on the embedded 0.5B (at most 8 prompts each): Arditi et al.'s two effects."""

import pytest
import torch

from steerlens.data import load_instructions
from steerlens.directions import refusal_means
from steerlens.generation import generate_grid
from steerlens.judges import RefusalStringJudge
from steerlens.prompts import chat_template, header_ids
from steerlens.steering import Steering, ablation, addition

pytestmark = pytest.mark.embedded


def test_refusal_direction_ablation_and_addition(embedded_model):
    m = embedded_model
    tok = m.tokenizer
    ins = lambda s, a, b: [x.instruction for x in load_instructions(s)[a:b]]  # noqa: E731
    means, positions, layers = refusal_means(m, ins("harmful_train", 0, 16),
                                             ins("harmless_train", 0, 16), layers=[12, 14, 16])
    r = means[positions.index(-1), layers.index(14)].to(m.cfg.device)
    # Held out: validation prompts, never used to build the direction.
    harmful, harmless = ins("harmful_val", 0, 8), ins("harmless_val", 0, 8)
    suffix = tok(chat_template(tok).suffix, add_special_tokens=False)["input_ids"]
    judge = RefusalStringJudge()
    body = lambda xs: [tok(x, add_special_tokens=False)["input_ids"] for x in xs]  # noqa: E731
    settings = {"base": Steering(), "ablate": ablation(r[None], m.cfg.n_layers),
                "add": addition(r, 14, 1.0, positions="all")}
    res_h = generate_grid(m, header_ids(tok), body(harmful), suffix,
                          {k: settings[k] for k in ("base", "ablate")}, max_new_tokens=16,
                          decided=judge.decided, desc=None)
    res_l = generate_grid(m, header_ids(tok), body(harmless), suffix,
                          {k: settings[k] for k in ("base", "add")}, max_new_tokens=16,
                          decided=judge.decided, desc=None)
    refusals = {k: sum(judge.is_refusal(c.text) for c in v) for k, v in res_h.items()}
    induced = {k: sum(judge.is_refusal(c.text) for c in v) for k, v in res_l.items()}
    print("harmful refusals", refusals, "harmless refusals", induced)
    assert refusals["ablate"] <= refusals["base"] - 2
    assert induced["add"] >= induced["base"] + 3
    assert torch.isfinite(r).all()
