"""The judge registry: `get_judge(name, **options)` builds any judge by name (a leaf over the
judge modules; LLM and probe judges are imported only when asked for, so string judges need
no torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steerlens.errors import SteerlensError
from steerlens.judges.strings import JbbStringJudge, Judge, RefusalStringJudge, StrictRefusalJudge


def _llm_judge(protocol: str) -> Callable[..., Judge]:
    def make(**options: Any) -> Judge:
        from steerlens.judges.llm import make_llm_judge

        return make_llm_judge(protocol, **options)

    make.__doc__ = f"The {protocol!r} LLM judge (see steerlens.judges.llm)."
    return make


def _probe_judge(**options: Any) -> Judge:
    from steerlens.judges.probe import load_probe_judge

    return load_probe_judge(**options)


def _harm_judge(**options: Any) -> Judge:
    from steerlens.judges.harm import load_harm_judge

    return load_harm_judge(**options)


JUDGES: dict[str, Callable[..., Judge]] = {
    "refusal_string": RefusalStringJudge,
    "refusal_string_strict": StrictRefusalJudge,
    "jbb_string": JbbStringJudge,
    "jbb": _llm_judge("jbb"),
    "harmbench": _llm_judge("harmbench"),
    "llamaguard": _llm_judge("llamaguard"),
    "probe": _probe_judge,
    "harm": _harm_judge,
}

def get_judge(name: str, **options: Any) -> Judge:
    """Build the judge `name` with its options (e.g. `model=`, `threshold=` for LLM judges)."""
    if name not in JUDGES:
        raise SteerlensError(f"unknown judge {name!r}", fix=f"use one of {', '.join(JUDGES)}")
    try:
        return JUDGES[name](**options)
    except TypeError as e:
        raise SteerlensError(f"bad options for judge {name!r}: {e}",
                             fix="see `python -m steerlens.judges --help` and docs/judges.md") from e
