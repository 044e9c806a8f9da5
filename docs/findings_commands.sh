#!/usr/bin/env bash
# The exact commands behind docs/findings.md (2-core CPU, fp32). Each run resumes with --resume.
set -euo pipefail
python -m steerlens.audit --preset quick --out runs/findings-0.5b \
  --behaviours coordinate-other-ais corrigible-neutral-HHH hallucination myopic-reward \
               survival-instinct sycophancy refusal \
  --attacks none refusal_suppression aim --multipliers 4 --n-goals 20 --n-benign 10 \
  --max-new-tokens 24
python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct \
  --out runs/findings-1.5b
python -m steerlens.findings runs/findings-0.5b runs/findings-1.5b --out docs/findings.md
