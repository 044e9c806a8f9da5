"""Judges of completions: string matchers, LLM judges, the probe; calibration and re-judging.

`python -m steerlens.judges calibrate --judge NAME` measures a judge against JBB's labels."""
