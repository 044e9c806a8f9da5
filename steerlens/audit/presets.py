"""The audit's presets (sizes of a run, from a 10-minute CPU verdict to the paper's grid) and
the steering layers measured for the embedded models."""

from __future__ import annotations

# The 20 behaviours of the vector library: CAA's seven, Anthropic's twelve other
# advanced-ai-risk sets and one persona set (datasets.behaviours).
LIBRARY_BEHAVIOURS = (
    "coordinate-other-ais", "corrigible-neutral-HHH", "hallucination", "myopic-reward",
    "survival-instinct", "sycophancy", "refusal", "coordinate-itself", "coordinate-other-versions",
    "corrigible-less-HHH", "corrigible-more-HHH", "one-box-tendency", "power-seeking-inclination",
    "self-awareness-general-ai", "self-awareness-good-text-model", "self-awareness-text-model",
    "self-awareness-training-architecture", "self-awareness-web-gpt", "wealth-seeking-inclination",
    "openness")
LIBRARY_METHOD_BEHAVIOURS = ("corrigible-neutral-HHH", "survival-instinct", "power-seeking-inclination")

PRESETS: dict[str, dict] = {
    # A verdict in about 10 minutes on a 2-core CPU. Every preset generates 20 null cells per
    # attack and dose (random + label-shuffled): the fewest with which a vector can be beyond
    # its null at p < 0.05 (1/21), so that a verdict can rest on the outcome itself.
    "quick": dict(behaviours=("corrigible-neutral-HHH",), attacks=("none",), n_goals=30,
                  n_benign=10, n_caa_items=48, n_behaviour_test=24, n_refusal_train=96,
                  n_refusal_val=48, refusal_layer_stride=3, refusal_positions="last",
                  doses=(0.15,), dose_sweep=(-0.15, 0.15), max_new_tokens=64,
                  n_null_screen=32, n_null_generate=14, n_shuffled=6, n_category=0),
    # All 100 JBB goals on the 0.5B in under an hour on 2 cores.
    "standard": dict(behaviours=("corrigible-neutral-HHH", "survival-instinct", "refusal"),
                     attacks=("none", "refusal_suppression"), n_goals=100, n_benign=30,
                     n_caa_items=96, n_behaviour_test=48, n_refusal_train=128,
                     n_refusal_val=64, refusal_layer_stride=2, refusal_positions="last",
                     doses=(0.15,), dose_sweep=(-0.3, -0.15, 0.15, 0.3), max_new_tokens=64,
                     n_null_screen=64, n_null_generate=14, n_shuffled=2, n_category=8),
    # The vector library (issue: "why", claim 3 with the vector as the unit): every behaviour's
    # CAA vector, +v only, at one dose on 50 goals (5 per category; 100 would take ~2.5 h on
    # 2 cores: docs/library.md), with label-shuffled, covariance and
    # prompt-pair nulls generated beside the random ones, and +v screened at three more doses.
    # `python -m steerlens.audit.study` runs it, then "library-methods" on the same model.
    "library": dict(behaviours=LIBRARY_BEHAVIOURS, attacks=("none",), n_goals=50, n_benign=0,
                    n_caa_items=48, n_behaviour_test=16, n_refusal_train=96, n_refusal_val=48,
                    refusal_layer_stride=3, refusal_positions="last", doses=(0.15,),
                    dose_sweep=(-0.15, 0.15), max_new_tokens=64, n_null_screen=32,
                    n_null_generate=8, n_shuffled=1, n_category=0, methods=("mean_difference",),
                    vector_settings=("plus",), screen_doses=(0.05, 0.1, 0.3),
                    n_null_covariance=8, n_null_pairs=8),
    # The other extraction methods on three behaviours (mean_centred is left out: with the
    # pairs' own mean as reference it is CAA / 2, the same vector once dosed).
    "library-methods": dict(behaviours=LIBRARY_METHOD_BEHAVIOURS, attacks=("none",), n_goals=50,
                            n_benign=0, n_caa_items=48, n_behaviour_test=16, n_refusal_train=96,
                            n_refusal_val=48, refusal_layer_stride=3, refusal_positions="last",
                            doses=(0.15,), dose_sweep=(-0.15, 0.15), max_new_tokens=64,
                            n_null_screen=32, n_null_generate=8, n_shuffled=0, n_category=0,
                            methods=("pca_diff", "pca_center", "linear_probe", "actadd"),
                            vector_settings=("plus",), screen_doses=(0.05, 0.1, 0.3),
                            n_null_covariance=8, n_null_pairs=8),
    # The paper's grid, for GPUs.
    "paper": dict(behaviours=("coordinate-other-ais", "corrigible-neutral-HHH", "hallucination",
                              "myopic-reward", "survival-instinct", "sycophancy", "refusal"),
                  attacks=("none", "prefix_injection", "refusal_suppression", "aim",
                           "gptfuzzer-34"),
                  n_goals=100, n_benign=100, n_caa_items=1000, n_behaviour_test=50,
                  n_refusal_train=128, n_refusal_val=32, refusal_layer_stride=1,
                  refusal_positions="all", doses=(0.1, 0.2), dose_sweep=(-0.4, -0.2, -0.1, 0.1,
                                                                         0.2, 0.4),
                  max_new_tokens=128, n_null_screen=256, n_null_generate=16, n_shuffled=2,
                  n_category=16),
}


# Steering layers measured for the embedded models: where their CAA vectors move their own
# behaviour (experiments/caa_layer_scan.py; docs/caa_layer_scan*.json). Used when --layer is not
# given; any other model steers at its refusal direction's layer unless --layer says otherwise.
MEASURED_LAYERS = {"qwen2.5-coder-0.5b-instruct": 14, "qwen2.5-coder-1.5b-instruct": 18}
