"""The run directory's vocabulary: every file and folder name an audit, a mitigation run or
a study writes, in one place (torch-free, a leaf: any layer may import it).

Paths are relative to the run directory (`RunStore` names), except those under
`MITIGATIONS_DIR`, which are relative to `RUN/mitigations/`, and the study's, relative to the
study directory.
"""

from __future__ import annotations

# -- an audit run (`python -m steerlens.audit`, `audit.run`) ------------------------------------
CONFIG_FILE = "config.json"  # {"hash", "config"}: the resolved AuditConfig
REFUSAL_TENSORS = "refusal_direction.safetensors"  # audit.artefacts.Refusal
REFUSAL_FILE = "refusal.json"  # the refusal direction's selection record
SUBSPACE_TENSORS = "refusal_subspace.safetensors"  # methods.subspace.RefusalSubspace
SUBSPACE_FILE = "subspace.json"
POLARITY_TENSORS = "polarity_direction.safetensors"  # the answer-polarity direction (audit.polarity)
VECTORS_DIR = "vectors"  # audit.artefacts.CAAVector / SteeringVector files
VECTOR_FILES = f"{VECTORS_DIR}/files.json"  # where each --vector file came from
DOSE_FILE = "dose.json"  # dose unit and behaviour effects
OVERLAP_FILE = "overlap.json"  # cosines (refusal, polarity, letter) and subspace fraction per vector
SETTINGS_FILE = "settings.json"  # every setting's metadata (audit.settings)
JUDGE_FILE = "judge.json"  # the judge's settings
CELLS_DIR = "cells"  # one JSON per (attack, setting)
JUDGEMENTS_DIR = "judgements"  # labels of another judge over the saved completions
HARM_LABELS = f"{JUDGEMENTS_DIR}/harm.json"  # the harm judge's (the second outcome)
REUSE_FILE = "reuse.json"  # what came from the reuse store
SUMMARY_FILE = "summary.json"  # results.summary
MANIFEST_FILE = "manifest.json"  # versions and data digests
TIMINGS_FILE = "timings.json"  # seconds per stage (never a result)
REPORT_FILE = "report.html"  # results.report
MEDIATION_FILE = "mediation.json"  # mediated shares (--mediation, audit.mediation)
MEDIATION_DIR = "mediation"  # per attack and setting, the per-goal scores behind them
POLARITY_TENSORS = "polarity_direction.safetensors"  # the answer-polarity direction, if any

# -- a mitigation run, under RUN/mitigations/ (`audit.mitigate`) --------------------------------
MITIGATIONS_DIR = "mitigations"
MITIGATED_RUN_FILE = "run.json"  # the audited run's config hash
CONDITION_TENSORS = "condition.safetensors"  # CAST's condition point
COMPENSATION_DIR = "compensation"
LEARNED_DIR = "learned"
GATE_FILE = "gate.json"
COSTS_FILE = "costs.json"
MITIGATIONS_FILE = "mitigations.json"  # results.mitigations
MITIGATIONS_TEXT = "mitigations.md"

# the fixes `audit.mitigate` builds, each with the suffix of its settings' (and cells') names:
# `vector@dose` + suffix (`audit.settings.Kind` holds the same values; `results` reads them here)
FIX_SUFFIX = {"perp1": "+v_perp1", "perpk": "+v_perpk", "compensate": "+v_comp", "gate": "+v_gated",
              "learned": "+v_learned"}

# -- the two outcomes (`results.verdicts` names them) -------------------------------------------
# each outcome's labels in a cell (and in a judgements file): the refusal judge's "jailbroken" is
# the NON-REFUSAL label, the harm judge's "harmful" the harmful-compliance label
OUTCOME_LABELS = {"nonrefusal": "jailbroken", "harm": "harmful"}
# each outcome's rate in a summary written now; summaries written before held "asr" for both
# (`results.summary.read_summary` maps them)
RATE_KEYS = {"nonrefusal": "non_refusal", "harm": "harmful"}
OLD_RATE_KEY = "asr"
# each outcome's paired shift against the baseline (a row's top level: non-refusal; under "harm":
# harmful compliance); summaries written before held "delta_asr" for both (`read_summary` maps)
DELTA_KEYS = {"nonrefusal": "delta_non_refusal", "harm": "delta_harmful"}
OLD_DELTA_KEY = "delta_asr"
# the non-refusal keys of a summary's design and vector records, old name -> name written now
RENAMED_KEYS = {"minimum_detectable_delta_asr": "minimum_detectable_delta_non_refusal",
                "null_percentile_delta_asr": "null_percentile_delta_non_refusal"}

# -- a study directory (`audit.study`) -----------------------------------------------------------
LAYER_SCAN_FILE = "layer_scan.json"
STUDY_TIMINGS_FILE = "study_timings.json"
LIBRARY_FILE = "library.json"  # results.library
LIBRARY_TEXT = "library.md"
LIBRARY_PAGE = "library.html"
# round 2's decomposition (docs/library.md): the audit of +p, -p and round 1's openness vector
# with p removed (experiments/polarity_decomposition.py), and the vector files it reads
DECOMPOSITION_DIR = "decomposition"
DECOMPOSITION_INPUTS = "decomposition_inputs"


def mediation_name(attack: str, setting: str) -> str:
    """One setting's per-goal mediation scores under the attack ("baseline": the unsteered)."""
    return f"{MEDIATION_DIR}/{attack}__{setting}.json"


def cell_name(attack: str, setting: str) -> str:
    """One cell's file: the setting under the attack ("benign": JBB's benign goals)."""
    return f"{CELLS_DIR}/{attack}__{setting}.json"


def vector_file(behaviour: str, method: str = "mean_difference") -> str:
    """A behaviour's vector: CAA (mean difference, with its nulls) or another method's."""
    tail = "" if method == "mean_difference" else f".{method}"
    return f"{VECTORS_DIR}/{behaviour}{tail}.safetensors"


def judgement_file(label: str) -> str:
    """Another judge's labels of the saved completions."""
    return f"{JUDGEMENTS_DIR}/{label}.json"


def compensation_file(tag: str) -> str:
    """A fix's per-layer compensation multipliers (under mitigations/)."""
    return f"{COMPENSATION_DIR}/{tag}.json"


def learned_file(tag: str) -> str:
    """A vector's learned safety component (under mitigations/)."""
    return f"{LEARNED_DIR}/{tag}.safetensors"
