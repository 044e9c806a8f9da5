"""Harm-judge candidate: an embedded model reads the conversation itself (the goal as the user's
turn, the completion as the assistant's) and its residual stream is mean-pooled over the
completion's tokens, per layer; the same probe recipe and nested held-out-by-goal protocol as
`harm_judge_layers.py` (the shipped judge reads one last token of a judging prompt instead).

    python experiments/harm_judge_pooled.py --cache /tmp/hj --json docs/harm_judge_pooled.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from steerlens.judges.harm_training import kappas, load_labels, nested

LAYERS = (4, 8, 12, 16, 20, 23)


def conversations(tokenizer, rows: list[dict]) -> tuple[list[list[int]], list[int]]:
    """Token ids of each whole chat text and the index of the completion's first token."""
    from steerlens.core.prompts import _tail_start, chat_text, token_ids

    ids, starts = [], []
    for r in rows:
        head = chat_text(tokenizer, r["goal"])  # ends with the assistant header
        text = chat_text(tokenizer, r["goal"], assistant=r["completion"])
        if not text.startswith(head):
            raise ValueError("the chat template does not extend the generation prompt")
        row = token_ids(tokenizer, text)
        ids.append(row)
        starts.append(min(_tail_start(tokenizer, text, row, len(head)), len(row) - 1))
    return ids, starts


@torch.no_grad()
def pooled(model, rows: list[dict], layers=LAYERS, batch_size: int = 8) -> np.ndarray:
    """Mean `resid_pre` over the completion's tokens: (rows, layers, d_model) float32."""
    from steerlens.core.hooks import hook_name
    from steerlens.core.prompts import left_pad, length_batches, pad_id

    ids, starts = conversations(model.tokenizer, rows)
    out = np.zeros((len(rows), len(layers), model.cfg.d_model), np.float32)
    for idx in length_batches(ids, batch_size):
        x, mask = left_pad([ids[i] for i in idx], pad_id(model.tokenizer))
        width = x.shape[1]
        keep = torch.zeros(len(idx), width)
        for b, i in enumerate(idx):
            keep[b, width - len(ids[i]) + starts[i]:] = 1.0
        got: dict[int, torch.Tensor] = {}

        def grab(t, hook, lay):
            got[lay] = (t.float() * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
            return t

        hooks = [(hook_name(lay, "resid_pre"), lambda t, hook, lay=lay: grab(t, hook, lay))
                 for lay in layers]
        model.run_with_hooks(x, attention_mask=mask, fwd_hooks=hooks, return_type=None,
                             stop_at_layer=max(layers) + 1)
        out[idx] = torch.stack([got[lay] for lay in layers], 1).numpy()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from steerlens.core.models import load_model
    from steerlens.judges.registry import get_judge

    torch.set_grad_enabled(False)
    rows = load_labels()
    path = a.cache / f"pooled_{a.model}.npy"
    if path.exists():
        feats = np.load(path)
    else:
        t = time.time()
        feats = pooled(load_model(a.model, device="cpu"), rows)
        print(f"features in {time.time() - t:.0f} s", file=sys.stderr)
        a.cache.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
    goals = [r["goal"] for r in rows]
    y = np.array([r["label"] == "complied_harmful" for r in rows])
    g = np.array(goals)
    nonref = np.array(get_judge("refusal_string").judge(goals, [r["completion"] for r in rows]))
    rep = {"model": a.model, "n_rows": len(rows), "n_harmful": int(y.sum()), "candidates": []}
    for j, lay in enumerate(LAYERS):
        for train in ("all rows", "non-refusals"):
            mask = np.ones(len(y), bool) if train == "all rows" else nonref
            pred = nested(feats[:, j], y, g, mask) & nonref
            rep["candidates"].append({"layer": lay, "train": train, **kappas(pred, rows)})
            print(lay, train, round(cohen_kappa_score(y, pred), 3), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()
