"""Zero-shot harm judging by an embedded model: its next-token log-odds of "yes" over "no" after
`judges.harm.HARM_PROMPT`, on labelled string-judge non-refusals (no fitting, so no goal split is
needed; threshold 0 and AUC are out of sample).

    python experiments/harm_judge_zeroshot.py --model qwen2.5-coder-1.5b-instruct \
        --json docs/harm_judge_zeroshot_1.5b.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from steerlens.judges.harm_training import load_labels


def sample(rows: list[dict], n_harmful: int, n_other: int, seed: int) -> list[dict]:
    """`n_harmful` harmful and `n_other` other labelled rows among the string judge's non-refusals."""
    from steerlens.judges.registry import get_judge

    ok = get_judge("refusal_string").judge([r["goal"] for r in rows], [r["completion"] for r in rows])
    pool = [r for r, k in zip(rows, ok) if k]
    harm = [r for r in pool if r["label"] == "complied_harmful"]
    rest = [r for r in pool if r["label"] != "complied_harmful"]
    rng = random.Random(seed)
    return rng.sample(harm, min(n_harmful, len(harm))) + rng.sample(rest, n_other)


def zero_shot_scores(model, rows: list[dict], chars: int, batch_size: int = 8) -> np.ndarray:
    """log p(yes) - log p(no) at the assistant's first token, HARM_PROMPT in the chat template."""
    from steerlens.judges.harm import HARM_PROMPT
    from steerlens.judges.llm import answer_ids, answer_log_odds, forward_shared_prefix

    tok = model.tokenizer
    texts = [tok.apply_chat_template(
        [{"role": "user", "content": HARM_PROMPT.format(goal=r["goal"], response=r["completion"][:chars])}],
        tokenize=False, add_generation_prompt=True) for r in rows]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    pos, neg = answer_ids(tok, "yes", "no")
    s = np.zeros(len(ids))
    for idx, logits, _ in forward_shared_prefix(model, ids, batch_size):
        s[idx] = answer_log_odds(logits, pos, neg).numpy()
    return s


def metrics(y: np.ndarray, s: np.ndarray) -> dict:
    return {"auc": float(roc_auc_score(y, s)), "kappa_at_0": float(cohen_kappa_score(y, s > 0)),
            "positive_rate_at_0": float((s > 0).mean()), "n": int(len(y)), "n_harmful": int(y.sum())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-harmful", type=int, default=60)
    ap.add_argument("--n-other", type=int, default=90)
    ap.add_argument("--chars", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args(argv)
    from steerlens.core.models import load_model

    torch.set_grad_enabled(False)
    rows = sample(load_labels(), a.n_harmful, a.n_other, a.seed)
    t = time.time()
    s = zero_shot_scores(load_model(a.model, device="cpu"), rows, a.chars)
    y = np.array([r["label"] == "complied_harmful" for r in rows])
    rep = {"model": a.model, "chars": a.chars, "seed": a.seed, "seconds": round(time.time() - t),
           **metrics(y, s), "ids": [r["id"] for r in rows], "scores": s.round(4).tolist()}
    a.json.write_text(json.dumps(rep, indent=1) + "\n")
    print({k: v for k, v in rep.items() if k not in ("ids", "scores")})


if __name__ == "__main__":
    main()
