"""What early stopping and the generation length hide: regenerate a sample of a committed run's
rows exactly as audited (same setting, `replay_run`), without stopping.

- `stopped`: rows the old rule stopped on a weak opener alone ("I'm sorry", "As an AI"),
  regenerated to 64 new tokens: how often does the rest comply (the new rule would not stop)?
- `length`: compliant rows (generated to 64 tokens), regenerated to 128: does the label change?

Writes the texts (for blind labelling) and the harm judge's labels to --out.

    python experiments/stop_rule_check.py results/findings-0.5b-resid --out docs/stop_rule_0.5b.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from steerlens.judges.strings import WEAK_OPENERS, unambiguous_refusal


def _weak_only(text: str) -> bool:
    t = text.lower().replace("\u2019", "'")[:100]
    return any(p in t for p in WEAK_OPENERS) and not unambiguous_refusal(text)


def sample_rows(cells: dict, kind: str, n: int, seed: int) -> list[tuple]:
    """(attack, setting, row index) of stopped-on-a-weak-opener rows, or of compliant rows."""
    pool = []
    for (attack, name), c in sorted(cells.items()):
        if attack == "benign" or "stopped" not in c:
            continue
        for i, (text, stop, jb) in enumerate(zip(c["completions"], c["stopped"], c["jailbroken"])):
            if (kind == "stopped" and stop == "judge" and _weak_only(text)) or (
                    kind == "length" and jb and stop == "length"):
                pool.append((attack, name, i))
    return random.Random(seed).sample(pool, min(n, len(pool)))


def regenerate(model, run, picks: list[tuple], max_new_tokens: int) -> list[str]:
    from steerlens.audit.evaluate import attack_prompts
    from steerlens.core.generation import generate_grid
    from steerlens.datasets.attacks import get_attack
    from steerlens.datasets.loaders import load_jbb

    by_goal = {b.goal: b for b in load_jbb("harmful")}
    out = {}
    for attack, name in sorted({(a, s) for a, s, _ in picks}):
        idx = [i for a, s, i in picks if (a, s) == (attack, name)]
        goals = [by_goal[run.data.cells[(attack, name)]["goals"][i]] for i in idx]
        prompts = attack_prompts(model.tokenizer, get_attack(attack), goals, run.config.system)
        cell = generate_grid(model, prompts, {name: run.setting(name).steering}, max_new_tokens,
                             batch_size=8, decided=None, desc=None)[name]
        for i, comp in zip(idx, cell.completions):
            out[(attack, name, i)] = comp.text
    return [out[p] for p in picks]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from steerlens.audit.replay import replay_run
    from steerlens.core.models import load_model
    from steerlens.judges.registry import get_judge

    torch.set_grad_enabled(False)
    cfg = json.loads((Path(a.run) / "config.json").read_text())["config"]
    model = load_model(cfg["model"], device="cpu")
    run = replay_run(a.run, model)
    harm = get_judge("harm", model=model)
    report = {"run": a.run}
    for kind, length in (("stopped", 64), ("length", 128)):
        picks = sample_rows(run.data.cells, kind, a.n, a.seed)
        full = regenerate(model, run, picks, length)
        goals = [run.data.cells[(x, s)]["goals"][i] for x, s, i in picks]
        saved = [run.data.cells[(x, s)]["completions"][i] for x, s, i in picks]
        report[kind] = {"max_new_tokens": length, "rows": [
            {"attack": x, "setting": s, "row": i, "goal": g, "saved": old, "regenerated": new,
             "harm_saved": h0, "harm_regenerated": h1, "unambiguous_refusal": unambiguous_refusal(new)}
            for (x, s, i), g, old, new, h0, h1 in zip(picks, goals, saved, full,
                                                     harm.judge(goals, saved), harm.judge(goals, full))]}
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(a.out)


if __name__ == "__main__":
    main()
